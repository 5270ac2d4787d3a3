//! The gateway's health follows its backends: each public service name
//! (`csp.catalog.v1.CatalogService`, ...) reports whether its backend
//! answers SERVING, and the overall status is SERVING only when every
//! backend does. So a client (or `csp up`, before its banner) that waits on
//! the gateway's health check never calls a backend that is still starting.
//! The health service `liveness` stays SERVING while the process runs, and
//! [`ROUTING`] (`gateway`) is SERVING while the gateway itself can take
//! calls, from start to shutdown, whatever its backends: what a Kubernetes
//! readiness probe asks, so one backend down takes its calls away, not the
//! whole API.

use std::time::Duration;

use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Answer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use crate::balance::ReplicaChannel;

/// How often backends are asked while one of them is not serving.
const STARTING: Duration = Duration::from_millis(200);
/// How often backends are asked while all serve.
const SERVING: Duration = Duration::from_secs(2);
/// How long one health check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

/// The health service name that is SERVING while the gateway routes calls
/// (NOT_SERVING from shutdown on).
pub const ROUTING: &str = "gateway";

/// A backend, and the public services it serves.
pub struct Backend {
    /// Its name, for logs.
    pub name: &'static str,
    /// The public services it serves (full names).
    pub services: Vec<String>,
    /// Its replicas.
    pub channel: ReplicaChannel,
}

/// Keeps the gateway's health in step with its backends until `shutdown`.
pub async fn watch(reporter: HealthReporter, backends: Vec<Backend>, shutdown: Shutdown) {
    reporter
        .set_service_status(ROUTING, ServingStatus::Serving)
        .await;
    tokio::spawn(stop_routing(reporter.clone(), shutdown.clone()));
    let mut was_serving = false;
    loop {
        let mut all = true;
        for backend in &backends {
            let serving = answers_serving(backend.channel.clone()).await;
            all &= serving;
            if shutdown.is_fired() {
                return;
            }
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in &backend.services {
                reporter.set_service_status(service, status).await;
            }
            if !serving && was_serving {
                tracing::warn!(
                    backend = backend.name,
                    "a backend is not serving; the gateway reports NOT_SERVING"
                );
            }
        }
        if shutdown.is_fired() {
            return;
        }
        server::set_serving(&reporter, all).await;
        if all && !was_serving {
            tracing::info!("every backend serves; the gateway reports SERVING");
        }
        was_serving = all;
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(if all { SERVING } else { STARTING }) => {}
        }
    }
}

/// Turns [`ROUTING`] NOT_SERVING when the shutdown signal fires.
async fn stop_routing(reporter: HealthReporter, shutdown: Shutdown) {
    shutdown.wait().await;
    reporter
        .set_service_status(ROUTING, ServingStatus::NotServing)
        .await;
}

/// Whether the backend answers its overall health check SERVING.
async fn answers_serving(channel: ReplicaChannel) -> bool {
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(CHECK_LIMIT, check).await {
        Ok(Ok(answer)) => answer.into_inner().status == Answer::Serving as i32,
        _ => false,
    }
}
