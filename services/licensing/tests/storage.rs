//! The licensing storage contract: what `LicensingStore` promises its use
//! cases, pinned below the whole-system tests. Ordering's events apply once
//! (a cancellation leaves a revoked tombstone a late "order placed" cannot
//! undo); revocation and listing are scoped to the partner; `issue` keeps
//! one sealed key per subscription and version and one working link per
//! selection, and hands out nothing once revoked; `redeem_all` counts up to
//! `MAX_DOWNLOADS` downloads of a live link, refuses a dead one with the
//! state that says why, answers a group in its requests' order (a link named
//! twice counted twice while it works), and commits every counted download
//! with its outbox messages (in one transaction, or on PostgreSQL in one
//! statement for links it counted before).
//!
//! Runs on SQLite, or on PostgreSQL when `CSP_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_kit::clock::{DAY, Micros, SECOND};
use csp_kit::ids::{LinkId, OrderId, PartnerId, RecordId, SubscriptionId, TenantId};
use csp_licensing::domain::{
    Dead, Download, Entitlement, EntitlementStatus, Issued, LINK_LIFETIME, LinkState,
    MAX_DOWNLOADS, NewLink, Selection, link_status,
};
use csp_licensing::storage::{EventChange, LicensingStore, LinkCount, MIGRATIONS};
use csp_store::StoreError;
use csp_store::db::Db;
use csp_store::outbox::{Message, backlog};
use csp_store::testing::TestDb;

/// A moment in November 2023.
const T0: Micros = 1_700_000_000 * SECOND;

async fn setup() -> (TestDb, LicensingStore) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = LicensingStore::new(test.db.clone());
    (test, store)
}

fn entitlement(partner: PartnerId, customer: TenantId, title: &str) -> Entitlement {
    Entitlement {
        subscription_id: SubscriptionId::new(),
        partner_id: partner,
        customer_tenant_id: customer,
        order_id: OrderId::new(),
        product_id: "windows-server".to_owned(),
        product_title: title.to_owned(),
        status: EntitlementStatus::Active,
        provisioned_at: T0,
        revoked_at: None,
    }
}

/// An active entitlement of a new partner and customer.
fn any_entitlement() -> Entitlement {
    entitlement(PartnerId::new(), TenantId::new(), "Windows Server")
}

fn selection(version: &str, language: &str) -> Selection {
    Selection {
        version: version.to_owned(),
        language: language.to_owned(),
        file_type: "iso-x64".to_owned(),
    }
}

/// A link to offer `issue` at `now` (storage does not check the secrets).
fn new_link(now: Micros) -> NewLink {
    let id = LinkId::new();
    NewLink {
        id,
        token_hash: format!("hash-{id}"),
        sealed_token: format!("sealed-token-{id}"),
        expires_at: now + LINK_LIFETIME,
        max_downloads: MAX_DOWNLOADS,
        issued_by_user_id: "agent-1".to_owned(),
    }
}

fn message() -> Message {
    Message {
        destination: "audit",
        event_id: RecordId::new().to_string(),
        stream: "licensing".to_owned(),
        payload: vec![1, 2, 3],
    }
}

/// Every outbox row, whatever its destination.
async fn outbox_rows(db: &Db) -> i64 {
    backlog(db).await.unwrap().into_iter().map(|(_, n)| n).sum()
}

/// Provisions `e` under an event id never used before.
async fn provision(store: &LicensingStore, e: &Entitlement) {
    let event_id = RecordId::new().to_string();
    let applied = store.provision(&event_id, std::slice::from_ref(e), e.provisioned_at);
    assert!(applied.await.unwrap());
}

/// Issues a key and link for `e` at `now`, offering `link`: one message
/// always, one more when the link is new.
async fn issue(
    store: &LicensingStore,
    e: &Entitlement,
    selection: &Selection,
    now: Micros,
    link: &NewLink,
) -> Option<Issued> {
    let key = format!("sealed-key-{}", RecordId::new());
    store
        .issue(e, selection, now, &key, link, &[message()], &[message()])
        .await
        .unwrap()
}

