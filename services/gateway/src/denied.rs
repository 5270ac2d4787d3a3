//! Calls the gateway denied for lack of a role go to the partner's activity
//! log ("who tried what, and why"). The first denial of a user on a method
//! is recorded at once; the ones that follow within a minute are counted and
//! become one record with the count when the minute is over, so a user (or
//! a script) hammering a method cannot flood the log. The gateway keeps no
//! storage, so this is best effort: a bounded queue, batches, a few retries
//! with backoff; what still fails is logged as lost. Unauthenticated calls
//! name no partner and are only logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csp_kit::activity::Activity;
use csp_kit::backoff::Backoff;
use csp_kit::clock::{Clock as _, SystemClock, to_rfc3339};
use csp_kit::identity::{Signer, UserCaller};
use csp_kit::ids::PartnerId;
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

/// Denials of one user on one method within this long make one record.
const WINDOW: Duration = Duration::from_secs(60);
/// Users and methods followed at once at most; beyond, denials are only
/// logged (the map cannot grow without bound).
const MAX_FOLLOWED: usize = 10_000;

/// Reports denied calls to audit.
#[derive(Clone, Debug)]
pub struct DeniedCalls {
    tx: mpsc::Sender<ActivityRecord>,
    repeats: Arc<Mutex<Repeats>>,
}

/// Whose denials on which method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    partner: PartnerId,
    user_id: String,
    method: String,
}

/// A user's denials on a method in the current window.
#[derive(Clone, Debug)]
struct Window {
    opened: Instant,
    opened_at: csp_kit::clock::Micros,
    display_name: String,
    roles: String,
    reason: String,
    repeats: u64,
}

/// What to do with a denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// The first in its window: record it now.
    Record,
    /// A repeat: counted for the window's record.
    Counted,
    /// Too many users and methods followed: only log it.
    Dropped,
}

/// Repeated denials, counted per user and method and window.
#[derive(Debug, Default)]
struct Repeats {
    windows: HashMap<Key, Window>,
}

impl Repeats {
    fn admit(&mut self, key: Key, window: Window, now: Instant) -> Decision {
        if let Some(open) = self.windows.get_mut(&key)
            && now.duration_since(open.opened) < WINDOW
        {
            open.repeats += 1;
            open.reason = window.reason;
            return Decision::Counted;
        }
        if self.windows.len() >= MAX_FOLLOWED && !self.windows.contains_key(&key) {
            return Decision::Dropped;
        }
        self.windows.insert(key, window);
        Decision::Record
    }

    /// Closes the windows older than [`WINDOW`] at `now`; the ones with
    /// repeats come back to be recorded.
    fn close(&mut self, now: Instant) -> Vec<(Key, Window)> {
        let (closed, open): (HashMap<Key, Window>, HashMap<Key, Window>) = self
            .windows
            .drain()
            .partition(|(_, w)| now.duration_since(w.opened) >= WINDOW);
        self.windows = open;
        closed.into_iter().filter(|(_, w)| w.repeats > 0).collect()
    }
}

impl DeniedCalls {
    /// Starts the reporter; it drains its queue until `shutdown` fires.
    pub fn start(
        audit_url: &str,
        signer: &Arc<Signer>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let client = AuditIntakeServiceClient::new(signed_channel(audit_url, signer)?);
        let (tx, rx) = mpsc::channel(QUEUE);
        let repeats = Arc::new(Mutex::new(Repeats::default()));
        tokio::spawn(deliver(client, rx, shutdown.clone()));
        tokio::spawn(close_windows(repeats.clone(), tx.clone(), shutdown));
        Ok(Self { tx, repeats })
    }

    /// Records a denied call: the first of its user and method in a minute at
    /// once, the rest counted into one record when the minute is over.
    pub fn report(&self, user: &UserCaller, method: &str, reason: &str) {
        let key = Key {
            partner: user.partner_id,
            user_id: user.user_id.clone(),
            method: method.to_owned(),
        };
        let window = Window {
            opened: Instant::now(),
            opened_at: SystemClock.now(),
            display_name: user.display_name.clone(),
            roles: user.roles.names().join(","),
            reason: reason.to_owned(),
            repeats: 0,
        };
        let decision = self
            .repeats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .admit(key.clone(), window.clone(), Instant::now());
        match decision {
            Decision::Record => self.send(record(&key, &window, 1)),
            Decision::Counted => {}
            Decision::Dropped => tracing::warn!(
                method,
                "too many users denied at once; this denial is only in the gateway's log"
            ),
        }
    }

