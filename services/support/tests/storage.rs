//! The support storage contract: a ticket round-trips typed with its
//! attachments and outbox messages and stays its partner's; a partner's
//! request id is unique; lists are newest first, filtered, and paged by the
//! (created_at, id) cursor; comments, closing, the refund steps the workflow
//! runs and the once-only end of a refund behave as the use cases rely on;
//! an unknown stored state is an error, never a default.
//!
//! Runs on SQLite, or on PostgreSQL when CSP_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_kit::clock::{Micros, SECOND};
use csp_kit::ids::{PartnerId, RequestId, SubscriptionId, TicketId};
use csp_store::db::Db;
use csp_store::outbox::{self, Message};
use csp_store::testing::TestDb;
use csp_store::{StoreError, StoreResult};
use csp_support::domain::{
    self, Attachment, AttachmentQuota, Comment, Impact, IssueType, RefundOutcome, Step, StepResult,
    StepState, Ticket, TicketStatus, Usage,
};
use csp_support::storage::{Inserted, MIGRATIONS, SupportStore, TICKET_REQUEST_KEY};

const T0: Micros = 1_780_000_000 * SECOND;
const QUOTA: AttachmentQuota = AttachmentQuota::DEFAULT;

async fn open() -> (TestDb, SupportStore) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = SupportStore::new(test.db.clone());
    (test, store)
}

fn ticket(partner: PartnerId, issue_type: IssueType, status: TicketStatus, at: Micros) -> Ticket {
    Ticket {
        id: TicketId::new(),
        partner_id: partner,
        issue_type,
        impact: Impact::Moderate,
        title: "Cannot download".to_owned(),
        description: "The ISO stops at 40%".to_owned(),
        contact_name: "Ada".to_owned(),
        contact_email: "ada@contoso.com".to_owned(),
        contact_phone: "+14255550100".to_owned(),
        status,
        refund_customer_tenant_id: None,
        refund_customer_domain_name: None,
        refund_order_id: None,
        refund_subscription_id: None,
        refund_reason: None,
        refund_currency_code: None,
        refund_minor_unit_digits: None,
        refund_requested_minor: None,
        refund_refundable_minor: None,
        refund_deadline: None,
        refunded_minor: None,
        rejection_reason: None,
        request_id: RequestId::new(),
        request_fingerprint: "fingerprint".to_owned(),
        created_by_user_id: "user-1".to_owned(),
        created_at: at,
        updated_at: at,
    }
}

fn refund_ticket(partner: PartnerId, at: Micros) -> Ticket {
    Ticket {
        refund_customer_tenant_id: Some(uuid::Uuid::new_v4().to_string()),
        refund_order_id: Some(uuid::Uuid::new_v4().to_string()),
        refund_reason: Some("bought by mistake".to_owned()),
        refund_currency_code: Some("USD".to_owned()),
        refund_minor_unit_digits: Some(2),
        refund_requested_minor: Some(15_000),
        ..ticket(
            partner,
            IssueType::PurchaseRefund,
            TicketStatus::Submitted,
            at,
        )
    }
}

/// An attachment whose bytes are in the object store (the row names it).
fn attachment(file_name: &str, content_type: &str, content: &[u8]) -> Attachment {
    let id = uuid::Uuid::new_v4().to_string();
    Attachment {
        object_key: Some(format!("attachments/p/t/{id}")),
        id,
        file_name: file_name.to_owned(),
        content_type: content_type.to_owned(),
        size_bytes: content.len() as i64,
        sha256: domain::sha256(content),
        content: Default::default(),
    }
}

fn step(t: &Ticket, position: i32, state: StepState, refund_minor: i64) -> Step {
    Step {
        ticket_id: t.id,
        position,
        partner_id: t.partner_id,
        subscription_id: SubscriptionId::new(),
        refund_minor,
        state,
        attempts: 0,
    }
}

fn message(t: &Ticket, event: &str) -> Message {
    Message {
        destination: outbox::AUDIT,
        event_id: format!("{}-{event}", t.id),
        stream: t.id.to_string(),
        payload: event.as_bytes().to_vec(),
    }
}

/// Inserts a ticket alone, at its creation time.
async fn insert(store: &SupportStore, t: &Ticket) {
    store
        .insert(t, Vec::new(), &[], &QUOTA, &[], &[], t.created_at)
        .await
        .unwrap();
}