/// The sealed key `issue` settles on for `e`'s version, offering `fresh`.
async fn key_for(
    store: &LicensingStore,
    e: &Entitlement,
    version: &str,
    language: &str,
    fresh: &str,
) -> String {
    let sel = selection(version, language);
    let issued = store
        .issue(e, &sel, T0, fresh, &new_link(T0), &[], &[])
        .await;
    issued.unwrap().unwrap().sealed_key
}

/// Redeems `hash` at `now` alone, writing no message.
async fn redeem(store: &LicensingStore, hash: &str, now: Micros) -> LinkCount {
    let mut outcomes = store
        .redeem_all(&[(hash.to_owned(), now)], |_, _| Vec::new())
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

/// Redeems `hash` at `now`, which must count.
async fn counted(store: &LicensingStore, hash: &str, now: Micros) -> Download {
    match redeem(store, hash, now).await {
        LinkCount::Counted(download) => download,
        other => panic!("expected a counted download, got {other:?}"),
    }
}

/// Redeems `hash` at `now`, which must be refused.
async fn refused(store: &LicensingStore, hash: &str, now: Micros) -> LinkState {
    match redeem(store, hash, now).await {
        LinkCount::Refused(state) => state,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn provision_applies_an_event_once() {
    let (test, store) = setup().await;
    let (p, c) = (PartnerId::new(), TenantId::new());
    let first = entitlement(p, c, "Windows Server");
    let applied = store
        .provision("placed-1", std::slice::from_ref(&first), T0)
        .await;
    assert!(applied.unwrap(), "on {}", test.backend());
    assert_eq!(
        store.entitlement(p, first.subscription_id).await.unwrap(),
        Some(first.clone())
    );
    let late = entitlement(p, c, "SQL Server");
    assert!(
        !store
            .provision("placed-1", std::slice::from_ref(&late), T0 + DAY)
            .await
            .unwrap()
    );
    assert_eq!(
        store.entitlement(p, late.subscription_id).await.unwrap(),
        None
    );
    assert_eq!(
        store.entitlements_of(p, c).await.unwrap(),
        std::slice::from_ref(&first)
    );
    // A new event naming a provisioned subscription leaves it as it is.
    let renamed = Entitlement {
        product_title: "Renamed".to_owned(),
        provisioned_at: T0 + DAY,
        ..first.clone()
    };
    assert!(
        store
            .provision("placed-2", &[renamed], T0 + DAY)
            .await
            .unwrap()
    );
    assert_eq!(
        store.entitlement(p, first.subscription_id).await.unwrap(),
        Some(first)
    );
    test.remove().await;
}

#[tokio::test]
async fn a_batch_of_events_applies_in_order_each_once() {
    let (test, store) = setup().await;
    let (first, second) = (any_entitlement(), any_entitlement());
    let tombstone = Entitlement {
        status: EntitlementStatus::Revoked,
        revoked_at: Some(T0),
        ..first.clone()
    };
    let batch = vec![
        (
            "placed-1".to_owned(),
            EventChange::Provision(vec![first.clone()]),
        ),
        (
            "placed-2".to_owned(),
            EventChange::Provision(vec![second.clone()]),
        ),
        (
            "cancelled-1".to_owned(),
            EventChange::Revoke(tombstone.clone()),
        ),
        // The same event twice in one batch applies once.
        (
            "placed-2".to_owned(),
            EventChange::Provision(vec![second.clone()]),
        ),
    ];
    let applied = store.apply_events(&batch, T0).await.unwrap();
    assert_eq!(applied, [true, true, true, false], "on {}", test.backend());
    let revoked = store
        .entitlement(first.partner_id, first.subscription_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revoked.status,
        EntitlementStatus::Revoked,
        "the cancellation after the order placed revoked it"
    );
    assert_eq!(
        store
            .entitlement(second.partner_id, second.subscription_id)
            .await
            .unwrap(),
        Some(second.clone())
    );
    let again = store.apply_events(&batch, T0 + SECOND).await.unwrap();
    assert_eq!(again, [false; 4], "a batch sent again changes nothing");
    test.remove().await;
}

#[tokio::test]
async fn a_cancellation_before_provisioning_leaves_a_tombstone_a_late_provision_cannot_undo() {
    let (test, store) = setup().await;
    let active = any_entitlement();
    let (p, id) = (active.partner_id, active.subscription_id);
    let tombstone = Entitlement {
        status: EntitlementStatus::Revoked,
        revoked_at: Some(T0),
        ..active.clone()
    };
    assert!(
        store
            .revoke_from_event("cancelled-1", &tombstone, T0)
            .await
            .unwrap()
    );
    let again = store
        .revoke_from_event("cancelled-1", &tombstone, T0 + SECOND)
        .await;
    assert!(!again.unwrap(), "on {}", test.backend());
    assert_eq!(
        store.entitlement(p, id).await.unwrap(),
        Some(tombstone.clone())
    );
    let late = Entitlement {
        provisioned_at: T0 + DAY,
        ..active.clone()
    };
    assert!(
        store
            .provision("placed-1", &[late], T0 + DAY)
            .await
            .unwrap()
    );
    assert_eq!(store.entitlement(p, id).await.unwrap(), Some(tombstone));
    let sel = selection("2022", "en-US");
    assert!(
        issue(&store, &active, &sel, T0 + DAY, &new_link(T0 + DAY))
            .await
            .is_none()
    );
    test.remove().await;
}

#[tokio::test]
async fn a_cancellation_event_revokes_a_provisioned_entitlement_and_its_links() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let link = new_link(T0);
    issue(&store, &e, &selection("2022", "en-US"), T0, &link)
        .await
        .unwrap();
    let at = T0 + DAY;
    let tombstone = Entitlement {
        product_title: e.product_id.clone(),
        status: EntitlementStatus::Revoked,
        provisioned_at: at,
        revoked_at: Some(at),
        ..e.clone()
    };
    assert!(
        store
            .revoke_from_event("cancelled-1", &tombstone, at)
            .await
            .unwrap()
    );
    let revoked = Entitlement {
        status: EntitlementStatus::Revoked,
        revoked_at: Some(at),
        ..e.clone()
    };
    let stored = store
        .entitlement(e.partner_id, e.subscription_id)
        .await
        .unwrap();
    assert_eq!(stored, Some(revoked), "on {}", test.backend());
    let state = refused(&store, &link.token_hash, at).await;
    assert_eq!(link_status(state, at), Err(Dead::Revoked));
    test.remove().await;
}

#[tokio::test]
async fn revoke_answers_none_for_an_unknown_or_another_partners_subscription() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    let (p, id) = (e.partner_id, e.subscription_id);
    provision(&store, &e).await;
    issue(&store, &e, &selection("2022", "en-US"), T0, &new_link(T0))
        .await
        .unwrap();
    issue(&store, &e, &selection("2022", "de-DE"), T0, &new_link(T0))
        .await
        .unwrap();
    assert_eq!(
        store.revoke(p, SubscriptionId::new(), T0).await.unwrap(),
        None
    );
    let theirs = store.revoke(PartnerId::new(), id, T0).await.unwrap();
    assert_eq!(theirs, None, "on {}", test.backend());
    assert_eq!(store.entitlement(p, id).await.unwrap(), Some(e.clone()));
    assert_eq!(store.revoke(p, id, T0 + DAY).await.unwrap(), Some(2));
    let revoked = Entitlement {
        status: EntitlementStatus::Revoked,
        revoked_at: Some(T0 + DAY),
        ..e.clone()
    };
    assert_eq!(
        store.entitlement(p, id).await.unwrap(),
        Some(revoked.clone())
    );
    // Again: found, no link left to revoke, the first revocation time kept.
    assert_eq!(store.revoke(p, id, T0 + 2 * DAY).await.unwrap(), Some(0));
    assert_eq!(store.entitlement(p, id).await.unwrap(), Some(revoked));
    test.remove().await;
}

#[tokio::test]
async fn entitlements_are_listed_per_partner_and_customer() {
    let (test, store) = setup().await;
    let (a, b) = (PartnerId::new(), PartnerId::new());
    let (x, y) = (TenantId::new(), TenantId::new());
    let beta = entitlement(a, x, "Beta Server");
    let alpha = entitlement(a, x, "Alpha Server");
    let of_y = entitlement(a, y, "Alpha Server");
    let of_b = entitlement(b, x, "Alpha Server");
    for e in [&beta, &alpha, &of_y, &of_b] {
        provision(&store, e).await;
    }
    let listed = store.entitlements_of(a, x).await.unwrap();
    assert_eq!(listed, [alpha.clone(), beta], "on {}", test.backend());
    assert_eq!(store.entitlements_of(a, y).await.unwrap(), [of_y]);
    assert_eq!(store.entitlements_of(b, x).await.unwrap(), [of_b]);
    assert!(store.entitlements_of(b, y).await.unwrap().is_empty());
    assert_eq!(
        store.entitlement(b, alpha.subscription_id).await.unwrap(),
        None
    );
    test.remove().await;
}

#[tokio::test]
async fn issue_keeps_one_sealed_key_per_subscription_and_version() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let first = key_for(&store, &e, "2022", "en-US", "key-a").await;
    assert_eq!(first, "key-a", "on {}", test.backend());
    assert_eq!(key_for(&store, &e, "2022", "de-DE", "key-b").await, "key-a");
    assert_eq!(key_for(&store, &e, "2019", "en-US", "key-c").await, "key-c");
    assert_eq!(key_for(&store, &e, "2019", "de-DE", "key-d").await, "key-c");
    let other = any_entitlement();
    provision(&store, &other).await;
    assert_eq!(
        key_for(&store, &other, "2022", "en-US", "key-e").await,
        "key-e"
    );
    assert_eq!(key_for(&store, &e, "2022", "en-US", "key-f").await, "key-a");
    test.remove().await;
}

