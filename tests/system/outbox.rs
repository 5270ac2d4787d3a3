//! The transactional outbox and its relay, on the test database: delivery
//! after the receiver was down, order per stream, dead letters that hold back
//! only their stream and can be replayed, nothing lost across a restart, and
//! two relays on one database delivering each message once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csp_kit::clock;
use csp_kit::shutdown::Shutdown;
use csp_store::db::{Db, Migrations};
use csp_store::outbox::{self, Destination, Envelope, Message, Outcome, Relay, RelaySettings};

const MIGRATIONS: Migrations = Migrations {
    sqlite: &[outbox::sqlite_migration(1)],
    postgres: &[outbox::postgres_migration(1)],
};

#[derive(Default)]
struct State {
    up: bool,
    reject: HashSet<String>,
    delivered: Vec<(String, String)>, // (stream, event id), in delivery order
    deliveries: HashMap<String, usize>,
    batches: Vec<Vec<String>>, // event ids of each accepted batch
}

/// A receiver that can be down, rejects chosen events, and records the rest.
struct Fake {
    state: Mutex<State>,
    delay: Duration,
    independent: bool,
}

impl Fake {
    fn new(up: bool) -> Arc<Fake> {
        Arc::new(Fake {
            state: Mutex::new(State {
                up,
                ..State::default()
            }),
            delay: Duration::ZERO,
            independent: false,
        })
    }

    fn set_up(&self, up: bool) {
        self.state.lock().unwrap().up = up;
    }

    fn delivered(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().delivered.clone()
    }
}

#[tonic::async_trait]
impl Destination for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn independent_messages(&self) -> bool {
        self.independent
    }

    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut state = self.state.lock().unwrap();
        if !state.up {
            return Outcome::Failed {
                error: "receiver down".into(),
                permanent: false,
            };
        }
        let mut rejected = Vec::new();
        state
            .batches
            .push(batch.iter().map(|e| e.event_id.clone()).collect());
        for envelope in batch {
            if state.reject.contains(&envelope.event_id) {
                rejected.push((envelope.event_id.clone(), "payload is not valid".to_owned()));
            } else {
                state
                    .delivered
                    .push((envelope.stream.clone(), envelope.event_id.clone()));
                *state
                    .deliveries
                    .entry(envelope.event_id.clone())
                    .or_default() += 1;
            }
        }
        Outcome::Accepted { rejected }
    }
}

fn settings() -> RelaySettings {
    RelaySettings {
        poll_interval: Duration::from_millis(20),
        batch_size: 7,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..RelaySettings::default()
    }
}