async fn outbox_count(db: &Db) -> i64 {
    outbox::backlog(db)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .sum()
}

type OutboxRow = (String, String, String, Vec<u8>);

async fn outbox_rows(db: &Db) -> Vec<OutboxRow> {
    const SQL: &str = "SELECT destination, event_id, stream, payload FROM outbox ORDER BY seq";
    csp_store::on_db!(db, pool => sqlx::query_as::<_, OutboxRow>(SQL).fetch_all(pool).await)
        .unwrap()
}

/// The ids of `tickets` that `keep` keeps, newest first (ties by id, newest
/// id first).
fn newest_first(tickets: &[Ticket], keep: impl Fn(&Ticket) -> bool) -> Vec<TicketId> {
    let mut kept: Vec<&Ticket> = tickets.iter().filter(|t| keep(t)).collect();
    kept.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id.to_string())));
    kept.iter().map(|t| t.id).collect()
}

/// Every page of a partner's list, `limit` at a time, following the cursor.
async fn all_pages(
    store: &SupportStore,
    partner: PartnerId,
    status: Option<TicketStatus>,
    limit: u32,
) -> Vec<TicketId> {
    let mut seen = Vec::new();
    let mut cursor: Option<(Micros, String)> = None;
    loop {
        let before = cursor.as_ref().map(|(at, id)| (*at, id.as_str()));
        let page = store
            .list(partner, status, None, before, limit)
            .await
            .unwrap();
        assert!(page.len() <= limit as usize, "a page is at most its limit");
        let Some(last) = page.last() else { break };
        cursor = Some((last.created_at, last.id.to_string()));
        seen.extend(page.iter().map(|t| t.id));
    }
    seen
}

fn assert_corrupt<T: std::fmt::Debug>(read: StoreResult<T>, column: &str, value: &str) {
    match read {
        Err(StoreError::Corrupt {
            column: c,
            value: v,
        }) => {
            assert_eq!((c, v.as_str()), (column, value));
        }
        other => panic!("expected a Corrupt {column}, got {other:?}"),
    }
}

/// Stores `status` on ticket `id` past the CHECK constraint of the column,
/// as a later version whose migration widened it could have: SQLite skips
/// CHECK constraints on one connection, PostgreSQL drops the constraint.
async fn store_unknown_status(db: &Db, id: TicketId, status: &str) {
    const UPDATE: &str = "UPDATE tickets SET status = $1 WHERE id = $2";
    let updated = match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut *conn)
                .await
                .unwrap();
            let updated = sqlx::query(UPDATE)
                .bind(status)
                .bind(id.to_string())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected());
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
            updated.unwrap()
        }
        Db::Postgres(pool) => {
            sqlx::query("ALTER TABLE tickets DROP CONSTRAINT tickets_status_check")
                .execute(pool)
                .await
                .unwrap();
            sqlx::query(UPDATE)
                .bind(status)
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
                .unwrap()
        }
    };
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn attachments_kept_in_the_database_before_are_found_read_and_moved() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    store
        .insert(&t, vec![], &[], &QUOTA, &[], &[], T0)
        .await
        .unwrap();
    // A row as the version before wrote it: the bytes in the database.
    let bytes = b"written before attachments moved".to_vec();
    const SQL: &str = "INSERT INTO ticket_attachments (id, ticket_id, position, file_name, content_type, \
                       size_bytes, sha256, content) VALUES ($1, $2, 0, 'old.txt', 'text/plain', $3, $4, $5)";
    csp_store::on_db!(store.db(), pool => sqlx::query(SQL)
        .bind("old-1")
        .bind(t.id.to_string())
        .bind(bytes.len() as i64)
        .bind(domain::sha256(&bytes))
        .bind(&bytes)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    let old = store.attachment(t.id, "old-1").await.unwrap().unwrap();
    assert_eq!(old.object_key, None);
    assert_eq!(
        &old.content[..],
        &bytes[..],
        "still served from the database"
    );
    let waiting = store.attachments_in_database(10).await.unwrap();
    assert_eq!(
        waiting,
        vec![(
            "old-1".to_owned(),
            partner.to_string(),
            t.id.to_string(),
            bytes.clone()
        )]
    );
    store
        .attachment_moved("old-1", "attachments/p/t/old-1")
        .await
        .unwrap();
    let moved = store.attachment(t.id, "old-1").await.unwrap().unwrap();
    assert_eq!(moved.object_key.as_deref(), Some("attachments/p/t/old-1"));
    assert!(moved.content.is_empty());
    assert!(store.attachments_in_database(10).await.unwrap().is_empty());
    assert_eq!(
        moved.size_bytes,
        bytes.len() as i64,
        "its size stays counted"
    );
    test.remove().await;
}

