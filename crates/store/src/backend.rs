//! The one start-up of a backend service, the same in all five: serve health
//! (NOT_SERVING) and reflection at once, open and migrate the database,
//! report it in the metrics, start the background tasks (the outbox relay,
//! a workflow), install the service's gRPC services and turn SERVING while
//! the database answers, and at shutdown wait for the tasks and close the
//! database.

use std::future::Future;
use std::sync::Arc;

use csp_kit::config::BackendArgs;
use csp_kit::identity::Identity;
use csp_kit::metrics::{self, DatabaseGauges, DatabaseWatch, PoolGauges};
use csp_kit::peer::{Signed, signed_channel};
use csp_kit::server::{self, Starting};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::Routes;

use crate::db::{Db, Migrations};
use crate::outbox::{Destination, Relay, RelaySettings};

/// Whether a service's database holds the outbox tables (services that send
/// events), so its backlog is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbox {
    /// It does: its backlog and dead letters are reported.
    Present,
    /// It does not: only its pool is reported.
    Absent,
}

/// What a backend service is to its start-up: its name (in logs, data files,
/// database names and identities), its migrations, and whether it sends
/// events (so its outbox is reported).
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The service.
    pub service: ServiceName,
    /// Its database's migrations.
    pub migrations: &'static Migrations,
    /// Whether its database holds an outbox.
    pub outbox: Outbox,
}

/// A backend that is starting: serving health and reflection, with its
/// database open and migrated.
pub struct Backend {
    starting: Starting,
    db: Db,
    identity: Identity,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What else must answer for the service to be ready (an object store).
    also: Vec<server::Probe>,
    _metrics: DatabaseWatch,
}

impl Backend {
    /// Starts serving health (NOT_SERVING) and reflection on `listener`,
    /// opens the database (the configured URL, or `DATA_DIR/NAME.db`) and
    /// applies the spec's migrations.
    pub async fn start(
        spec: &Spec,
        args: &BackendArgs,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let Spec {
            service,
            migrations,
            outbox,
        } = *spec;
        let name = service.as_str();
        let identity = args.identity.resolve(service)?;
        let starting =
            server::start_backend(name, listener, &identity.verifier, shutdown.clone()).await?;
        let db = open_database(name, args, migrations).await?;
        let gauges = Arc::new(Gauges {
            db: db.clone(),
            outbox,
        });
        Ok(Self {
            starting,
            db,
            identity,
            shutdown,
            tasks: Vec::new(),
            also: Vec::new(),
            _metrics: metrics::watch_database(name, gauges),
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// A lazily connected channel to a peer at `url`, signing calls as this
    /// service.
    pub fn channel(&self, url: &str) -> anyhow::Result<Signed> {
        signed_channel(url, &self.identity.signer)
    }

    /// Starts the outbox relay to `destinations`; notify the returned waker
    /// after committing messages to send them at once.
    pub fn relay(&mut self, destinations: Vec<Arc<dyn Destination>>) -> Arc<Notify> {
        let relay = Relay::new(
            self.db.clone(),
            destinations,
            csp_kit::clock::system(),
            RelaySettings::default(),
        );
        let waker = relay.waker();
        self.spawn(relay.run(self.shutdown.clone()));
        waker
    }

    /// Runs a background task that stops on the shutdown signal; shutdown
    /// waits for it before closing the database.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Makes readiness depend on `probe` too: the service is NOT_SERVING
    /// while it answers false (an object store it cannot work without).
    pub fn also_ready_when(&mut self, probe: server::Probe) {
        self.also.push(probe);
    }

    /// Installs the service's gRPC services, serves until the shutdown
    /// signal (NOT_SERVING while the database, or anything added with
    /// [`Backend::also_ready_when`], does not answer), then waits
    /// for the background tasks and closes the database.
    pub async fn serve(self, add_services: impl FnOnce(Routes) -> Routes) -> anyhow::Result<()> {
        let served = self
            .starting
            .ready_watching(
                all_of(probe(&self.db), self.also),
                server::DATABASE_CHECK,
                add_services,
            )
            .await;
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a background task failed");
            }
        }
        self.db.close().await;
        served
    }
}

/// Whether `db` answers, for the health watch of [`Starting::ready_watching`].
pub fn probe(db: &Db) -> server::Probe {
    let db = db.clone();
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.is_ok() })
    })
}

/// A probe that answers true when `first` and every one of `rest` do.
fn all_of(first: server::Probe, rest: Vec<server::Probe>) -> server::Probe {
    if rest.is_empty() {
        return first;
    }
    let rest = Arc::new(rest);
    Arc::new(move || {
        let (first, rest) = (first.clone(), rest.clone());
        Box::pin(async move {
            if !first().await {
                return false;
            }
            for probe in rest.iter() {
                if !probe().await {
                    return false;
                }
            }
            true
        })
    })
}

/// Opens a backend's database (the configured URL, or its SQLite file in the
/// data directory) and applies its migrations (`csp migrate` does only this).
pub async fn open_database(
    service: &str,
    args: &BackendArgs,
    migrations: &Migrations,
) -> anyhow::Result<Db> {
    let db = Db::connect(&args.database_url_for(service)).await?;
    db.migrate(migrations).await?;
    tracing::info!(service, backend = db.backend_name(), "database ready");
    Ok(db)
}

/// What a service's database reports on every scrape.
struct Gauges {
    db: Db,
    outbox: Outbox,
}

#[tonic::async_trait]
impl DatabaseGauges for Gauges {
    fn pool(&self) -> PoolGauges {
        let stats = self.db.pool_stats();
        PoolGauges {
            size: stats.size,
            idle: stats.idle,
            max: stats.max,
        }
    }

    async fn outbox(&self) -> Option<(Vec<(String, i64)>, Vec<(String, i64)>)> {
        if self.outbox == Outbox::Absent {
            return None;
        }
        let backlog = crate::outbox::backlog(&self.db).await.ok()?;
        let dead = crate::outbox::dead_letter_counts(&self.db)
            .await
            .unwrap_or_default();
        Some((backlog, dead))
    }
}