#[tokio::test]
async fn issue_reuses_the_working_link_and_makes_a_new_one_only_when_none_works() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let sel = selection("2022", "en-US");
    let link = new_link(T0);
    let first = issue(&store, &e, &sel, T0, &link).await.unwrap();
    assert!(first.link_is_new, "on {}", test.backend());
    assert_eq!(first.link.id, link.id);
    assert_eq!(first.link.sealed_token, link.sealed_token);
    assert_eq!(
        (first.link.expires_at, first.link.downloads),
        (link.expires_at, 0)
    );
    assert_eq!(first.link.max_downloads, MAX_DOWNLOADS);
    assert_eq!(outbox_rows(&test.db).await, 2);
    let download = counted(&store, &link.token_hash, T0 + SECOND).await;
    assert_eq!(download.count, 1);

    let offered = new_link(T0 + DAY);
    let again = issue(&store, &e, &sel, T0 + DAY, &offered).await.unwrap();
    assert!(!again.link_is_new);
    assert_eq!((again.link.id, again.link.downloads), (link.id, 1));
    assert_eq!(again.sealed_key, first.sealed_key);
    assert_eq!(
        outbox_rows(&test.db).await,
        3,
        "no new-link messages without a new link"
    );
    let unused = redeem(&store, &offered.token_hash, T0 + DAY).await;
    assert!(matches!(unused, LinkCount::Unknown), "{unused:?}");

    // At its expiry the link no longer works: a new one is made.
    let expired_at = link.expires_at;
    let replacement = new_link(expired_at);
    let renewed = issue(&store, &e, &sel, expired_at, &replacement)
        .await
        .unwrap();
    assert!(renewed.link_is_new);
    assert_eq!(
        (renewed.link.id, renewed.link.downloads),
        (replacement.id, 0)
    );
    assert_eq!(outbox_rows(&test.db).await, 5);
    test.remove().await;
}