#[tokio::test]
async fn a_ticket_round_trips_typed_with_its_attachments_and_outbox_messages() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let mut t = refund_ticket(partner, T0);
    t.refund_customer_domain_name = Some("contoso.onmicrosoft.com".to_owned());
    t.refund_subscription_id = Some(SubscriptionId::new().to_string());
    t.refunded_minor = Some(0);
    t.rejection_reason = Some("not yet".to_owned());
    t.updated_at = T0 + SECOND;
    let files = vec![
        attachment("error.txt", "text/plain", b"stops at 40%"),
        attachment("log.csv", "text/csv", b"time,event\n1,start\n"),
    ];
    let messages = vec![message(&t, "submitted"), message(&t, "noted")];
    store
        .insert(&t, files.to_vec(), &[], &QUOTA, &[], &messages, T0)
        .await
        .unwrap();

    let backend = test.backend();
    let by_id = store.ticket(partner, t.id).await.unwrap();
    assert_eq!(by_id.as_ref(), Some(&t), "on {backend}");
    let by_request = store
        .ticket_by_request(partner, t.request_id, &t.request_id.to_string())
        .await
        .unwrap();
    assert_eq!(by_request.as_ref(), Some(&t), "on {backend}");

    let listed: Vec<Attachment> = files
        .iter()
        .map(|a| Attachment {
            content: Default::default(),
            ..a.clone()
        })
        .collect();
    assert_eq!(
        store.attachments(t.id).await.unwrap(),
        listed,
        "listed without content"
    );
    for a in &files {
        let one = store.attachment(t.id, &a.id).await.unwrap();
        assert_eq!(
            one.as_ref(),
            Some(a),
            "one attachment names its object, and no bytes"
        );
    }
    assert_eq!(
        store.attachment(t.id, "no-such-attachment").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .attachment(TicketId::new(), &files[0].id)
            .await
            .unwrap(),
        None
    );

    let expected: Vec<OutboxRow> = messages
        .iter()
        .map(|m| {
            (
                m.destination.to_owned(),
                m.event_id.clone(),
                m.stream.clone(),
                m.payload.clone(),
            )
        })
        .collect();
    assert_eq!(outbox_rows(&test.db).await, expected);
    test.remove().await;
}

#[tokio::test]
async fn another_partners_ticket_is_not_found() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    insert(&store, &t).await;

    let stranger = PartnerId::new();
    assert_eq!(store.ticket(stranger, t.id).await.unwrap(), None);
    assert_eq!(
        store
            .ticket_by_request(stranger, t.request_id, &t.request_id.to_string())
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .list(stranger, None, None, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.ticket(partner, TicketId::new()).await.unwrap(), None);
    test.remove().await;
}

