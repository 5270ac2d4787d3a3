//! Signed checkpoints kept outside the database: an append-only file of JSON
//! lines (fsynced), and a log line for each, so a witness can keep them and
//! a database rewritten together with its checkpoints is still caught.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use csp_kit::ids::PartnerId;

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FiledCheckpoint {
    /// The partner whose log it is.
    pub partner_id: PartnerId,
    /// The tree size.
    pub size: u64,
    /// The signed note (C2SP tlog-checkpoint).
    pub note: String,
}

/// The outside record of checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// Checkpoints go to `path` (created with its directory when missing).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends checkpoints and waits until they are on disk; also logs them.
    pub fn append(&self, checkpoints: &[FiledCheckpoint]) -> anyhow::Result<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut lines = String::new();
        for c in checkpoints {
            tracing::info!(
                partner_id = %c.partner_id,
                size = c.size,
                note = %c.note,
                "audit checkpoint"
            );
            lines.push_str(&serde_json::to_string(c)?);
            lines.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open the checkpoint file {}", self.path.display()))?;
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        Ok(())
    }

    /// The checkpoints of one partner in the file (none when it does not
    /// exist yet). Lines that do not parse (such as the HMAC checkpoints of
    /// the hash chain before the tree) are skipped: verification decides
    /// what the rest proves.
    pub fn read(&self, partner_id: PartnerId) -> anyhow::Result<Vec<FiledCheckpoint>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<FiledCheckpoint>(line).ok())
            .filter(|c| c.partner_id == partner_id)
            .collect())
    }
}
