//! Test logging: every log line of the test process is captured in memory
//! (so a test can check that no secret was ever logged), and also printed to
//! stderr when `TEST_LOG` is set.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Everything logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        Capture
    }
}

/// Installs the test subscriber once per process: everything at DEBUG (csp
/// crates at TRACE) into memory, and to stderr with `TEST_LOG`.
pub fn init() {
    INSTALLED.get_or_init(|| {
        let capture = tracing_subscriber::fmt::layer()
            .with_writer(Capture)
            .with_ansi(false)
            .with_filter(EnvFilter::new(
                "debug,csp_kit=trace,csp_catalog=trace,csp_ordering=trace,csp_licensing=trace,csp_gateway=trace",
            ));
        let stderr = std::env::var_os("TEST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        });
        let _ = tracing_subscriber::registry().with(capture).with(stderr).try_init();
    });
}