#[tokio::test]
async fn the_same_request_id_twice_for_one_partner_conflicts_and_writes_nothing() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let first = ticket(partner, IssueType::Billing, TicketStatus::Submitted, T0);
    store
        .insert(
            &first,
            Vec::new(),
            &[],
            &QUOTA,
            &[],
            &[message(&first, "filed")],
            T0,
        )
        .await
        .unwrap();

    let again = Ticket {
        request_id: first.request_id,
        ..ticket(partner, IssueType::Billing, TicketStatus::Submitted, T0 + 1)
    };
    let files = [attachment("retry.txt", "text/plain", b"again")];
    let error = store
        .insert(
            &again,
            files.to_vec(),
            &[],
            &QUOTA,
            &[],
            &[message(&again, "filed")],
            T0 + 1,
        )
        .await
        .unwrap_err();
    assert!(
        error.is_unique(TICKET_REQUEST_KEY, "request_id"),
        "{error:?} on {}",
        test.backend()
    );
    assert_eq!(store.ticket(partner, again.id).await.unwrap(), None);
    assert!(store.attachments(again.id).await.unwrap().is_empty());
    assert_eq!(
        outbox_count(&test.db).await,
        1,
        "the refused insert wrote no message"
    );
    let found = store
        .ticket_by_request(partner, first.request_id, &first.request_id.to_string())
        .await
        .unwrap();
    assert_eq!(found, Some(first.clone()));

    // Another unique key is not mistaken for the request key.
    let same_id = Ticket {
        request_id: RequestId::new(),
        ..first.clone()
    };
    let error = store
        .insert(&same_id, Vec::new(), &[], &QUOTA, &[], &[], T0)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert!(
        !error.is_unique(TICKET_REQUEST_KEY, "request_id"),
        "{error:?}"
    );

    // A request id is its partner's own.
    let elsewhere = Ticket {
        request_id: first.request_id,
        ..ticket(
            PartnerId::new(),
            IssueType::Billing,
            TicketStatus::Submitted,
            T0,
        )
    };
    insert(&store, &elsewhere).await;
    test.remove().await;
}

#[tokio::test]
async fn list_is_newest_first_filters_by_status_and_issue_type_and_pages_by_cursor() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let specs = [
        (IssueType::Technical, TicketStatus::Submitted, T0 + 1),
        (IssueType::Billing, TicketStatus::Closed, T0 + 2),
        (IssueType::Technical, TicketStatus::Resolved, T0 + 3),
        (IssueType::PurchaseRefund, TicketStatus::Submitted, T0 + 3),
        (IssueType::Other, TicketStatus::Submitted, T0 + 4),
        (IssueType::Technical, TicketStatus::Submitted, T0 + 4),
        (IssueType::Billing, TicketStatus::Rejected, T0 + 4),
    ];
    let mut tickets = Vec::new();
    for (issue_type, status, at) in specs {
        let t = ticket(partner, issue_type, status, at);
        insert(&store, &t).await;
        tickets.push(t);
    }
    let newest_elsewhere = ticket(
        PartnerId::new(),
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 9,
    );
    insert(&store, &newest_elsewhere).await;

    let ids = |page: Vec<Ticket>| page.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let all = store.list(partner, None, None, None, 100).await.unwrap();
    assert_eq!(ids(all), newest_first(&tickets, |_| true));
    let submitted = Some(TicketStatus::Submitted);
    let technical = Some(IssueType::Technical);
    let page = store
        .list(partner, submitted, None, None, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(page),
        newest_first(&tickets, |t| t.status == TicketStatus::Submitted)
    );
    let page = store
        .list(partner, None, technical, None, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(page),
        newest_first(&tickets, |t| t.issue_type == IssueType::Technical)
    );
    let page = store
        .list(partner, submitted, technical, None, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(page),
        newest_first(&tickets, |t| {
            t.status == TicketStatus::Submitted && t.issue_type == IssueType::Technical
        })
    );

    for limit in [1, 2, 3, 7] {
        let paged = all_pages(&store, partner, None, limit).await;
        assert_eq!(paged, newest_first(&tickets, |_| true), "pages of {limit}");
    }
    let paged = all_pages(&store, partner, submitted, 1).await;
    assert_eq!(
        paged,
        newest_first(&tickets, |t| t.status == TicketStatus::Submitted)
    );
    test.remove().await;
}

#[tokio::test]
async fn comments_come_back_oldest_first_and_touch_the_ticket() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    let other = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    insert(&store, &t).await;
    insert(&store, &other).await;
    assert!(store.comments(t.id).await.unwrap().is_empty());

    let written = [
        ("user-1", "first", T0 + 10),
        ("user-2", "second", T0 + 20),
        ("user-1", "third", T0 + 30),
    ];
    for (author, text, at) in written {
        store.add_comment(t.id, author, text, at).await.unwrap();
    }
    store
        .add_comment(other.id, "user-3", "elsewhere", T0 + 40)
        .await
        .unwrap();

    let expected: Vec<Comment> = written
        .iter()
        .map(|&(author, text, at)| Comment {
            author_user_id: author.to_owned(),
            text: text.to_owned(),
            created_at: at,
        })
        .collect();
    assert_eq!(store.comments(t.id).await.unwrap(), expected);
    let touched = store.ticket(partner, t.id).await.unwrap().unwrap();
    assert_eq!(
        touched,
        Ticket {
            updated_at: T0 + 30,
            ..t.clone()
        }
    );
    test.remove().await;
}

