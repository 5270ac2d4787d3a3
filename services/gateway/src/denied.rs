//! Calls the gateway denied for lack of a role go to the partner's activity
//! log ("who tried what, and why"). The gateway keeps no storage, so this is
//! best effort: a bounded queue, batches, a few retries with backoff; what
//! still fails is logged as lost. Unauthenticated calls name no partner and
//! are only logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use csp_kit::clock::{Clock as _, SystemClock, to_timestamp};
use csp_kit::identity::{IdentityKey, UserCaller};
use csp_kit::shutdown::Shutdown;
use csp_kit::upstream::signed_channel;
use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;
use csp_proto::audit::v1::{Activity, ActivityRecord, ActivityType, RecordActivitiesRequest};
use tokio::sync::mpsc;

const QUEUE: usize = 10_000;
const BATCH: usize = 100;
const ATTEMPTS: u32 = 6;

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
        let id = uuid::Uuid::new_v4().to_string();
        let record = ActivityRecord {
            partner_id: user.partner_id.to_string(),
            activity: Some(Activity {
                id,
                r#type: ActivityType::CallDenied as i32,
                occur_time: Some(to_timestamp(SystemClock.now())),
                user_id: user.user_id.clone(),
                user_display_name: user.display_name.clone(),
                details: HashMap::from([
                    ("method".to_owned(), method.to_owned()),
                    ("reason".to_owned(), reason.to_owned()),
                    ("roles".to_owned(), user.roles.names().join(",")),
                ]),
                ..Default::default()
            }),
        };
        if self.tx.try_send(record).is_err() {
            tracing::warn!(
                method,
                "denied-call queue full; this denial is only in the gateway's log"
            );
        }
    }
}

async fn deliver(
    client: AuditIntakeServiceClient<csp_kit::upstream::Signed>,
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
        let mut delay = Duration::from_millis(200);
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
                    tokio::time::sleep(delay).await;
                    delay *= 2;
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
