//! Calls the gateway denied for lack of a role go to the partner's activity
//! log ("who tried what, and why"). The gateway keeps no storage, so this is
//! best effort: a bounded queue, batches, a few retries with backoff; what
//! still fails is logged as lost. Unauthenticated calls name no partner and
//! are only logged.

use std::sync::Arc;
use std::time::Duration;

use csp_kit::activity::Activity;
use csp_kit::backoff::Backoff;
use csp_kit::clock::{Clock as _, SystemClock};
use csp_kit::identity::{IdentityKey, UserCaller};
use csp_kit::peer::signed_channel;
use csp_kit::shutdown::Shutdown;
use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;
use csp_proto::audit::v1::{ActivityRecord, ActivityType, RecordActivitiesRequest};
use tokio::sync::mpsc;

const QUEUE: usize = 10_000;
const BATCH: usize = 100;
const ATTEMPTS: i32 = 6;
/// How a batch is retried while audit does not take it.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// Reports denied calls to audit.
#[derive(Clone, Debug)]
pub struct DeniedCalls {
    tx: mpsc::Sender<ActivityRecord>,
}

impl DeniedCalls {
    /// Starts the reporter; it drains its queue until `shutdown` fires.
    pub fn start(
        audit_url: &str,
        key: &Arc<IdentityKey>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let client = AuditIntakeServiceClient::new(signed_channel(audit_url, key, "gateway")?);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(client, rx, shutdown));
        Ok(Self { tx })
    }

    /// Queues a denied call.
    pub fn report(&self, user: &UserCaller, method: &str, reason: &str) {
        let record = Activity::new(user.partner_id, ActivityType::CallDenied, SystemClock.now())
            .by_user(user)
            .detail("method", method)
            .detail("reason", reason)
            .detail("roles", user.roles.names().join(","))
            .record();
        if self.tx.try_send(record).is_err() {
            tracing::warn!(
                method,
                "denied-call queue full; this denial is only in the gateway's log"
            );
        }
    }
}

async fn deliver(
    client: AuditIntakeServiceClient<csp_kit::peer::Signed>,
    mut rx: mpsc::Receiver<ActivityRecord>,
    shutdown: Shutdown,
) {
    loop {
        let first = tokio::select! {
            record = rx.recv() => record,
            _ = shutdown.clone().wait() => None,
        };
        let Some(first) = first else { return };
        let mut records = vec![first];
        while records.len() < BATCH {
            match rx.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            match client
                .clone()
                .record_activities(RecordActivitiesRequest {
                    records: records.clone(),
                })
                .await
            {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(status) if attempt < ATTEMPTS => {
                    tracing::debug!(code = ?status.code(), attempt, "audit unavailable for denied calls; retrying");
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                }
                Err(_) => {}
            }
        }
        if !sent {
            tracing::warn!(
                lost = records.len(),
                "audit unreachable: denied-call activities lost (they are in this log)"
            );
        }
    }
}