#[tokio::test]
async fn issue_hands_out_nothing_once_revoked() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let sel = selection("2022", "en-US");
    issue(&store, &e, &sel, T0, &new_link(T0)).await.unwrap();
    let revoked = store
        .revoke(e.partner_id, e.subscription_id, T0 + DAY)
        .await;
    assert_eq!(revoked.unwrap(), Some(1));
    let before = outbox_rows(&test.db).await;
    // `e` still says active: storage goes by what is stored.
    let issued = issue(&store, &e, &sel, T0 + DAY, &new_link(T0 + DAY)).await;
    assert!(issued.is_none(), "{issued:?} on {}", test.backend());
    assert_eq!(outbox_rows(&test.db).await, before);
    test.remove().await;
}

#[tokio::test]
async fn a_link_counts_downloads_up_to_max_downloads_then_is_used_up() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let sel = selection("2022", "en-US");
    let link = new_link(T0);
    issue(&store, &e, &sel, T0, &link).await.unwrap();
    let now = T0 + SECOND;
    for n in 1..=MAX_DOWNLOADS {
        let download = counted(&store, &link.token_hash, now).await;
        assert_eq!((download.count, download.max_downloads), (n, MAX_DOWNLOADS));
        if n == 1 {
            assert_eq!(download.link_id, link.id);
            assert_eq!(download.partner_id, e.partner_id);
            assert_eq!(download.customer_tenant_id, e.customer_tenant_id);
            assert_eq!(download.subscription_id, e.subscription_id);
            assert_eq!(download.product_id, e.product_id);
            assert_eq!(download.selection, sel);
        }
    }
    let state = refused(&store, &link.token_hash, now).await;
    let used_up = LinkState {
        expires_at: link.expires_at,
        downloads: MAX_DOWNLOADS,
        max_downloads: MAX_DOWNLOADS,
        revoked: false,
    };
    assert_eq!(state, used_up, "on {}", test.backend());
    assert_eq!(link_status(state, now), Err(Dead::UsedUp));
    // With no working link left, issue makes a new one.
    let renewed = issue(&store, &e, &sel, now, &new_link(now)).await.unwrap();
    assert!(renewed.link_is_new);
    test.remove().await;
}