    fn send(&self, record: ActivityRecord) {
        send(&self.tx, record);
    }
}

fn send(tx: &mpsc::Sender<ActivityRecord>, record: ActivityRecord) {
    if tx.try_send(record).is_err() {
        tracing::warn!("denied-call queue full; this denial is only in the gateway's log");
    }
}

/// The record of `count` denials of a window (1 for the first; the
/// repeats when the window closes, with when it opened).
fn record(key: &Key, window: &Window, count: u64) -> ActivityRecord {
    let mut activity = Activity::new(key.partner, ActivityType::CallDenied, SystemClock.now())
        .by(&key.user_id, &window.display_name)
        .detail("method", &key.method)
        .detail("reason", &window.reason)
        .detail("roles", &window.roles);
    if count > 1 || window.repeats > 0 {
        activity = activity
            .detail("count", count)
            .detail("since", to_rfc3339(window.opened_at));
    }
    activity.record()
}

/// Every few seconds, turns the repeats of closed windows into one record
/// each.
async fn close_windows(
    repeats: Arc<Mutex<Repeats>>,
    tx: mpsc::Sender<ActivityRecord>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.clone().wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let closed = repeats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .close(Instant::now());
        for (key, window) in closed {
            send(&tx, record(&key, &window, window.repeats));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, method: &str) -> Key {
        Key {
            partner: PartnerId::from_uuid(uuid::Uuid::from_u128(1)),
            user_id: user.to_owned(),
            method: method.to_owned(),
        }
    }

    fn window(at: Instant) -> Window {
        Window {
            opened: at,
            opened_at: 0,
            display_name: "Ada".to_owned(),
            roles: "sales_agent".to_owned(),
            reason: "needs admin_agent".to_owned(),
            repeats: 0,
        }
    }

    #[test]
    fn one_record_at_once_and_one_with_the_count_per_user_method_and_minute() {
        let start = Instant::now();
        let mut repeats = Repeats::default();
        let a = key("ada", "/csp.licensing.v1.LicensingService/ListSoftware");
        assert_eq!(
            repeats.admit(a.clone(), window(start), start),
            Decision::Record
        );
        for i in 1..100u64 {
            let at = start + Duration::from_millis(i * 100);
            assert_eq!(repeats.admit(a.clone(), window(at), at), Decision::Counted);
        }
        // Another method and another user have windows of their own.
        let b = key("ada", "/csp.audit.v1.AuditService/ListActivity");
        let c = key("bob", "/csp.licensing.v1.LicensingService/ListSoftware");
        assert_eq!(
            repeats.admit(b.clone(), window(start), start),
            Decision::Record
        );
        assert_eq!(repeats.admit(c, window(start), start), Decision::Record);
        assert!(repeats.close(start + Duration::from_secs(59)).is_empty());
        let closed = repeats.close(start + WINDOW);
        assert_eq!(closed.len(), 1, "only the window with repeats: {closed:?}");
        assert_eq!(closed[0].0, a);
        assert_eq!(closed[0].1.repeats, 99);
        // After the minute, the next denial is recorded at once again.
        let later = start + WINDOW + Duration::from_secs(1);
        assert_eq!(repeats.admit(a, window(later), later), Decision::Record);
        let record = record(&b, &window(start), 1);
        let details = record.activity.unwrap().details;
        assert!(
            !details.contains_key("count"),
            "a single denial has no count"
        );
    }

    #[test]
    fn the_users_followed_are_bounded() {
        let start = Instant::now();
        let mut repeats = Repeats::default();
        for i in 0..MAX_FOLLOWED {
            let k = key(&format!("user-{i}"), "/m");
            assert_eq!(repeats.admit(k, window(start), start), Decision::Record);
        }
        assert_eq!(
            repeats.admit(key("one-more", "/m"), window(start), start),
            Decision::Dropped
        );
    }
}
