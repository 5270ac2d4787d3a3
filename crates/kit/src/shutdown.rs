//! A cloneable shutdown signal. The process-wide one fires on SIGTERM or
//! SIGINT; a second signal exits at once. Tests fire their own.

use tokio::sync::watch;

/// Fires once; every clone sees it.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A signal that fires on SIGTERM or SIGINT. A second signal ends the
    /// process at once with status 130.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining in-flight calls");
            trigger.fire();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal, exiting now");
            std::process::exit(130);
        });
        shutdown
    }

    /// Resolves once the signal has fired.
    pub async fn wait(mut self) {
        // An error means every trigger is gone: nobody can fire any more, so
        // treat it as fired rather than wait forever.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }

    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