async fn write(db: &Db, stream: &str, event_id: &str) {
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(
        &mut tx,
        &Message {
            destination: "fake",
            event_id: event_id.into(),
            stream: stream.into(),
            payload: event_id.as_bytes().to_vec(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn start(
    db: &Db,
    fake: &Arc<Fake>,
) -> (
    csp_kit::shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<()>,
) {
    let relay = Relay::new(
        db.clone(),
        vec![fake.clone() as Arc<dyn Destination>],
        clock::system(),
        settings(),
    );
    let (trigger, shutdown) = Shutdown::new();
    (trigger, tokio::spawn(relay.run(shutdown)))
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn backlog(db: &Db) -> i64 {
    outbox::backlog(db)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_while_the_receiver_is_down_and_arrive_in_stream_order() {
    let test = csp_tests::test_db().await;
    test.db.migrate(&MIGRATIONS).await.unwrap();
    let fake = Fake::new(false);
    let (trigger, relay) = start(&test.db, &fake);
    for i in 0..30 {
        write(&test.db, &format!("order-{}", i % 3), &format!("e{i:02}")).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(fake.delivered().is_empty());
    assert_eq!(backlog(&test.db).await, 30);

    fake.set_up(true);
    eventually("all 30 are delivered", || fake.delivered().len() == 30).await;
    for stream in ["order-0", "order-1", "order-2"] {
        let ids: Vec<String> = fake
            .delivered()
            .into_iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, id)| id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{stream} out of order");
    }
    // The relay deletes what was delivered right after the receiver took it.
    for _ in 0..200 {
        if backlog(&test.db).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backlog(&test.db).await, 0);
    trigger.fire();
    relay.await.unwrap();
    test.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_messages_of_a_stream_share_a_batch_in_order_others_go_one_by_one() {
    for independent in [false, true] {
        let test = csp_tests::test_db().await;
        test.db.migrate(&MIGRATIONS).await.unwrap();
        let fake = Arc::new(Fake {
            state: Mutex::new(State::default()),
            delay: Duration::ZERO,
            independent,
        });
        // Written before the relay starts (on a slow machine it would
        // otherwise try e0 alone while e1 is being written), and the
        // receiver is down at first, so they wait together.
        for i in 0..6 {
            write(&test.db, "subscription-1", &format!("e{i}")).await;
        }
        let (trigger, relay) = start(&test.db, &fake);
        fake.set_up(true);
        eventually("all 6 are delivered", || fake.delivered().len() == 6).await;
        let ids: Vec<String> = fake.delivered().into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4", "e5"], "in order");
        let batches = fake.state.lock().unwrap().batches.clone();
        if independent {
            // batch_size is 7: the whole stream in one batch.
            assert_eq!(
                batches,
                std::slice::from_ref(&ids),
                "independent: one batch"
            );
        } else {
            assert!(batches.iter().all(|b| b.len() == 1), "{batches:?}");
        }
        trigger.fire();
        relay.await.unwrap();
        test.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_and_holds_back_only_its_stream_until_replayed() {
    let test = csp_tests::test_db().await;
    test.db.migrate(&MIGRATIONS).await.unwrap();
    let fake = Fake::new(true);
    fake.state.lock().unwrap().reject.insert("a1".into());
    write(&test.db, "a", "a1").await;
    write(&test.db, "a", "a2").await;
    write(&test.db, "b", "b1").await;
    write(&test.db, "b", "b2").await;
    let (trigger, relay) = start(&test.db, &fake);

    eventually("stream b is delivered", || fake.delivered().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ids: Vec<String> = fake.delivered().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["b1", "b2"], "a2 must wait behind the dead letter a1");
    let dead = outbox::dead_letters(&test.db).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].event_id.as_str(), dead[0].reason.as_str()),
        ("a1", "payload is not valid")
    );

    // Fixed on the receiver's side, then replayed: a1 goes first, then a2.
    fake.state.lock().unwrap().reject.clear();
    assert!(
        outbox::replay(&test.db, "a1", clock::system().now())
            .await
            .unwrap()
    );
    assert!(
        !outbox::replay(&test.db, "a1", clock::system().now())
            .await
            .unwrap()
    );
    eventually("stream a is delivered", || fake.delivered().len() == 4).await;
    let ids: Vec<String> = fake.delivered().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["b1", "b2", "a1", "a2"]);
    assert!(outbox::dead_letters(&test.db).await.unwrap().is_empty());
    trigger.fire();
    relay.await.unwrap();
    test.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_survive_a_stop_before_delivery() {
    let test = csp_tests::test_db().await;
    test.db.migrate(&MIGRATIONS).await.unwrap();
    let down = Fake::new(false);
    let (trigger, relay) = start(&test.db, &down);
    write(&test.db, "s", "m1").await;
    write(&test.db, "s", "m2").await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    trigger.fire();
    relay.await.unwrap();
    test.db.close().await;

    // A new process: the same database opened again, the receiver up.
    let reopened = Db::connect(&test.url).await.unwrap();
    let up = Fake::new(true);
    let (trigger, relay) = start(&reopened, &up);
    eventually("both arrive after the restart", || {
        up.delivered().len() == 2
    })
    .await;
    trigger.fire();
    relay.await.unwrap();
    reopened.close().await;
    test.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_database_deliver_each_message_once() {
    let test = csp_tests::test_db().await;
    test.db.migrate(&MIGRATIONS).await.unwrap();
    let second = Db::connect(&test.url).await.unwrap();
    let fake = Arc::new(Fake {
        state: Mutex::new(State {
            up: true,
            ..State::default()
        }),
        delay: Duration::from_millis(2),
        independent: false,
    });
    let (t1, r1) = start(&test.db, &fake);
    let (t2, r2) = start(&second, &fake);
    for i in 0..120 {
        write(
            if i % 2 == 0 { &test.db } else { &second },
            &format!("s{}", i % 10),
            &format!("m{i:03}"),
        )
        .await;
    }
    // Wait for 120 distinct messages: on SQLite a message may go out twice,
    // so 120 deliveries can come before the last distinct one.
    eventually("all 120 are delivered", || {
        fake.state.lock().unwrap().deliveries.len() >= 120
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deliveries = fake.state.lock().unwrap().deliveries.clone();
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    // On SQLite both relays are in one process and share nothing but the
    // file; a message may in principle go out twice (at least once). On
    // PostgreSQL the advisory lock makes it exactly once.
    if matches!(test.db, Db::Postgres(_)) {
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    }
    assert_eq!(deliveries.len(), 120);
    t1.fire();
    t2.fire();
    r1.await.unwrap();
    r2.await.unwrap();
    second.close().await;
    test.remove().await;
}