#[tokio::test]
async fn close_sets_the_ticket_closed() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Billing, TicketStatus::Resolved, T0);
    insert(&store, &t).await;
    store.close(t.id, T0 + 50).await.unwrap();
    let closed = store.ticket(partner, t.id).await.unwrap().unwrap();
    let expected = Ticket {
        status: TicketStatus::Closed,
        updated_at: T0 + 50,
        ..t.clone()
    };
    assert_eq!(closed, expected);
    test.remove().await;
}

#[tokio::test]
async fn due_steps_are_the_pending_or_cancelled_steps_whose_time_has_come() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    let steps = vec![
        step(&t, 0, StepState::Pending, 100),
        step(&t, 1, StepState::Cancelled, 200),
        step(&t, 2, StepState::Done, 300),
        step(&t, 3, StepState::Failed, 400),
    ];
    store
        .insert(&t, Vec::new(), &[], &QUOTA, &steps, &[], T0 + 10)
        .await
        .unwrap();
    let earlier = refund_ticket(PartnerId::new(), T0);
    let early = vec![step(&earlier, 0, StepState::Pending, 500)];
    store
        .insert(&earlier, Vec::new(), &[], &QUOTA, &early, &[], T0 + 5)
        .await
        .unwrap();

    assert!(store.due_steps(T0 + 4, 50).await.unwrap().is_empty());
    assert_eq!(store.due_steps(T0 + 9, 50).await.unwrap(), early);
    let due = store.due_steps(T0 + 10, 50).await.unwrap();
    assert_eq!(
        due,
        vec![early[0].clone(), steps[0].clone(), steps[1].clone()],
        "oldest due first"
    );
    assert_eq!(
        store.due_steps(T0 + 10, 2).await.unwrap(),
        due[..2].to_vec()
    );
    test.remove().await;
}

#[tokio::test]
async fn retry_step_counts_the_attempt_and_postpones_the_step() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    let steps = vec![
        step(&t, 0, StepState::Pending, 100),
        step(&t, 1, StepState::Cancelled, 200),
    ];
    store
        .insert(&t, Vec::new(), &[], &QUOTA, &steps, &[], T0)
        .await
        .unwrap();

    let later = T0 + 60 * SECOND;
    store
        .retry_step(&steps[0], later, "ordering is unavailable")
        .await
        .unwrap();
    assert_eq!(
        store.due_steps(later - 1, 50).await.unwrap(),
        vec![steps[1].clone()]
    );
    let due = store.due_steps(later, 50).await.unwrap();
    let retried = Step {
        attempts: 1,
        ..steps[0].clone()
    };
    assert_eq!(due, vec![steps[1].clone(), retried.clone()]);

    store
        .retry_step(&retried, later + 60 * SECOND, "still unavailable")
        .await
        .unwrap();
    let due = store.due_steps(later + 60 * SECOND, 50).await.unwrap();
    assert_eq!(
        due[1],
        Step {
            attempts: 2,
            ..steps[0].clone()
        }
    );
    let results = store.steps_of(t.id).await.unwrap();
    assert_eq!(results[0].last_error.as_deref(), Some("still unavailable"));
    assert_eq!(
        results[0].state,
        StepState::Pending,
        "a retry does not move the step on"
    );
    test.remove().await;
}

