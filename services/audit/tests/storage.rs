//! The audit storage contract: append() numbers each partner's records 1, 2,
//! 3..., stores them as given and adds their leaves to the partner's Merkle
//! tree (the stored hashes give the root of the leaves in order), skips
//! record ids it has seen and keeps partners' logs apart; build_missing_leaves()
//! builds the tree over records stored without leaves; checkpoints are saved
//! once per size and mark the head signed; page() reads newest first within
//! [start, end), up to a snapshot, by the (occur_at, seq) cursor; chain()
//! walks a log in order.
//!
//! Runs on SQLite, or on PostgreSQL when CSP_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_audit::domain::Record;
use csp_audit::log::{self, RootBuilder};
use csp_audit::storage::{AuditStore, MIGRATIONS, Query};
use csp_kit::clock::{Micros, SECOND};
use csp_kit::ids::PartnerId;
use csp_store::testing::TestDb;

const T0: Micros = 1_780_000_000 * SECOND;

async fn open() -> (TestDb, AuditStore) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = AuditStore::new(test.db.clone());
    (test, store)
}

fn partner() -> PartnerId {
    PartnerId::new()
}

/// The partner a record carries before the store sets it.
const UNSET: PartnerId = PartnerId::from_uuid(uuid::Uuid::nil());

/// A record as the intake hands it to the store: partner and seq are the
/// store's to set.
fn record(id: &str, occur_at: Micros) -> Record {
    Record {
        partner_id: UNSET,
        seq: 0,
        id: id.to_owned(),
        kind: "key_accessed".to_owned(),
        occur_at,
        recorded_at: occur_at + SECOND,
        user_id: "user-1".to_owned(),
        user_display_name: "Ada".to_owned(),
        customer_tenant_id: "customer-1".to_owned(),
        subscription_id: "subscription-1".to_owned(),
        product_id: "windows-server-datacenter".to_owned(),
        details: r#"{"version":"2022"}"#.to_owned(),
    }
}

/// Records `{prefix}{from}..={prefix}{to}`, one second apart.
fn records(prefix: &str, from: i64, to: i64) -> Vec<Record> {
    (from..=to)
        .map(|n| record(&format!("{prefix}{n}"), T0 + n * SECOND))
        .collect()
}

async fn append(store: &AuditStore, partner: PartnerId, records: Vec<Record>) -> u32 {
    store.append(partner, records).await.unwrap()
}

async fn whole_chain(store: &AuditStore, partner: PartnerId) -> Vec<Record> {
    store.chain(partner, 0, 10_000).await.unwrap()
}

fn seqs(records: &[Record]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

fn record_ids(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

/// The root the stored tree gives for its whole size.
async fn stored_root(store: &AuditStore, partner: PartnerId) -> tlog_tiles::Hash {
    let size = store.tree_size(partner).await.unwrap();
    let reads = log::indexes_read(|r| tlog_tiles::tree_hash(size, r));
    let fetched = store.hashes(partner, &reads).await.unwrap();
    tlog_tiles::tree_hash(size, &fetched).unwrap()
}

/// The root of the stored records' leaves, in order.
fn root_of(records: &[Record]) -> tlog_tiles::Hash {
    let mut builder = RootBuilder::default();
    for r in records {
        builder.push(log::leaf_hash(r));
    }
    builder.root()
}

/// Seven records whose times are not in sequence order (seq: occur_at in
/// seconds after T0): 1: 10, 2: 20, 3: 20, 4: 15, 5: 40, 6: 50, 7: 30.
async fn seven_out_of_order(store: &AuditStore, partner: PartnerId) {
    const OCCUR: [i64; 7] = [10, 20, 20, 15, 40, 50, 30];
    let batch = OCCUR
        .iter()
        .enumerate()
        .map(|(i, at)| record(&format!("{partner}-{}", i + 1), T0 + at * SECOND))
        .collect();
    assert_eq!(append(store, partner, batch).await, 7);
}

/// Every page of `q`, `limit` at a time, following the cursor.
async fn all_pages(store: &AuditStore, q: &Query, limit: u32) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.page(q, before, limit).await.unwrap();
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { break };
        before = Some((last.occur_at, last.seq));
        seen.extend(seqs(&page));
    }
    seen
}

