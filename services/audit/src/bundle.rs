//! The offline verifier: checks a proof bundle (a JSON lines export with
//! `include_proofs`) with the log's public key alone, and optionally a
//! checkpoint the auditor kept from before. No database, no secret: what
//! `csp verify-log` runs.
//!
//! It names what is wrong: a record whose content is not what was logged
//! (edited), one found at another place than it was logged at (reordered),
//! a leaf index missing from a complete export (deleted), a record that is
//! not in the signed tree (inserted), a tree that does not give the signed
//! root (rewritten), and a kept checkpoint the bundle's does not extend
//! (forked or rewritten history).

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use csp_kit::clock::to_rfc3339;
use tlog_tiles::Hash;

use crate::domain::{Findings, Mismatch, name_mismatches};
use crate::log::{self, RootBuilder};

/// What the verifier found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The bundle's checkpoint size.
    pub tree_size: u64,
    /// Records checked.
    pub checked: u64,
    /// One line per problem, naming it.
    pub problems: Vec<String>,
    /// Whether the bundle says it holds every record of the tree, so that
    /// deleted records can be found (the flag is not signed: an auditor who
    /// asked for the whole log insists on it).
    pub complete: bool,
    /// The log the bundle is of (its checkpoint's origin).
    pub origin: String,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why a bundle cannot be checked at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// The first line is not a bundle header.
    #[error(
        "line 1 is not a bundle header with a checkpoint (export with include_proofs and the JSON lines format)"
    )]
    NoHeader,
    /// The bundle's checkpoint is not signed by the key.
    #[error("the bundle's checkpoint: {0}")]
    Checkpoint(log::CheckpointError),
    /// The kept checkpoint is not signed by the key.
    #[error("the previous checkpoint: {0}")]
    Previous(log::CheckpointError),
    /// A line does not parse.
    #[error("line {0} is not a bundle record: {1}")]
    Line(usize, String),
}

struct Line {
    id: String,
    index: u64,
    entry: Vec<u8>,
    tree_leaf: Hash,
    proof: Vec<Hash>,
    shown: serde_json::Value,
}

fn hash(text: &str) -> Option<Hash> {
    log::from_bytes(&BASE64.decode(text).ok()?)
}

fn parse_line(value: serde_json::Value) -> Result<Line, String> {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("no {key}"))
    };
    let index = value
        .get("leaf_index")
        .and_then(|v| v.as_u64())
        .ok_or("no leaf_index")?;
    let entry = BASE64
        .decode(text("entry")?)
        .map_err(|_| "entry is not base64".to_owned())?;
    let tree_leaf = hash(&text("tree_leaf")?).ok_or("tree_leaf is not a hash")?;
    let proof = value
        .get("inclusion_proof")
        .and_then(|v| v.as_array())
        .ok_or("no inclusion_proof")?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(hash)
                .ok_or("a proof hash is not a hash")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Line {
        id: text("id")?,
        index,
        entry,
        tree_leaf,
        proof,
        shown: value,
    })
}

/// Whether the fields a line shows are the ones its entry encodes.
fn shows_its_entry(line: &Line) -> bool {
    let Some(f) = log::decode_entry(&line.entry) else {
        return false;
    };
    let shown = |key: &str| line.shown.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let occur = f[3].parse::<i64>().map(to_rfc3339).unwrap_or_default();
    let details: serde_json::Value = serde_json::from_str(&f[10]).unwrap_or_default();
    f[1] == shown("id")
        && f[2] == shown("type")
        && occur == shown("occur_time")
        && f[5] == shown("user_id")
        && f[6] == shown("user_display_name")
        && f[7] == shown("customer_tenant_id")
        && f[8] == shown("subscription_id")
        && f[9] == shown("product_id")
        && line.shown.get("details") == Some(&details)
}