#[tokio::test]
async fn set_step_moves_a_step_on_with_its_error() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    let steps = vec![
        step(&t, 0, StepState::Pending, 100),
        step(&t, 1, StepState::Pending, 200),
    ];
    store
        .insert(&t, Vec::new(), &[], &QUOTA, &steps, &[], T0)
        .await
        .unwrap();
    store
        .retry_step(&steps[0], T0, "ordering is unavailable")
        .await
        .unwrap();

    store
        .set_step(&steps[0], StepState::Cancelled, None)
        .await
        .unwrap();
    let due = store.due_steps(T0, 50).await.unwrap();
    let cancelled = Step {
        state: StepState::Cancelled,
        attempts: 1,
        ..steps[0].clone()
    };
    assert_eq!(due, vec![cancelled, steps[1].clone()]);

    store
        .set_step(&steps[0], StepState::Done, None)
        .await
        .unwrap();
    let reason = "the cancellation window has closed";
    store
        .set_step(&steps[1], StepState::Failed, Some(reason))
        .await
        .unwrap();
    assert!(
        store.due_steps(T0, 50).await.unwrap().is_empty(),
        "done and failed steps are never due"
    );
    let results = store.steps_of(t.id).await.unwrap();
    assert_eq!(
        results,
        vec![
            StepResult {
                state: StepState::Done,
                refund_minor: 100,
                last_error: None
            },
            StepResult {
                state: StepState::Failed,
                refund_minor: 200,
                last_error: Some(reason.to_owned())
            },
        ]
    );
    test.remove().await;
}

#[tokio::test]
async fn steps_of_returns_a_tickets_step_results_in_position_order() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    let steps = vec![
        step(&t, 2, StepState::Failed, 300),
        step(&t, 0, StepState::Pending, 100),
        step(&t, 1, StepState::Done, 200),
    ];
    store
        .insert(&t, Vec::new(), &[], &QUOTA, &steps, &[], T0)
        .await
        .unwrap();
    let other = refund_ticket(t.partner_id, T0);
    store
        .insert(
            &other,
            Vec::new(),
            &[],
            &QUOTA,
            &[step(&other, 0, StepState::Pending, 900)],
            &[],
            T0,
        )
        .await
        .unwrap();

    let result = |state, refund_minor| StepResult {
        state,
        refund_minor,
        last_error: None,
    };
    assert_eq!(
        store.steps_of(t.id).await.unwrap(),
        vec![
            result(StepState::Pending, 100),
            result(StepState::Done, 200),
            result(StepState::Failed, 300),
        ]
    );
    assert!(store.steps_of(TicketId::new()).await.unwrap().is_empty());
    test.remove().await;
}

#[tokio::test]
async fn finish_ends_a_submitted_ticket_once_and_writes_its_messages_once() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    insert(&store, &t).await;

    let resolved = RefundOutcome {
        status: TicketStatus::Resolved,
        refunded_minor: 150,
        rejection: None,
    };
    assert!(
        store
            .finish(t.id, &resolved, &[message(&t, "resolved")], T0 + 100)
            .await
            .unwrap()
    );
    let finished = Ticket {
        status: TicketStatus::Resolved,
        refunded_minor: Some(150),
        updated_at: T0 + 100,
        ..t.clone()
    };
    assert_eq!(
        store.ticket(t.partner_id, t.id).await.unwrap(),
        Some(finished.clone())
    );
    assert_eq!(outbox_count(&test.db).await, 1);

    let rejected = RefundOutcome {
        status: TicketStatus::Rejected,
        refunded_minor: 0,
        rejection: Some("too late".to_owned()),
    };
    let again = store
        .finish(t.id, &rejected, &[message(&t, "rejected")], T0 + 200)
        .await
        .unwrap();
    assert!(!again, "a ticket ends once");
    assert_eq!(
        store.ticket(t.partner_id, t.id).await.unwrap(),
        Some(finished)
    );
    assert_eq!(
        outbox_count(&test.db).await,
        1,
        "the second call wrote no message"
    );
    test.remove().await;
}

#[tokio::test]
async fn finish_never_ends_a_closed_ticket() {
    let (test, store) = open().await;
    let t = refund_ticket(PartnerId::new(), T0);
    insert(&store, &t).await;
    store.close(t.id, T0 + 5).await.unwrap();

    let outcome = RefundOutcome {
        status: TicketStatus::Resolved,
        refunded_minor: 150,
        rejection: None,
    };
    let ended = store
        .finish(t.id, &outcome, &[message(&t, "resolved")], T0 + 10)
        .await
        .unwrap();
    assert!(!ended);
    let stored = store.ticket(t.partner_id, t.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.refunded_minor),
        (TicketStatus::Closed, None)
    );
    assert_eq!(outbox_count(&test.db).await, 0);
    test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_status_reads_as_corrupt() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    insert(&store, &t).await;
    store_unknown_status(&test.db, t.id, "escalated").await;

    assert_corrupt(store.ticket(partner, t.id).await, "status", "escalated");
    assert_corrupt(
        store
            .ticket_by_request(partner, t.request_id, &t.request_id.to_string())
            .await,
        "status",
        "escalated",
    );
    assert_corrupt(
        store.list(partner, None, None, None, 100).await,
        "status",
        "escalated",
    );
    test.remove().await;
}