#[tokio::test]
async fn append_numbers_from_one_and_grows_the_tree_over_the_records_in_order() {
    let (test, store) = open().await;
    let partner = partner();
    assert_eq!(store.head_seq(partner).await.unwrap(), 0);
    assert_eq!(store.tree_size(partner).await.unwrap(), 0);
    let first = records("e", 1, 3);
    assert_eq!(append(&store, partner, first.clone()).await, 3);
    assert_eq!(store.head_seq(partner).await.unwrap(), 3);
    let second = records("e", 4, 5);
    assert_eq!(append(&store, partner, second.clone()).await, 2);
    assert_eq!(store.tree_size(partner).await.unwrap(), 5);

    let stored = whole_chain(&store, partner).await;
    let given: Vec<Record> = first.into_iter().chain(second).collect();
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5], "on {}", test.backend());
    for (s, g) in stored.iter().zip(&given) {
        let expected = Record {
            partner_id: partner,
            seq: s.seq,
            ..g.clone()
        };
        assert_eq!(*s, expected, "record {} is stored as given", s.seq);
    }
    assert_eq!(stored_root(&store, partner).await, root_of(&stored));
    // Each leaf is stored at its index.
    let index = log::stored_hash_index(0, 3);
    let leaf = store.hashes(partner, &[index]).await.unwrap();
    assert_eq!(leaf.0.get(&index), Some(&log::leaf_hash(&stored[3])));
    test.remove().await;
}

#[tokio::test]
async fn append_skips_record_ids_seen_before() {
    let (test, store) = open().await;
    let partner = partner();
    assert_eq!(append(&store, partner, records("e", 1, 2)).await, 2);

    let mut replayed = record("e2", T0);
    replayed.user_id = "mallory".to_owned();
    let e3 = record("e3", T0 + 3 * SECOND);
    let batch = vec![replayed, e3.clone(), e3];
    assert_eq!(
        append(&store, partner, batch).await,
        1,
        "only e3 is new, once"
    );
    assert_eq!(append(&store, partner, records("e", 1, 3)).await, 0);

    let stored = whole_chain(&store, partner).await;
    assert_eq!(record_ids(&stored), ["e1", "e2", "e3"]);
    assert_eq!(seqs(&stored), [1, 2, 3]);
    assert_eq!(stored[1].user_id, "user-1", "the first e2 stays");
    assert_eq!(store.tree_size(partner).await.unwrap(), 3);
    assert_eq!(stored_root(&store, partner).await, root_of(&stored));
    test.remove().await;
}

#[tokio::test]
async fn partners_logs_are_kept_apart() {
    let (test, store) = open().await;
    let (a, b) = (partner(), partner());
    append(&store, a, records("a", 1, 2)).await;
    append(&store, b, records("b", 1, 1)).await;
    append(&store, a, records("a", 3, 3)).await;
    append(&store, b, records("b", 2, 4)).await;

    for (partner, ids) in [
        (a, vec!["a1", "a2", "a3"]),
        (b, vec!["b1", "b2", "b3", "b4"]),
    ] {
        let chain = whole_chain(&store, partner).await;
        assert_eq!(record_ids(&chain), ids);
        let expected: Vec<i64> = (1..=ids.len() as i64).collect();
        assert_eq!(seqs(&chain), expected);
        assert!(chain.iter().all(|r| r.partner_id == partner));
        assert_eq!(store.tree_size(partner).await.unwrap(), ids.len() as u64);
        assert_eq!(stored_root(&store, partner).await, root_of(&chain));
    }
    test.remove().await;
}

#[tokio::test]
async fn checkpoints_are_kept_once_per_size_and_mark_the_head_signed() {
    let (test, store) = open().await;
    let (a, b) = (partner(), partner());
    append(&store, a, records("a", 1, 3)).await;
    append(&store, b, records("b", 1, 1)).await;
    let mut unsigned = store.unsigned_heads().await.unwrap();
    unsigned.sort_by_key(|(_, size)| *size);
    assert_eq!(unsigned, vec![(b, 1), (a, 3)]);

    let root = stored_root(&store, a).await;
    store
        .save_checkpoint(a, 3, &root, "note-3", T0)
        .await
        .unwrap();
    store
        .save_checkpoint(a, 3, &root, "another", T0)
        .await
        .unwrap();
    assert_eq!(store.unsigned_heads().await.unwrap(), vec![(b, 1)]);
    assert_eq!(
        store.checkpoints(a).await.unwrap(),
        vec![(3, "note-3".to_owned())]
    );
    assert_eq!(
        store.checkpoint_at(a, 3).await.unwrap().as_deref(),
        Some("note-3")
    );
    assert_eq!(store.checkpoint_at(a, 2).await.unwrap(), None);

    append(&store, a, records("a", 4, 4)).await;
    store
        .save_checkpoint(a, 4, &root, "note-4", T0)
        .await
        .unwrap();
    // An older size saved late does not move the head back.
    store
        .save_checkpoint(a, 2, &root, "note-2", T0)
        .await
        .unwrap();
    assert_eq!(
        store.latest_checkpoint(a).await.unwrap(),
        Some((4, "note-4".to_owned()))
    );
    assert!(
        store
            .unsigned_heads()
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| *p != a)
    );
    assert!(store.checkpoints(b).await.unwrap().is_empty());
    test.remove().await;
}