#[tokio::test]
async fn an_expired_link_is_refused_as_expired() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let link = new_link(T0);
    issue(&store, &e, &selection("2022", "en-US"), T0, &link)
        .await
        .unwrap();
    counted(&store, &link.token_hash, link.expires_at - 1).await;
    let state = refused(&store, &link.token_hash, link.expires_at).await;
    assert_eq!(state.downloads, 1, "on {}", test.backend());
    assert!(!state.revoked);
    assert_eq!(link_status(state, link.expires_at), Err(Dead::Expired));
    test.remove().await;
}

#[tokio::test]
async fn a_revoked_link_is_refused_as_revoked() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let link = new_link(T0);
    issue(&store, &e, &selection("2022", "en-US"), T0, &link)
        .await
        .unwrap();
    let revoked = store
        .revoke(e.partner_id, e.subscription_id, T0 + SECOND)
        .await;
    assert_eq!(revoked.unwrap(), Some(1));
    let state = refused(&store, &link.token_hash, T0 + DAY).await;
    assert!(state.revoked, "on {}", test.backend());
    assert_eq!(state.downloads, 0);
    assert_eq!(link_status(state, T0 + DAY), Err(Dead::Revoked));
    test.remove().await;
}

#[tokio::test]
async fn an_unknown_token_hash_is_unknown() {
    let (test, store) = setup().await;
    let redeemed = redeem(&store, "no-such-hash", T0).await;
    assert!(
        matches!(redeemed, LinkCount::Unknown),
        "{redeemed:?} on {}",
        test.backend()
    );
    test.remove().await;
}

#[tokio::test]
async fn a_group_counts_each_download_with_its_messages_in_one_commit_in_request_order() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    let link = new_link(T0);
    issue(&store, &e, &selection("2022", "en-US"), T0, &link)
        .await
        .unwrap();
    let before = outbox_rows(&test.db).await;
    let now = T0 + SECOND;
    let requests = vec![
        (link.token_hash.clone(), now),
        ("no-such-hash".to_owned(), now),
        (link.token_hash.clone(), now),
    ];
    let outcomes = store
        .redeem_all(&requests, |download, index| {
            assert_ne!(index, 1, "no message for an unknown link");
            assert_eq!(download.link_id, link.id);
            vec![message()]
        })
        .await
        .unwrap();
    let counts: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            LinkCount::Counted(d) => format!("counted {}", d.count),
            LinkCount::Refused(_) => "refused".to_owned(),
            LinkCount::Unknown => "unknown".to_owned(),
            LinkCount::Failed(error) => format!("failed: {error}"),
        })
        .collect();
    assert_eq!(
        counts,
        ["counted 1", "unknown", "counted 2"],
        "on {}",
        test.backend()
    );
    assert_eq!(outbox_rows(&test.db).await, before + 2);

    // One link named 60 times in a group: the 48 downloads it has left are
    // counted, in order, and the rest refused with its used-up state.
    let many = vec![(link.token_hash.clone(), now); 60];
    let outcomes = store.redeem_all(&many, |_, _| Vec::new()).await.unwrap();
    let counts: Vec<i32> = outcomes
        .iter()
        .filter_map(|o| match o {
            LinkCount::Counted(d) => Some(d.count),
            _ => None,
        })
        .collect();
    assert_eq!(
        counts,
        (3..=MAX_DOWNLOADS).collect::<Vec<_>>(),
        "on {}",
        test.backend()
    );
    assert!(
        outcomes[48..]
            .iter()
            .all(|o| matches!(o, LinkCount::Refused(state) if state.downloads == MAX_DOWNLOADS)),
        "on {}",
        test.backend()
    );
    test.remove().await;
}