#[tokio::test]
async fn a_ticket_filed_before_ids_were_normalized_is_found_by_the_id_as_sent() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    insert(&store, &t).await;
    // Before request ids were normalized, they were stored as sent.
    let as_sent = t.request_id.to_string().to_uppercase();
    csp_store::on_db!(&test.db, pool => sqlx::query("UPDATE tickets SET request_id = $1 WHERE id = $2")
        .bind(&as_sent)
        .bind(t.id.to_string())
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    let found = store
        .ticket_by_request(partner, t.request_id, &as_sent)
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.id), Some(t.id), "on {}", test.backend());
    let not_as_sent = store
        .ticket_by_request(partner, t.request_id, &t.request_id.to_string())
        .await
        .unwrap();
    assert!(
        not_as_sent.is_none(),
        "a different spelling of the id does not find the legacy row"
    );
    test.remove().await;
}

#[tokio::test]
async fn attachments_past_a_partners_quota_are_refused_whole_and_other_partners_keep_theirs() {
    let (test, store) = open().await;
    let backend = test.backend();
    let quota = AttachmentQuota {
        files: 3,
        bytes: 100,
    };
    let partner = PartnerId::new();
    let first = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    let files = [
        attachment("a.txt", "text/plain", &[b'a'; 40]),
        attachment("b.txt", "text/plain", &[b'b'; 40]),
    ];
    let done = store
        .insert(&first, files.to_vec(), &[], &quota, &[], &[], T0)
        .await
        .unwrap();
    assert_eq!(done, Inserted::Done, "on {backend}");

    // 80 bytes kept: 30 more pass the byte quota; nothing of the ticket is stored.
    let over_bytes = ticket(
        partner,
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 1,
    );
    let big = [attachment("c.txt", "text/plain", &[b'c'; 30])];
    let refused = store
        .insert(
            &over_bytes,
            big.to_vec(),
            &[],
            &quota,
            &[],
            &[message(&over_bytes, "filed")],
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Inserted::OverQuota(Usage {
            files: 2,
            bytes: 80
        }),
        "on {backend}"
    );
    assert_eq!(store.ticket(partner, over_bytes.id).await.unwrap(), None);
    assert!(store.attachments(over_bytes.id).await.unwrap().is_empty());
    assert_eq!(
        outbox_count(&test.db).await,
        0,
        "the refused insert wrote no message"
    );

    // Exactly at the byte quota is allowed; then one more file passes the count.
    let at_quota = ticket(
        partner,
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 2,
    );
    let fits = [attachment("d.txt", "text/plain", &[b'd'; 20])];
    let done = store
        .insert(&at_quota, fits.to_vec(), &[], &quota, &[], &[], T0 + 2)
        .await
        .unwrap();
    assert_eq!(done, Inserted::Done, "on {backend}");
    let over_files = ticket(
        partner,
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 3,
    );
    let tiny = [attachment("e.txt", "text/plain", b"e")];
    let refused = store
        .insert(&over_files, tiny.to_vec(), &[], &quota, &[], &[], T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Inserted::OverQuota(Usage {
            files: 3,
            bytes: 100
        }),
        "on {backend}"
    );
    assert!(
        quota
            .admit(
                partner,
                Usage {
                    files: 3,
                    bytes: 100
                },
                Usage::of(&tiny)
            )
            .is_err(),
        "the domain rule agrees with the store"
    );

    // A ticket without attachments is never held back by the quota.
    let plain = ticket(
        partner,
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 4,
    );
    let done = store
        .insert(&plain, Vec::new(), &[], &quota, &[], &[], T0 + 4)
        .await
        .unwrap();
    assert_eq!(done, Inserted::Done);

    // Another partner's quota is its own.
    let other = ticket(
        PartnerId::new(),
        IssueType::Technical,
        TicketStatus::Submitted,
        T0 + 5,
    );
    let theirs = [
        attachment("a.txt", "text/plain", &[b'a'; 40]),
        attachment("b.txt", "text/plain", &[b'b'; 40]),
    ];
    let done = store
        .insert(&other, theirs.to_vec(), &[], &quota, &[], &[], T0 + 5)
        .await
        .unwrap();
    assert_eq!(done, Inserted::Done, "on {backend}");
    test.remove().await;
}

