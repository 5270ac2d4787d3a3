//! The audit storage contract: append() numbers each partner's records 1, 2,
//! 3..., links each to its predecessor's hash and stores the hash over its
//! content, skips record ids it has seen, keeps partners' chains apart and
//! checkpoints the new head under the signer's key; head_seq() follows;
//! page() reads newest first within [start, end), up to a snapshot, by the
//! (occur_at, seq) cursor; chain() walks a chain in order; and a verifier
//! over chain() and checkpoints() finds the stored log intact, or names the
//! record edited in the database.
//!
//! Runs on SQLite, or on PostgreSQL when CSP_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_audit::domain::{Checkpoint, Findings, GENESIS, Record, Signer, Verifier, record_hash};
use csp_audit::storage::{AuditStore, MIGRATIONS, Query};
use csp_kit::clock::{Micros, SECOND};
use csp_kit::ids::PartnerId;
use csp_store::testing::TestDb;

const T0: Micros = 1_780_000_000 * SECOND;

async fn open() -> (TestDb, AuditStore, Signer) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = AuditStore::new(test.db.clone());
    (test, store, Signer::new(b"storage-contract-checkpoint-key"))
}

fn partner() -> PartnerId {
    PartnerId::new()
}

/// The partner a record carries before the store sets it.
const UNSET: PartnerId = PartnerId::from_uuid(uuid::Uuid::nil());

/// A record as the intake hands it to the store: partner, seq and hashes
/// are the store's to set.
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
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Records `{prefix}{from}..={prefix}{to}`, one second apart.
fn records(prefix: &str, from: i64, to: i64) -> Vec<Record> {
    (from..=to)
        .map(|n| record(&format!("{prefix}{n}"), T0 + n * SECOND))
        .collect()
}

async fn append(
    store: &AuditStore,
    signer: &Signer,
    partner: PartnerId,
    records: Vec<Record>,
) -> (u32, Option<Checkpoint>) {
    store.append(partner, records, signer, T0).await.unwrap()
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

/// Walks a partner's stored chain, two records at a time, against its
/// stored checkpoints.
async fn verify(store: &AuditStore, signer: &Signer, partner: PartnerId) -> Findings {
    let checkpoints = store.checkpoints(partner).await.unwrap();
    let mut verifier = Verifier::new(signer, checkpoints);
    let mut after = 0;
    loop {
        let chunk = store.chain(partner, after, 2).await.unwrap();
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        for r in &chunk {
            verifier.push(r);
        }
    }
    verifier.finish()
}

/// Seven records whose times are not in sequence order (seq: occur_at in
/// seconds after T0): 1: 10, 2: 20, 3: 20, 4: 15, 5: 40, 6: 50, 7: 30.
async fn seven_out_of_order(store: &AuditStore, signer: &Signer, partner: PartnerId) {
    const OCCUR: [i64; 7] = [10, 20, 20, 15, 40, 50, 30];
    let batch = OCCUR
        .iter()
        .enumerate()
        .map(|(i, at)| record(&format!("{partner}-{}", i + 1), T0 + at * SECOND))
        .collect();
    assert_eq!(append(store, signer, partner, batch).await.0, 7);
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
async fn append_numbers_from_one_and_chains_each_record_to_the_previous_hash() {
    let (test, store, signer) = open().await;
    let partner = partner();
    assert_eq!(store.head_seq(partner).await.unwrap(), 0);
    let first = records("e", 1, 3);
    assert_eq!(append(&store, &signer, partner, first.clone()).await.0, 3);
    assert_eq!(store.head_seq(partner).await.unwrap(), 3);
    let second = records("e", 4, 5);
    assert_eq!(append(&store, &signer, partner, second.clone()).await.0, 2);
    assert_eq!(store.head_seq(partner).await.unwrap(), 5);

    let stored = whole_chain(&store, partner).await;
    let given: Vec<Record> = first.into_iter().chain(second).collect();
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5], "on {}", test.backend());
    let mut prev = GENESIS.to_owned();
    for (s, g) in stored.iter().zip(&given) {
        assert_eq!(
            s.prev_hash, prev,
            "record {} is not linked to its predecessor",
            s.seq
        );
        assert_eq!(s.hash, record_hash(&prev, s), "record {} hash", s.seq);
        let expected = Record {
            partner_id: partner,
            seq: s.seq,
            prev_hash: prev.clone(),
            hash: s.hash.clone(),
            ..g.clone()
        };
        assert_eq!(*s, expected, "record {} is stored as given", s.seq);
        prev = s.hash.clone();
    }
    test.remove().await;
}

#[tokio::test]
async fn append_skips_record_ids_seen_before() {
    let (test, store, signer) = open().await;
    let partner = partner();
    assert_eq!(
        append(&store, &signer, partner, records("e", 1, 2)).await.0,
        2
    );

    let mut replayed = record("e2", T0);
    replayed.user_id = "mallory".to_owned();
    let e3 = record("e3", T0 + 3 * SECOND);
    let batch = vec![replayed, e3.clone(), e3];
    let (added, checkpoint) = append(&store, &signer, partner, batch).await;
    assert_eq!(added, 1, "only e3 is new, once");
    assert_eq!(checkpoint.map(|c| c.seq), Some(3));

    let (added, checkpoint) = append(&store, &signer, partner, records("e", 1, 3)).await;
    assert_eq!((added, checkpoint), (0, None), "nothing new, no checkpoint");

    let stored = whole_chain(&store, partner).await;
    assert_eq!(record_ids(&stored), ["e1", "e2", "e3"]);
    assert_eq!(seqs(&stored), [1, 2, 3]);
    assert_eq!(stored[1].user_id, "user-1", "the first e2 stays");
    assert_eq!(store.head_seq(partner).await.unwrap(), 3);
    let checkpoints = store.checkpoints(partner).await.unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    test.remove().await;
}