/// Checks `bundle` (JSON lines) with the verifier key `vkey`, and that it
/// extends `previous` (a signed checkpoint note kept from before).
pub fn verify(bundle: &str, vkey: &str, previous: Option<&str>) -> Result<Report, BundleError> {
    let mut lines = bundle
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or(BundleError::NoHeader)?;
    let header: serde_json::Value =
        serde_json::from_str(first).map_err(|_| BundleError::NoHeader)?;
    let note = header
        .get("checkpoint")
        .and_then(|v| v.as_str())
        .ok_or(BundleError::NoHeader)?;
    let head = log::open(note, vkey).map_err(BundleError::Checkpoint)?;
    let complete = header
        .get("complete")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let mut report = Report {
        tree_size: head.size,
        complete,
        origin: head.origin.clone(),
        ..Report::default()
    };
    // The partner whose log it is: the origin's last part.
    let partner = head
        .origin
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();

    let mut records = Vec::new();
    for (n, text) in lines {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BundleError::Line(n + 1, e.to_string()))?;
        records.push(parse_line(value).map_err(|why| BundleError::Line(n + 1, why))?);
    }

    // The tree's leaves the bundle shows, by index, each proven against
    // the signed root.
    let mut tree: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut rewritten = false;
    for line in &records {
        report.checked += 1;
        if line.index >= head.size {
            report.problems.push(format!(
                "inserted: record {} claims leaf {} of a signed tree of {} leaves",
                line.id, line.index, head.size
            ));
            continue;
        }
        if !shows_its_entry(line) {
            report.problems.push(format!(
                "record {} shows other fields than its entry holds",
                line.id
            ));
        }
        let entry_partner = log::decode_entry(&line.entry).map(|f| f[0].clone());
        if entry_partner.as_deref() != Some(partner.as_str()) {
            report.problems.push(format!(
                "record {} is not of the log {}",
                line.id, head.origin
            ));
        }
        if line.shown.get("sequence").and_then(|v| v.as_u64()) != Some(line.index + 1) {
            report.problems.push(format!(
                "record {} shows another sequence number than its leaf {} gives",
                line.id, line.index
            ));
        }
        if tree.contains_key(&line.index) {
            report.problems.push(format!(
                "leaf {} appears twice in the bundle (record {})",
                line.index, line.id
            ));
            continue;
        }
        if tlog_tiles::check_record(
            &line.proof,
            head.size,
            head.root,
            line.index,
            line.tree_leaf,
        )
        .is_err()
        {
            rewritten = true;
            report.problems.push(format!(
                "history rewritten: leaf {} (record {}) is not in the signed tree",
                line.index, line.id
            ));
            continue;
        }
        tree.insert(line.index, line.tree_leaf);
    }
    // The same naming as the server's check (`domain::name_mismatches`).
    let at: HashMap<[u8; 32], u64> = tree.iter().map(|(i, h)| (h.0, *i)).collect();
    let mismatched: Vec<Mismatch> = records
        .iter()
        .filter(|l| tree.contains_key(&l.index))
        .filter_map(|line| {
            let leaf = tlog_tiles::record_hash(&line.entry);
            (tree.get(&line.index) != Some(&leaf)).then(|| Mismatch {
                id: line.id.clone(),
                index: line.index,
                leaf: leaf.0,
            })
        })
        .collect();
    let mut named = Findings::default();
    name_mismatches(mismatched, |leaf| at.get(leaf).copied(), &mut named);
    for (id, index, logged) in named.reordered {
        report.problems.push(format!(
            "reordered: record {id} is at leaf {index} but was logged at leaf {logged}"
        ));
    }
    for (id, index) in named.edited {
        report.problems.push(format!(
            "edited: record {id} at leaf {index} is not what was logged there"
        ));
    }
    if complete {
        let missing: Vec<u64> = (0..head.size).filter(|i| !tree.contains_key(i)).collect();
        if !missing.is_empty() && !rewritten {
            let shown: Vec<String> = missing.iter().take(20).map(u64::to_string).collect();
            report.problems.push(format!(
                "deleted: {} records are missing (leaves {}{})",
                missing.len(),
                shown.join(", "),
                if missing.len() > 20 { ", ..." } else { "" }
            ));
        }
    }

    if let Some(previous) = previous {
        let old = log::open(previous, vkey).map_err(BundleError::Previous)?;
        if old.origin != head.origin {
            report.problems.push(format!(
                "the previous checkpoint is of another log ({}), not {}",
                old.origin, head.origin
            ));
        } else if old.size > head.size {
            report.problems.push(format!(
                "history rewritten: the log had {} leaves and now signs {}",
                old.size, head.size
            ));
        } else if old.size == head.size {
            if old.root != head.root {
                report.problems.push(format!(
                    "forked: two different signed checkpoints of size {}",
                    head.size
                ));
            }
        } else {
            let proof = header
                .get("consistency")
                .filter(|c| c.get("from_size").and_then(|v| v.as_u64()) == Some(old.size))
                .and_then(|c| c.get("proof"))
                .and_then(|p| p.as_array())
                .map(|p| {
                    p.iter()
                        .filter_map(|h| h.as_str().and_then(hash))
                        .collect::<Vec<_>>()
                });
            let extends = match proof {
                Some(proof) => {
                    tlog_tiles::check_tree(&proof, head.size, head.root, old.size, old.root).is_ok()
                }
                None if complete && tree.len() as u64 == head.size => {
                    let mut builder = RootBuilder::default();
                    for leaf in tree.values().take(old.size as usize) {
                        builder.push(*leaf);
                    }
                    builder.root() == old.root
                }
                None => {
                    report.problems.push(format!(
                        "cannot check the previous checkpoint: export with previous_size = {}",
                        old.size
                    ));
                    true
                }
            };
            if !extends {
                report.problems.push(format!(
                    "history rewritten: the signed tree of {} leaves does not extend the kept one of {}",
                    head.size, old.size
                ));
            }
        }
    }
    Ok(report)
}