#[tokio::test]
async fn tickets_filed_at_once_cannot_pass_the_quota_together() {
    let (test, store) = open().await;
    let quota = AttachmentQuota {
        files: 100,
        bytes: 100,
    };
    let partner = PartnerId::new();
    let mut filings = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        filings.spawn(async move {
            let t = ticket(
                partner,
                IssueType::Technical,
                TicketStatus::Submitted,
                T0 + i,
            );
            let files = [attachment("part.txt", "text/plain", &[b'x'; 40])];
            store
                .insert(&t, files.to_vec(), &[], &quota, &[], &[], T0 + i)
                .await
        });
    }
    let outcomes = filings.join_all().await;
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Inserted::Done)))
        .count();
    assert!(
        outcomes.iter().all(|o| o.is_ok()),
        "{outcomes:?} on {}",
        test.backend()
    );
    assert_eq!(
        stored,
        2,
        "40 + 40 fit in 100 bytes, a third does not, on {}",
        test.backend()
    );
    test.remove().await;
}

#[tokio::test]
async fn an_upload_is_claimed_by_one_ticket_and_expires_unclaimed() {
    let (test, store) = open().await;
    let partner = PartnerId::new();
    let upload = |id: &str, at: Micros| csp_support::storage::Upload {
        id: id.to_owned(),
        partner_id: partner,
        object_key: format!("uploads/{partner}/{id}"),
        size_bytes: 40,
        sha256: domain::sha256(&[b'u'; 40]),
        created_at: at,
    };
    for (id, at) in [("u1", T0), ("u2", T0 + 1)] {
        assert_eq!(
            store.record_upload(&upload(id, at), &QUOTA).await.unwrap(),
            Inserted::Done
        );
    }
    assert_eq!(
        store.usage(partner).await.unwrap(),
        Usage {
            files: 2,
            bytes: 80
        },
        "uploads count toward the quota"
    );
    assert_eq!(
        store
            .uploads(partner, &["u1".into(), "nope".into()])
            .await
            .unwrap(),
        vec![upload("u1", T0)]
    );
    assert!(
        store
            .uploads(PartnerId::new(), &["u1".into()])
            .await
            .unwrap()
            .is_empty(),
        "another partner's upload is not found"
    );
    // A ticket claims u1: the row moves to the ticket, once.
    let t = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    let mut claimed = attachment("u1.pdf", "application/pdf", &[b'u'; 40]);
    claimed.id = "u1".into();
    claimed.object_key = Some(upload("u1", T0).object_key);
    assert_eq!(
        store
            .insert(
                &t,
                vec![claimed.clone()],
                &["u1".into()],
                &QUOTA,
                &[],
                &[],
                T0
            )
            .await
            .unwrap(),
        Inserted::Done
    );
    let other = ticket(partner, IssueType::Technical, TicketStatus::Submitted, T0);
    assert_eq!(
        store
            .insert(&other, vec![claimed], &["u1".into()], &QUOTA, &[], &[], T0)
            .await
            .unwrap(),
        Inserted::UploadGone("u1".into())
    );
    assert_eq!(store.ticket(partner, other.id).await.unwrap(), None);
    assert_eq!(
        store.usage(partner).await.unwrap(),
        Usage {
            files: 2,
            bytes: 80
        },
        "a claimed upload is counted once, as an attachment"
    );
    // Only u2 is left to expire, and only once it is old enough.
    assert!(store.expired_uploads(T0 + 1, 10).await.unwrap().is_empty());
    let expired = store.expired_uploads(T0 + 2, 10).await.unwrap();
    assert_eq!(expired, vec![upload("u2", T0 + 1)]);
    assert!(store.forget_upload("u2").await.unwrap());
    assert!(!store.forget_upload("u2").await.unwrap());
    assert!(!store.forget_upload("u1").await.unwrap());
    test.remove().await;
}