#[tokio::test]
async fn partners_chains_are_kept_apart() {
    let (test, store, signer) = open().await;
    let (a, b) = (partner(), partner());
    append(&store, &signer, a, records("a", 1, 2)).await;
    append(&store, &signer, b, records("b", 1, 1)).await;
    append(&store, &signer, a, records("a", 3, 3)).await;
    append(&store, &signer, b, records("b", 2, 4)).await;

    for (partner, ids) in [
        (a, vec!["a1", "a2", "a3"]),
        (b, vec!["b1", "b2", "b3", "b4"]),
    ] {
        let chain = whole_chain(&store, partner).await;
        assert_eq!(record_ids(&chain), ids);
        let expected: Vec<i64> = (1..=ids.len() as i64).collect();
        assert_eq!(seqs(&chain), expected);
        assert!(chain.iter().all(|r| r.partner_id == partner));
        assert_eq!(chain[0].prev_hash, GENESIS, "each chain starts at genesis");
        assert_eq!(store.head_seq(partner).await.unwrap(), ids.len() as i64);
        assert!(verify(&store, &signer, partner).await.intact());
    }
    let seqs_of =
        |checkpoints: Vec<Checkpoint>| checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(seqs_of(store.checkpoints(a).await.unwrap()), [2, 3]);
    assert_eq!(seqs_of(store.checkpoints(b).await.unwrap()), [1, 4]);
    test.remove().await;
}

#[tokio::test]
async fn append_returns_a_genuine_checkpoint_of_the_new_head() {
    let (test, store, signer) = open().await;
    let partner = partner();
    let (_, checkpoint) = append(&store, &signer, partner, records("e", 1, 3)).await;
    let checkpoint = checkpoint.expect("a checkpoint of the new head");
    let head = whole_chain(&store, partner).await.pop().unwrap();
    assert_eq!(
        (
            checkpoint.partner_id,
            checkpoint.seq,
            checkpoint.hash.as_str()
        ),
        (partner, 3, head.hash.as_str())
    );
    assert!(signer.is_genuine(&checkpoint));
    assert!(!Signer::new(b"another key").is_genuine(&checkpoint));
    assert_eq!(store.checkpoints(partner).await.unwrap(), vec![checkpoint]);
    test.remove().await;
}

#[tokio::test]
async fn page_is_newest_first_within_start_and_end_up_to_max_seq() {
    let (test, store, signer) = open().await;
    let partner = partner();
    seven_out_of_order(&store, &signer, partner).await;
    let elsewhere = self::partner();
    append(
        &store,
        &signer,
        elsewhere,
        vec![record("x1", T0 + 30 * SECOND)],
    )
    .await;

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
    let (test, store, signer) = open().await;
    let partner = partner();
    seven_out_of_order(&store, &signer, partner).await;
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
    let (test, store, signer) = open().await;
    let partner = partner();
    let backwards: Vec<Record> = (1..=5)
        .map(|n| record(&format!("e{n}"), T0 + (10 - n) * SECOND))
        .collect();
    append(&store, &signer, partner, backwards).await;
    append(&store, &signer, self::partner(), records("x", 1, 3)).await;

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

#[tokio::test]
async fn a_verifier_finds_the_stored_log_intact() {
    let (test, store, signer) = open().await;
    let partner = partner();
    append(&store, &signer, partner, records("e", 1, 3)).await;
    append(&store, &signer, partner, records("e", 4, 4)).await;
    append(&store, &signer, partner, records("e", 5, 7)).await;

    let findings = verify(&store, &signer, partner).await;
    assert!(
        findings.intact(),
        "{} on {}",
        findings.summary(),
        test.backend()
    );
    assert_eq!(findings.checked, 7);
    test.remove().await;
}

#[tokio::test]
async fn a_verifier_names_a_record_edited_in_the_database() {
    let (test, store, signer) = open().await;
    let partner = partner();
    append(&store, &signer, partner, records("e", 1, 3)).await;
    append(&store, &signer, partner, records("e", 4, 5)).await;

    const EDIT: &str =
        "UPDATE activities SET user_id = 'mallory' WHERE partner_id = $1 AND seq = 3";
    let edited = csp_store::on_db!(&test.db, pool => sqlx::query(EDIT)
        .bind(partner.to_string())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(edited, 1);
    assert_eq!(whole_chain(&store, partner).await[2].user_id, "mallory");

    let findings = verify(&store, &signer, partner).await;
    assert!(!findings.intact(), "an edited log reads as intact");
    let (id, _why) = findings.first_mismatch.clone().expect("a mismatch");
    assert_eq!(id, "e3", "{}", findings.summary());
    assert_eq!(findings.missing_count, 0);
    test.remove().await;
}