#[tokio::test]
async fn records_stored_without_leaves_get_them_in_order() {
    let (test, store) = open().await;
    let partner = partner();
    append(&store, partner, records("e", 1, 2)).await;
    // Records logged before the tree existed: rows without leaves.
    for n in 3..=9i64 {
        const INSERT: &str = "INSERT INTO activities (partner_id, seq, id, kind, occur_at_us, recorded_at_us, \
                              user_id, user_display_name, customer_tenant_id, subscription_id, product_id, details) \
                              VALUES ($1, $2, $3, 'key_accessed', $4, $4, 'u', 'U', '', '', '', '{}')";
        csp_store::on_db!(&test.db, pool => sqlx::query(INSERT)
            .bind(partner.to_string())
            .bind(n)
            .bind(format!("old{n}"))
            .bind(T0 + n * SECOND)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
    }
    assert_eq!(store.tree_size(partner).await.unwrap(), 2);
    assert_eq!(store.build_missing_leaves(3).await.unwrap(), 7);
    assert_eq!(store.build_missing_leaves(3).await.unwrap(), 0, "once");
    assert_eq!(store.tree_size(partner).await.unwrap(), 9);
    let stored = whole_chain(&store, partner).await;
    assert_eq!(stored_root(&store, partner).await, root_of(&stored));
    // Appending goes on after them.
    append(&store, partner, records("e", 10, 10)).await;
    let stored = whole_chain(&store, partner).await;
    assert_eq!(seqs(&stored).last(), Some(&10));
    assert_eq!(stored_root(&store, partner).await, root_of(&stored));
    test.remove().await;
}

#[tokio::test]
async fn page_is_newest_first_within_start_and_end_up_to_max_seq() {
    let (test, store) = open().await;
    let partner = partner();
    seven_out_of_order(&store, partner).await;
    let elsewhere = self::partner();
    append(&store, elsewhere, vec![record("x1", T0 + 30 * SECOND)]).await;

    let q = Query {
        partner_id: partner,
        start: T0 + 20 * SECOND,
        end: T0 + 50 * SECOND,
        max_seq: 7,
        ..Query::all(partner)
    };
    let page = store.page(&q, None, 100).await.unwrap();
    assert_eq!(seqs(&page), [5, 7, 3, 2], "on {}", test.backend());
    assert!(page.iter().all(|r| r.partner_id == partner));
    let limited = store.page(&q, None, 2).await.unwrap();
    assert_eq!(seqs(&limited), [5, 7]);
    let snapshot = Query {
        max_seq: 5,
        ..q.clone()
    };
    assert_eq!(
        seqs(&store.page(&snapshot, None, 100).await.unwrap()),
        [5, 3, 2]
    );
    let empty = Query {
        max_seq: 0,
        ..q.clone()
    };
    assert!(store.page(&empty, None, 100).await.unwrap().is_empty());
    test.remove().await;
}

#[tokio::test]
async fn page_follows_the_occur_at_and_seq_cursor() {
    let (test, store) = open().await;
    let partner = partner();
    seven_out_of_order(&store, partner).await;
    let q = Query {
        partner_id: partner,
        start: T0 + 20 * SECOND,
        end: T0 + 50 * SECOND,
        max_seq: 7,
        ..Query::all(partner)
    };
    for limit in [1, 2, 3] {
        assert_eq!(
            all_pages(&store, &q, limit).await,
            [5, 7, 3, 2],
            "pages of {limit}"
        );
    }
    // Two records at one instant: the seq in the cursor tells them apart.
    let after_3 = store
        .page(&q, Some((T0 + 20 * SECOND, 3)), 100)
        .await
        .unwrap();
    assert_eq!(seqs(&after_3), [2]);
    test.remove().await;
}

#[tokio::test]
async fn chain_returns_the_records_after_a_seq_in_order() {
    let (test, store) = open().await;
    let partner = partner();
    let backwards: Vec<Record> = (1..=5)
        .map(|n| record(&format!("e{n}"), T0 + (10 - n) * SECOND))
        .collect();
    append(&store, partner, backwards).await;
    append(&store, self::partner(), records("x", 1, 3)).await;

    let all = store.chain(partner, 0, 100).await.unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5], "in seq order, not time order");
    assert_eq!(record_ids(&all), ["e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(
        seqs(&store.chain(partner, 2, 100).await.unwrap()),
        [3, 4, 5]
    );
    assert_eq!(seqs(&store.chain(partner, 2, 2).await.unwrap()), [3, 4]);
    assert!(store.chain(partner, 5, 100).await.unwrap().is_empty());
    test.remove().await;
}