#[tokio::test]
async fn a_malformed_stored_id_reads_as_corrupt() {
    let (test, store) = setup().await;
    let e = any_entitlement();
    provision(&store, &e).await;
    const SQL: &str = "UPDATE entitlements SET order_id = 'not-a-uuid' WHERE subscription_id = $1";
    let id = e.subscription_id.to_string();
    csp_store::on_db!(&test.db, pool => sqlx::query(SQL).bind(id.clone()).execute(pool).await.map(drop))
        .unwrap();
    let read = store.entitlement(e.partner_id, e.subscription_id).await;
    assert!(
        matches!(&read, Err(StoreError::Corrupt { column: "order_id", value }) if value == "not-a-uuid"),
        "{read:?} on {}",
        test.backend()
    );
    let listed = store
        .entitlements_of(e.partner_id, e.customer_tenant_id)
        .await;
    assert!(
        matches!(listed, Err(StoreError::Corrupt { .. })),
        "{listed:?}"
    );
    test.remove().await;
}

#[tokio::test]
async fn a_group_of_distinct_links_counts_those_that_work_and_writes_their_messages_in_order() {
    let (test, store) = setup().await;
    let working = any_entitlement();
    provision(&store, &working).await;
    let (a, b) = (new_link(T0), new_link(T0));
    issue(&store, &working, &selection("2022", "en-US"), T0, &a)
        .await
        .unwrap();
    issue(&store, &working, &selection("2019", "en-US"), T0, &b)
        .await
        .unwrap();
    let cancelled = any_entitlement();
    provision(&store, &cancelled).await;
    let c = new_link(T0);
    issue(&store, &cancelled, &selection("2022", "en-US"), T0, &c)
        .await
        .unwrap();
    store
        .revoke(cancelled.partner_id, cancelled.subscription_id, T0 + SECOND)
        .await
        .unwrap();
    let before = outbox_rows(&test.db).await;

    let now = T0 + 2 * SECOND;
    let requests = vec![
        (b.token_hash.clone(), now),
        ("no-such-hash".to_owned(), now),
        (a.token_hash.clone(), now),
        (c.token_hash.clone(), now),
    ];
    let outcomes = store
        .redeem_all(&requests, |download, index| {
            assert!(
                index == 0 || index == 2,
                "a message only for a counted link"
            );
            vec![Message {
                event_id: format!("event-{index}-{}", download.count),
                ..message()
            }]
        })
        .await
        .unwrap();
    let seen: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            LinkCount::Counted(d) => format!("counted {} of {}", d.count, d.link_id),
            LinkCount::Refused(state) => format!("refused, revoked: {}", state.revoked),
            LinkCount::Unknown => "unknown".to_owned(),
            LinkCount::Failed(error) => format!("failed: {error}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            format!("counted 1 of {}", b.id),
            "unknown".to_owned(),
            format!("counted 1 of {}", a.id),
            "refused, revoked: true".to_owned(),
        ],
        "on {}",
        test.backend()
    );
    assert_eq!(outbox_rows(&test.db).await, before + 2);
    let written: Vec<String> = csp_store::on_db!(&test.db, pool => sqlx::query_scalar(
        "SELECT event_id FROM outbox WHERE event_id LIKE 'event-%' ORDER BY seq"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(written, ["event-0-1", "event-2-1"], "on {}", test.backend());

    // Again: each link's second download, the revoked one still refused.
    let outcomes = store
        .redeem_all(&requests, |_, _| Vec::new())
        .await
        .unwrap();
    let counts: Vec<Option<i32>> = outcomes
        .iter()
        .map(|o| match o {
            LinkCount::Counted(d) => Some(d.count),
            _ => None,
        })
        .collect();
    assert_eq!(
        counts,
        [Some(2), None, Some(2), None],
        "on {}",
        test.backend()
    );
    test.remove().await;
}

/// Two stores on one database (two replicas) and two links of one
/// entitlement, issued by the first.
struct TwoReplicas {
    test: TestDb,
    a: LicensingStore,
    b: LicensingStore,
    e: Entitlement,
    x: NewLink,
    y: NewLink,
}

async fn two_replicas_and_two_links() -> TwoReplicas {
    let (test, a) = setup().await;
    let b = LicensingStore::new(test.db.clone());
    let e = any_entitlement();
    provision(&a, &e).await;
    let (x, y) = (new_link(T0), new_link(T0));
    for (link, version) in [(&x, "2022"), (&y, "2019")] {
        issue(&a, &e, &selection(version, "en-US"), T0, link)
            .await
            .unwrap();
    }
    TwoReplicas {
        test,
        a,
        b,
        e,
        x,
        y,
    }
}

/// Messages whose event id names `prefix`, the request and the count.
fn named(prefix: &str) -> impl Fn(&Download, usize) -> Vec<Message> + '_ {
    move |download, index| {
        vec![Message {
            event_id: format!("{prefix}-{index}-{}", download.count),
            ..message()
        }]
    }
}

/// The event ids in the outbox that start with `prefix`, sorted.
async fn event_ids_starting(db: &Db, prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = csp_store::on_db!(db, pool => sqlx::query_scalar(
        "SELECT event_id FROM outbox WHERE event_id LIKE $1"
    )
    .bind(format!("{prefix}%"))
    .fetch_all(pool)
    .await)
    .unwrap();
    ids.sort();
    ids
}

/// Two replicas (two stores on one database) count the same links in turn.
/// On PostgreSQL a store counts links it counted before in one statement,
/// at the count it remembers; a count the other replica moved on sends that
/// link the longer way. Either way each download is counted once, at the
/// right number, with its messages written once.
#[tokio::test]
async fn replicas_counting_the_same_links_in_turn_count_each_download_once() {
    let TwoReplicas {
        test,
        a,
        b,
        e,
        x,
        y,
    } = two_replicas_and_two_links().await;
    let now = T0 + SECOND;
    let both = vec![(x.token_hash.clone(), now), (y.token_hash.clone(), now)];
    // Each download's messages name the replica, the request and the count.
    async fn redeem_named(
        store: &LicensingStore,
        name: &str,
        requests: &[(String, Micros)],
    ) -> Vec<Option<i32>> {
        let prefix = format!("replica-{name}");
        store
            .redeem_all(requests, named(&prefix))
            .await
            .unwrap()
            .iter()
            .map(|o| match o {
                LinkCount::Counted(d) => Some(d.count),
                _ => None,
            })
            .collect()
    }
    let backend = test.backend();
    assert_eq!(
        redeem_named(&a, "a1", &both).await,
        [Some(1), Some(1)],
        "on {backend}"
    );
    assert_eq!(
        redeem_named(&b, "b1", &both[..1]).await,
        [Some(2)],
        "on {backend}"
    );
    // a remembers x at 1, but b counted it since.
    assert_eq!(
        redeem_named(&a, "a2", &both).await,
        [Some(3), Some(2)],
        "on {backend}"
    );
    assert_eq!(
        redeem_named(&a, "a3", &both).await,
        [Some(4), Some(3)],
        "on {backend}"
    );
    // a2 counted y in one statement and x the longer way, a3 both in one.
    let expected_one_statement = if matches!(test.db, Db::Postgres(_)) {
        3
    } else {
        0
    };
    assert_eq!(
        a.one_statement_downloads(),
        expected_one_statement,
        "on {backend}"
    );
    assert_eq!(
        redeem_named(&b, "b2", &both).await,
        [Some(5), Some(4)],
        "on {backend}"
    );

    let written = event_ids_starting(&test.db, "replica-").await;
    assert_eq!(
        written,
        [
            "a1-0-1", "a1-1-1", "a2-0-3", "a2-1-2", "a3-0-4", "a3-1-3", "b1-0-2", "b2-0-5",
            "b2-1-4"
        ]
        .map(|id| format!("replica-{id}")),
        "on {backend}"
    );
    for (link, downloads) in [(&x, 5), (&y, 4)] {
        let state = a.link_state(&link.token_hash).await.unwrap().unwrap();
        assert_eq!(state.downloads, downloads, "on {backend}");
    }

    // Revoked, both links are refused, by the replica that remembers them
    // too, and nothing more is written.
    a.revoke(e.partner_id, e.subscription_id, now + SECOND)
        .await
        .unwrap()
        .unwrap();
    let rows_after_revoking = outbox_rows(&test.db).await;
    for store in [&a, &b, &a] {
        let outcomes = store
            .redeem_all(&both, |_, _| vec![message()])
            .await
            .unwrap();
        for outcome in outcomes {
            assert!(
                matches!(outcome, LinkCount::Refused(LinkState { revoked: true, downloads, .. }) if downloads >= 4),
                "on {backend}: {outcome:?}"
            );
        }
    }
    assert_eq!(
        outbox_rows(&test.db).await,
        rows_after_revoking,
        "on {backend}"
    );
    test.remove().await;
}

/// When the transaction after a one-statement count fails, only the links
/// it held fail: the downloads the statement counted are answered (and
/// recorded) once, and a failed link is neither counted nor recorded. On
/// SQLite, where the whole group is one transaction, the group fails and
/// writes nothing.
#[tokio::test]
async fn a_failure_after_a_one_statement_count_fails_only_the_links_it_held() {
    let TwoReplicas {
        test, a, b, x, y, ..
    } = two_replicas_and_two_links().await;
    let now = T0 + SECOND;
    let both = vec![(x.token_hash.clone(), now), (y.token_hash.clone(), now)];
    a.redeem_all(&both, named("failing")).await.unwrap();
    // b moves x on, so a's statement leaves x to its transaction, which a
    // trigger makes fail.
    counted(&b, &x.token_hash, now).await;
    let refuse = match &test.db {
        Db::Postgres(_) => vec![
            format!(
                "CREATE FUNCTION refuse_link() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.token_hash = '{}' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$",
                x.token_hash
            ),
            "CREATE TRIGGER refuse_link BEFORE UPDATE ON download_links FOR EACH ROW EXECUTE FUNCTION refuse_link()"
                .to_owned(),
        ],
        Db::Sqlite(_) => vec![format!(
            "CREATE TRIGGER refuse_link BEFORE UPDATE ON download_links WHEN NEW.token_hash = '{}' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            x.token_hash
        )],
    };
    for sql in refuse {
        csp_store::on_db!(&test.db, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(drop))
            .unwrap();
    }
    let backend = test.backend();
    let outcomes = a.redeem_all(&both, named("failing")).await;
    match &test.db {
        Db::Postgres(_) => {
            let outcomes = outcomes.unwrap();
            assert!(
                matches!(&outcomes[0], LinkCount::Failed(_)),
                "{:?}",
                outcomes[0]
            );
            assert!(
                matches!(&outcomes[1], LinkCount::Counted(d) if d.count == 2),
                "{:?}",
                outcomes[1]
            );
            assert_eq!(
                event_ids_starting(&test.db, "failing-").await,
                ["failing-0-1", "failing-1-1", "failing-1-2"]
            );
        }
        Db::Sqlite(_) => {
            assert!(outcomes.is_err(), "on {backend}");
            assert_eq!(
                event_ids_starting(&test.db, "failing-").await,
                ["failing-0-1", "failing-1-1"]
            );
        }
    }
    for (link, downloads) in [(&x, 2), (&y, if backend == "sqlite" { 1 } else { 2 })] {
        let state = a.link_state(&link.token_hash).await.unwrap().unwrap();
        assert_eq!(state.downloads, downloads, "on {backend}");
    }
    test.remove().await;
}
