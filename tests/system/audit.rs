//! The activity log through the gateway: what producers send arrives once,
//! date ranges, paging under concurrent inserts, isolation, roles, export,
//! tamper evidence, several replicas, and nothing lost while audit is down.

use std::collections::HashMap;
use std::time::Duration;

use csp_kit::roles::Role;
use csp_proto::audit::v1::audit_service_client::AuditServiceClient;
use csp_proto::audit::v1::{
    Activity, ActivityRecord, ActivityType, ExportActivityRequest, ExportFormat,
    ListActivityRequest, RecordActivitiesRequest, VerifyActivityLogRequest,
};
use csp_proto::licensing::v1::{GetKeysAndDownloadsRequest, ListSoftwareRequest};
use csp_proto::ordering::v1::{CreateCustomerRequest, OrderLineRequest, PlaceOrderRequest};
use csp_tests::{AuditInstance, Bearer, TestSystem, http};
use prost_types::Timestamp;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use uuid::Uuid;

type Audit = AuditServiceClient<InterceptedService<Channel, Bearer>>;

const DAY: i64 = 86_400;
/// The day the tests' records start: four days ago at midnight UTC, so every
/// record lies within the week the intake accepts.
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        (now / DAY - 4) * DAY
    })
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn record(partner: &str, id: &str, kind: ActivityType, seconds: i64, user: &str) -> ActivityRecord {
    ActivityRecord {
        partner_id: partner.into(),
        activity: Some(Activity {
            id: id.into(),
            r#type: kind as i32,
            occur_time: at(seconds),
            user_id: user.into(),
            user_display_name: format!("{user} name"),
            customer_tenant_id: "c1".into(),
            subscription_id: "s1".into(),
            product_id: "p1".into(),
            details: HashMap::from([("note".to_owned(), "a, \"quoted\" note".to_owned())]),
        }),
    }
}

async fn list(audit: &mut Audit, start: i64, end: i64) -> Vec<Activity> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_activity(ListActivityRequest {
                start_time: at(start),
                end_time: at(end),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.activities);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

fn produced(list: &[Activity]) -> Vec<&Activity> {
    list.iter()
        .filter(|a| {
            a.r#type != ActivityType::ActivityLogRead as i32
                && a.r#type != ActivityType::ActivityLogExported as i32
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_include_the_start_exclude_the_end_and_are_checked() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    let sent = intake
        .record_activities(RecordActivitiesRequest {
            records: vec![
                record(&partner, "a", ActivityType::KeyAccessed, base(), "ada"),
                record(
                    &partner,
                    "b",
                    ActivityType::SoftwareDownloaded,
                    base() + DAY,
                    "bob",
                ),
                record(
                    &partner,
                    "c",
                    ActivityType::KeyAccessed,
                    base() + 2 * DAY,
                    "ada",
                ),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.recorded, 3);
    // Redelivered: stored once.
    let again = intake
        .record_activities(RecordActivitiesRequest {
            records: vec![record(
                &partner,
                "a",
                ActivityType::KeyAccessed,
                base(),
                "ada",
            )],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.recorded, 0);
    // Invalid ones are rejected one by one.
    let mut bad = record(&partner, "d", ActivityType::Unspecified, base(), "x");
    bad.partner_id = "nope".into();
    let rejected = intake
        .record_activities(RecordActivitiesRequest { records: vec![bad] })
        .await
        .unwrap()
        .into_inner()
        .rejected;
    assert_eq!(rejected.len(), 1);
    // A record past a documented length is rejected alone; the rest of its
    // batch is recorded.
    let mut long = record(&partner, "e", ActivityType::KeyAccessed, base(), "x");
    if let Some(activity) = long.activity.as_mut() {
        activity.user_id = "u".repeat(10_000);
    }
    let fine = record(
        &partner,
        "f",
        ActivityType::KeyAccessed,
        base() + 3 * DAY,
        "ada",
    );
    let outcome = intake
        .record_activities(RecordActivitiesRequest {
            records: vec![long, fine],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].event_id, "e");
    assert!(
        outcome.rejected[0]
            .reason
            .starts_with("activity.user_id: at most 255 characters"),
        "{}",
        outcome.rejected[0].reason
    );

    let mut audit = system.audit(&[Role::AccountAdmin]).await;
    let ids = |list: Vec<Activity>| -> Vec<String> {
        produced(&list).iter().map(|a| a.id.clone()).collect()
    };
    assert_eq!(ids(list(&mut audit, base(), base() + DAY).await), ["a"]);
    assert_eq!(
        ids(list(&mut audit, base(), base() + DAY + 1).await),
        ["b", "a"],
        "newest first"
    );
    assert_eq!(
        ids(list(&mut audit, base() + 1, base() + 2 * DAY + 1).await),
        ["c", "b"]
    );

    // Filters.
    let by_user = audit
        .list_activity(ListActivityRequest {
            start_time: at(base()),
            end_time: at(base() + 3 * DAY),
            user_id: "ada".into(),
            r#type: ActivityType::KeyAccessed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert_eq!(
        by_user.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["c", "a"]
    );
    assert_eq!(
        by_user[0].details.get("note").unwrap(),
        "a, \"quoted\" note"
    );

    // Bad ranges name the field.
    let field = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), Code::InvalidArgument);
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect()
    };
    let status = audit
        .list_activity(ListActivityRequest {
            start_time: at(base() + 10),
            end_time: at(base()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(status), ["start_time"]);
    let status = audit
        .list_activity(ListActivityRequest {
            start_time: None,
            end_time: Some(Timestamp {
                seconds: base(),
                nanos: -5,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(status), ["start_time", "end_time"]);
    let status = audit
        .list_activity(ListActivityRequest {
            start_time: at(base()),
            end_time: at(base() + 1),
            page_size: -3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field(status), ["page_size"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_a_snapshot_while_new_events_arrive() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    let batch = |from: i64, to: i64| RecordActivitiesRequest {
        records: (from..to)
            .map(|i| {
                record(
                    &partner,
                    &format!("e{i:04}"),
                    ActivityType::KeyAccessed,
                    base() + i,
                    "u",
                )
            })
            .collect(),
    };
    intake.record_activities(batch(0, 250)).await.unwrap();
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let request = |token: String| ListActivityRequest {
        start_time: at(base() - 1000),
        end_time: at(base() + 1000),
        page_size: 100,
        page_token: token,
        r#type: ActivityType::KeyAccessed as i32,
        ..Default::default()
    };
    let first = audit
        .list_activity(request(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.activities.len(), 100);
    // New events, newer and older than the first page, arrive mid-listing.
    let mut newer = batch(250, 260);
    let mut older = batch(0, 0);
    older.records = (0..10)
        .map(|i| {
            record(
                &partner,
                &format!("old{i}"),
                ActivityType::KeyAccessed,
                base() - 500 + i,
                "u",
            )
        })
        .collect();
    newer.records.extend(older.records);
    intake.record_activities(newer).await.unwrap();

    let mut ids: Vec<String> = first.activities.iter().map(|a| a.id.clone()).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = audit
            .list_activity(request(token))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.activities.iter().map(|a| a.id.clone()));
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..250).rev().map(|i| format!("e{i:04}")).collect();
    assert_eq!(
        ids, expected,
        "every event of the snapshot once, newest first, none of the later ones"
    );

    // A token is bound to its filters.
    let first = audit
        .list_activity(request(String::new()))
        .await
        .unwrap()
        .into_inner();
    let mut other = request(first.next_page_token);
    other.user_id = "someone".into();
    assert_eq!(
        audit.list_activity(other).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_log_roles_read_it_and_only_their_partners_log() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    system
        .audit_intake()
        .await
        .record_activities(RecordActivitiesRequest {
            records: vec![record(
                &partner,
                "mine",
                ActivityType::KeyAccessed,
                base(),
                "u",
            )],
        })
        .await
        .unwrap();
    for role in [Role::AdminAgent, Role::SalesAgent, Role::HelpdeskAgent] {
        let status = system
            .audit(&[role])
            .await
            .list_activity(ListActivityRequest {
                start_time: at(0),
                end_time: at(base() * 2),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    for role in [
        Role::GlobalAdmin,
        Role::AccountAdmin,
        Role::ReferralAdmin,
        Role::MarketingContentAdmin,
    ] {
        let mut audit = system.audit(&[role]).await;
        let found = list(&mut audit, 0, base() * 2).await;
        assert!(found.iter().any(|a| a.id == "mine"), "{role}");
    }
    let mut stranger = AuditServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token_of(Uuid::new_v4(), &[Role::GlobalAdmin])),
    );
    let theirs = list(&mut stranger, 0, base() * 2).await;
    assert!(
        produced(&theirs).is_empty(),
        "another partner sees nothing of this log"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_exports_and_denied_calls_are_recorded_and_exports_open_in_a_spreadsheet() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    system
        .audit_intake()
        .await
        .record_activities(RecordActivitiesRequest {
            records: (0..3)
                .map(|i| {
                    record(
                        &partner,
                        &format!("x{i}"),
                        ActivityType::SoftwareDownloaded,
                        base() + i,
                        "=cmd",
                    )
                })
                .collect(),
        })
        .await
        .unwrap();
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;

    let mut csv = Vec::new();
    let mut stream = audit
        .export_activity(ExportActivityRequest {
            start_time: at(base()),
            end_time: at(base() + 10),
            format: ExportFormat::Csv as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.extend(chunk.data);
    }
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(
        lines[0].starts_with("\u{feff}sequence,id,occur_time,type,user_id"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].contains(",x2,"), "newest first: {}", lines[1]);
    assert!(lines[1].contains(",'=cmd,"), "formula-safe: {}", lines[1]);
    assert!(
        lines[1].contains(r#""{""note"":""a, \""quoted\"" note""}""#),
        "quoted JSON cell: {}",
        lines[1]
    );

    let mut json = Vec::new();
    let mut stream = audit
        .export_activity(ExportActivityRequest {
            start_time: at(base()),
            end_time: at(base() + 10),
            format: ExportFormat::JsonLines as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = stream.message().await.unwrap() {
        json.extend(chunk.data);
    }
    let parsed: Vec<serde_json::Value> = String::from_utf8(json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[0]["details"]["note"], "a, \"quoted\" note");
    let status = audit
        .export_activity(ExportActivityRequest {
            start_time: at(base()),
            end_time: at(base() + 10),
            format: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A denied call lands in the partner's log too.
    let status = system
        .licensing(&[Role::SalesAgent])
        .await
        .list_software(ListSoftwareRequest {
            customer_tenant_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut kinds = Vec::new();
    for _ in 0..200 {
        kinds = list(&mut audit, now - 600, now + 600)
            .await
            .iter()
            .map(|a| a.r#type)
            .collect();
        if kinds.contains(&(ActivityType::CallDenied as i32)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        kinds.contains(&(ActivityType::CallDenied as i32)),
        "{kinds:?}"
    );
    // A read is recorded after its own snapshot: the next read shows it.
    let kinds: Vec<i32> = list(&mut audit, now - 600, now + 600)
        .await
        .iter()
        .map(|a| a.r#type)
        .collect();
    assert!(kinds.contains(&(ActivityType::ActivityLogRead as i32)));
    assert!(kinds.contains(&(ActivityType::ActivityLogExported as i32)));
    system.stop().await;
}

async fn verify(audit: &mut Audit) -> csp_proto::audit::v1::VerifyActivityLogResponse {
    audit
        .verify_activity_log(VerifyActivityLogRequest {
            start_time: at(0),
            end_time: at(base() * 2),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_names_edited_reordered_inserted_and_deleted_rows_and_a_rewritten_history() {
    use csp_proto::audit::v1::{
        GetConsistencyProofRequest, GetInclusionProofRequest, GetLogCheckpointRequest,
        GetLogPublicKeyRequest, get_inclusion_proof_request,
    };
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    let send = |ids: std::ops::Range<i64>| {
        let partner = partner.clone();
        RecordActivitiesRequest {
            records: ids
                .map(|i| {
                    record(
                        &partner,
                        &format!("r{i}"),
                        ActivityType::KeyAccessed,
                        base() + i,
                        "u",
                    )
                })
                .collect(),
        }
    };
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    for i in 0..10 {
        intake.record_activities(send(i..i + 1)).await.unwrap();
        // Every size gets a signed checkpoint.
        audit
            .get_log_checkpoint(GetLogCheckpointRequest {})
            .await
            .unwrap();
    }
    let intact = verify(&mut audit).await;
    assert!(intact.intact, "{}", intact.summary);
    assert_eq!((intact.records_checked, intact.tree_size), (10, 10));

    // An auditor keeps the public key and a checkpoint, and checks a record's
    // inclusion with code that is not the service's.
    let key = audit
        .get_log_public_key(GetLogPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.origin, format!("{}/{partner}", key.key_name));
    let kept = audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let kept_head = csp_audit::log::open(&kept.checkpoint, &key.verifier_key).unwrap();
    assert_eq!(kept_head.size, 10);
    assert_eq!(kept_head.origin, key.origin);
    let proof = audit
        .get_inclusion_proof(GetInclusionProofRequest {
            record: Some(get_inclusion_proof_request::Record::RecordId("r3".into())),
            tree_size: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.leaf_index, 3);
    let hashes = |list: &[Vec<u8>]| -> Vec<tlog_tiles::Hash> {
        list.iter()
            .map(|h| tlog_tiles::Hash(h.as_slice().try_into().unwrap()))
            .collect()
    };
    tlog_tiles::check_record(
        &hashes(&proof.proof),
        10,
        kept_head.root,
        3,
        tlog_tiles::record_hash(&proof.entry),
    )
    .unwrap();

    let db = system.service_db("audit").await;
    let exec = |sql: &'static str| {
        let db = db.clone();
        let partner = partner.clone();
        async move {
            csp_store::on_db!(&db, pool => csp_tests::sqlx::query(sql).bind(partner).execute(pool).await.map(drop)).unwrap();
        }
    };
    // An edited row.
    exec("UPDATE activities SET user_id = 'mallory' WHERE partner_id = $1 AND seq = 3").await;
    let edited = verify(&mut audit).await;
    assert!(!edited.intact);
    assert_eq!(edited.edited_record_ids, ["r2"], "{}", edited.summary);
    assert_eq!(edited.first_mismatch_id, "r2");
    exec("UPDATE activities SET user_id = 'u' WHERE partner_id = $1 AND seq = 3").await;
    assert!(verify(&mut audit).await.intact);

    // Two rows swapped.
    exec("UPDATE activities SET seq = -6 WHERE partner_id = $1 AND seq = 6").await;
    exec("UPDATE activities SET seq = 6 WHERE partner_id = $1 AND seq = 7").await;
    exec("UPDATE activities SET seq = 7 WHERE partner_id = $1 AND seq = -6").await;
    let reordered = verify(&mut audit).await;
    assert_eq!(
        reordered.reordered_record_ids,
        ["r6", "r5"],
        "{}",
        reordered.summary
    );
    assert!(
        reordered.edited_record_ids.is_empty(),
        "{}",
        reordered.summary
    );
    assert!(
        reordered.summary.contains("reordered"),
        "{}",
        reordered.summary
    );
    exec("UPDATE activities SET seq = -6 WHERE partner_id = $1 AND seq = 6").await;
    exec("UPDATE activities SET seq = 6 WHERE partner_id = $1 AND seq = 7").await;
    exec("UPDATE activities SET seq = 7 WHERE partner_id = $1 AND seq = -6").await;
    assert!(verify(&mut audit).await.intact);

    // A row inserted into the past, behind the log's back.
    exec(
        "INSERT INTO activities (partner_id, seq, id, kind, occur_at_us, recorded_at_us, user_id, \
         user_display_name, customer_tenant_id, subscription_id, product_id, details) \
         VALUES ($1, 11, 'backdated', 'key_accessed', 0, 0, 'mallory', 'M', '', '', '', '{}')",
    )
    .await;
    let inserted = verify(&mut audit).await;
    assert_eq!(
        inserted.inserted_record_ids,
        ["backdated"],
        "{}",
        inserted.summary
    );
    exec("DELETE FROM activities WHERE partner_id = $1 AND seq = 11").await;

    // A deleted row.
    exec("DELETE FROM activities WHERE partner_id = $1 AND seq = 5").await;
    let deleted = verify(&mut audit).await;
    assert_eq!(deleted.missing_sequence_numbers, [5], "{}", deleted.summary);

    // History rewritten by someone who can write the database: records
    // edited and the tree rebuilt over them, checkpoints in the database
    // dropped. The service signs the rewritten tree from then on.
    exec("UPDATE activities SET seq = 5, user_id = 'mallory' WHERE partner_id = $1 AND seq = 6")
        .await;
    exec("UPDATE activities SET seq = seq - 1 WHERE partner_id = $1 AND seq > 6").await;
    exec("DELETE FROM tree_hashes WHERE partner_id = $1").await;
    exec("DELETE FROM log_checkpoints WHERE partner_id = $1").await;
    exec("DELETE FROM log_heads WHERE partner_id = $1").await;
    csp_audit::storage::AuditStore::new(db.clone())
        .build_missing_leaves(1000)
        .await
        .unwrap();
    // The rewritten tree of 9 records gets signed: a second, different
    // checkpoint of size 9.
    audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap();
    intake.record_activities(send(20..22)).await.unwrap();
    let now = audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let now_head = csp_audit::log::open(&now.checkpoint, &key.verifier_key).unwrap();
    assert_eq!(now_head.size, 11, "9 rewritten records and 2 new ones");
    // The auditor asks for a proof that the new tree extends the kept one:
    // none can exist.
    let consistency = audit
        .get_consistency_proof(GetConsistencyProofRequest {
            first_size: 10,
            second_size: 11,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tlog_tiles::check_tree(
            &hashes(&consistency.proof),
            11,
            now_head.root,
            10,
            kept_head.root
        )
        .is_err(),
        "the rewritten history passed as an extension of the kept checkpoint"
    );
    // The server's own check sees it against the checkpoints in the file,
    // and the two different signed checkpoints of size 10 as a fork.
    let rewritten = verify(&mut audit).await;
    assert!(!rewritten.intact);
    assert!(rewritten.rewritten_at_size > 0, "{}", rewritten.summary);
    assert!(
        rewritten.summary.contains("history rewritten"),
        "{}",
        rewritten.summary
    );
    assert_eq!(rewritten.forked_sizes, [9], "{}", rewritten.summary);
    assert!(
        rewritten.summary.contains("forked"),
        "{}",
        rewritten.summary
    );
    db.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_append_to_one_log_without_forking() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let second_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = AuditInstance::start(&system, second_addr).await;
    let key = csp_tests::signer(csp_tests::ServiceName::Licensing);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = if i % 2 == 0 {
            system.addresses.audit
        } else {
            second_addr
        };
        let channel = csp_tests::connect(addr).await;
        let mut client = csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient::with_interceptor(
            channel,
            csp_kit::identity::ServiceIdentity::new(key.clone()),
        );
        let partner = partner.clone();
        tasks.push(tokio::spawn(async move {
            client
                .record_activities(RecordActivitiesRequest {
                    records: (0..5)
                        .map(|j| {
                            record(
                                &partner,
                                &format!("p{i}-{j}"),
                                ActivityType::KeyAccessed,
                                base() + j,
                                "u",
                            )
                        })
                        .collect(),
                })
                .await
                .unwrap()
                .into_inner()
                .recorded
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        recorded += task.await.unwrap();
    }
    assert_eq!(recorded, 200);
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let verified = verify(&mut audit).await;
    assert!(verified.intact, "{}", verified.summary);
    assert_eq!(verified.records_checked, 200);
    second.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_audit_is_down() {
    const N: usize = 4;
    let system = TestSystem::start_without_audit().await;
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let customer = ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: "outage.example.com".into(),
            company_name: "Outage".into(),
            market: "US".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .tenant_id;
    let order = ordering
        .place_order(PlaceOrderRequest {
            customer_tenant_id: customer.clone(),
            lines: vec![OrderLineRequest {
                sku_id: "windows-server-standard-p1y".into(),
                quantity: 1,
            }],
            request_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    for _ in 0..300 {
        let listed = licensing
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..N {
        let issued = licensing
            .get_keys_and_downloads(GetKeysAndDownloadsRequest {
                customer_tenant_id: customer.clone(),
                subscription_id: order.lines[0].subscription_id.clone(),
                version: "2022".into(),
                language: "en-US".into(),
                file_type: "iso-x64".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            http::get(&issued.download_link.unwrap().url).await.status,
            302
        );
    }

    // Audit comes back; the producers' outboxes deliver everything once.
    let audit_instance = AuditInstance::start(&system, system.addresses.audit).await;
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let count = |list: &[Activity], kind: ActivityType| {
        list.iter().filter(|a| a.r#type == kind as i32).count()
    };
    let mut found = Vec::new();
    for _ in 0..600 {
        found = list(&mut audit, now - 3600, now + 3600).await;
        // Every kind comes through its own producer's outbox, in any order.
        if count(&found, ActivityType::KeyAccessed) >= N
            && count(&found, ActivityType::SoftwareDownloaded) >= N
            && count(&found, ActivityType::DownloadLinkIssued) >= 1
            && count(&found, ActivityType::OrderPlaced) >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&found, ActivityType::KeyAccessed), N);
    assert_eq!(count(&found, ActivityType::SoftwareDownloaded), N);
    assert_eq!(count(&found, ActivityType::DownloadLinkIssued), 1);
    assert_eq!(count(&found, ActivityType::OrderPlaced), 1);
    let download = found
        .iter()
        .find(|a| a.r#type == ActivityType::SoftwareDownloaded as i32)
        .unwrap();
    assert_eq!(
        download.details.get("client_address").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        download.details.get("user_agent").map(String::as_str),
        Some("csp-tests/1.0")
    );
    assert!(
        download
            .details
            .get("download_count")
            .unwrap()
            .ends_with("of 50")
    );
    audit_instance.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_hammering_a_denied_method_makes_one_record_not_one_per_call() {
    let system = TestSystem::start().await;
    let mut denied = system.licensing(&[Role::SalesAgent]).await;
    for _ in 0..200 {
        let status = denied
            .list_software(ListSoftwareRequest {
                customer_tenant_id: Uuid::new_v4().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let denials = |list: &[Activity]| {
        list.iter()
            .filter(|a| a.r#type == ActivityType::CallDenied as i32)
            .count()
    };
    for _ in 0..200 {
        if denials(&list(&mut audit, now - 600, now + 600).await) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give any further records time to arrive; there must be none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = list(&mut audit, now - 600, now + 600).await;
    assert_eq!(
        denials(&found),
        1,
        "the first denial is recorded at once, the other 199 are counted into one record at the end of the minute"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_are_checked_and_never_about_another_partners_log() {
    use csp_proto::audit::v1::{
        GetConsistencyProofRequest, GetInclusionProofRequest, GetLogCheckpointRequest,
        get_inclusion_proof_request::Record as Which,
    };
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    intake
        .record_activities(RecordActivitiesRequest {
            records: (0..5)
                .map(|i| {
                    record(
                        &partner,
                        &format!("p{i}"),
                        ActivityType::KeyAccessed,
                        base() + i,
                        "u",
                    )
                })
                .collect(),
        })
        .await
        .unwrap();
    let mut audit = system.audit(&[Role::AccountAdmin]).await;
    let head = audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.tree_size, 5);
    assert_eq!(head.root_hash.len(), 32);

    // By index, against the newest checkpoint (tree_size 0).
    let by_index = audit
        .get_inclusion_proof(GetInclusionProofRequest {
            record: Some(Which::LeafIndex(4)),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((by_index.leaf_index, by_index.tree_size), (4, 5));
    assert_eq!(by_index.checkpoint, head.checkpoint);

    let refused = |status: tonic::Status, code: Code, field: &str| {
        assert_eq!(status.code(), code, "{}", status.message());
        if code == Code::InvalidArgument {
            let details = status.get_error_details();
            let fields: Vec<&str> = details
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| v.field.as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(fields, [field], "{}", status.message());
        }
    };
    let inclusion =
        |record: Option<Which>, tree_size: u64| GetInclusionProofRequest { record, tree_size };
    refused(
        audit
            .get_inclusion_proof(inclusion(None, 0))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "record",
    );
    refused(
        audit
            .get_inclusion_proof(inclusion(Some(Which::LeafIndex(5)), 5))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "leaf_index",
    );
    refused(
        audit
            .get_inclusion_proof(inclusion(Some(Which::LeafIndex(0)), 6))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "tree_size",
    );
    refused(
        audit
            .get_inclusion_proof(inclusion(Some(Which::RecordId("p4".into())), 3))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "record_id",
    );
    refused(
        audit
            .get_inclusion_proof(inclusion(Some(Which::RecordId("nope".into())), 0))
            .await
            .unwrap_err(),
        Code::NotFound,
        "",
    );
    let consistency = |first_size: u64, second_size: u64| GetConsistencyProofRequest {
        first_size,
        second_size,
    };
    audit
        .get_consistency_proof(consistency(2, 5))
        .await
        .unwrap();
    for (first, second, field) in [
        (0, 5, "first_size"),
        (4, 3, "first_size"),
        (1, 9, "second_size"),
    ] {
        refused(
            audit
                .get_consistency_proof(consistency(first, second))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            field,
        );
    }

    // Another partner's admin sees an empty log and none of these records.
    let mut other =
        csp_proto::audit::v1::audit_service_client::AuditServiceClient::with_interceptor(
            system.gateway().await,
            csp_tests::Bearer::new(&system.token_of(uuid::Uuid::new_v4(), &[Role::AccountAdmin])),
        );
    let empty = other
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((empty.tree_size, empty.checkpoint.as_str()), (0, ""));
    refused(
        other
            .get_inclusion_proof(inclusion(Some(Which::RecordId("p1".into())), 0))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "tree_size",
    );
    system.stop().await;
}

/// A whole-log proof bundle (JSON lines), cut at the newest checkpoint.
async fn bundle(audit: &mut Audit, previous_size: u64) -> (String, String) {
    let mut stream = audit
        .export_activity(ExportActivityRequest {
            start_time: at(0),
            end_time: at(base() * 2),
            format: ExportFormat::JsonLines as i32,
            include_proofs: true,
            previous_size,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut data, mut checkpoint) = (Vec::new(), String::new());
    while let Some(chunk) = stream.message().await.unwrap() {
        data.extend(chunk.data);
        if !chunk.checkpoint.is_empty() {
            checkpoint = chunk.checkpoint;
        }
    }
    (String::from_utf8(data).unwrap(), checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_with_the_public_key_alone_checks_a_bundle_and_names_each_tampering() {
    use csp_audit::bundle;
    use csp_proto::audit::v1::GetLogPublicKeyRequest;
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    intake
        .record_activities(RecordActivitiesRequest {
            records: (0..8)
                .map(|i| {
                    record(
                        &partner,
                        &format!("b{i}"),
                        ActivityType::KeyAccessed,
                        base() + i,
                        "u",
                    )
                })
                .collect(),
        })
        .await
        .unwrap();
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let vkey = audit
        .get_log_public_key(GetLogPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .verifier_key;
    let named = |report: bundle::Report, what: &str| {
        assert!(
            report.problems.iter().any(|p| p.starts_with(what)),
            "{what} not named in {:?}",
            report.problems
        );
    };
    let (clean, kept) = bundle(&mut audit, 0).await;
    let report = bundle::verify(&clean, &vkey, None).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    // 8 records and the export's own record.
    assert_eq!((report.checked, report.tree_size), (9, 9));
    let header: serde_json::Value = serde_json::from_str(clean.lines().next().unwrap()).unwrap();
    assert_eq!(
        header["checkpoint"],
        kept.as_str(),
        "the first line carries the checkpoint"
    );
    // A line shown twice, or with another sequence number, is named; a
    // bundle that says it is partial cannot show deletions and says so.
    let lines: Vec<&str> = clean.lines().collect();
    let doubled = format!("{}\n{}\n", clean.trim_end(), lines[2]);
    named(bundle::verify(&doubled, &vkey, None).unwrap(), "leaf");
    let renumbered = clean.replacen("\"sequence\":", "\"sequence\":9", 1);
    named(bundle::verify(&renumbered, &vkey, None).unwrap(), "record");
    let partial = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| l.replace("\"complete\":true", "\"complete\":false"))
        .collect::<Vec<_>>()
        .join("\n");
    let report = bundle::verify(&partial, &vkey, None).unwrap();
    assert!(!report.complete && report.intact(), "{:?}", report.problems);
    // A second checkpoint of the same size, signed with the log key over
    // another root (a forked history), is named against the bundle.
    let log_key = csp_audit::log::LogKey::from_config(
        csp_tests::audit_key().expose(),
        csp_audit::log::DEFAULT_LOG_NAME,
    )
    .unwrap();
    let kept_head = csp_audit::log::open(&kept, &vkey).unwrap();
    let fork = log_key
        .sign(
            csp_kit::ids::PartnerId::from_uuid(system.partner),
            kept_head.size,
            tlog_tiles::record_hash(b"another history"),
        )
        .unwrap();
    named(
        bundle::verify(&clean, &vkey, Some(&fork)).unwrap(),
        "forked",
    );
    // Another key refuses the bundle outright.
    let other =
        csp_audit::log::LogKey::from_config("not the log key", "csp.local/activity-log").unwrap();
    assert!(bundle::verify(&clean, other.verifier_key(), None).is_err());

    let db = system.service_db("audit").await;
    let exec = |sql: &'static str| {
        let db = db.clone();
        let partner = partner.clone();
        async move {
            csp_store::on_db!(&db, pool => csp_tests::sqlx::query(sql).bind(partner).execute(pool).await.map(drop)).unwrap();
        }
    };
    // Each tampering is named in a new bundle, then undone.
    exec("UPDATE activities SET user_id = 'mallory' WHERE partner_id = $1 AND seq = 2").await;
    named(
        bundle::verify(&bundle(&mut audit, 0).await.0, &vkey, None).unwrap(),
        "edited: record b1",
    );
    exec("UPDATE activities SET user_id = 'u' WHERE partner_id = $1 AND seq = 2").await;

    exec("UPDATE activities SET seq = -3 WHERE partner_id = $1 AND seq = 3").await;
    exec("UPDATE activities SET seq = 3 WHERE partner_id = $1 AND seq = 4").await;
    exec("UPDATE activities SET seq = 4 WHERE partner_id = $1 AND seq = -3").await;
    named(
        bundle::verify(&bundle(&mut audit, 0).await.0, &vkey, None).unwrap(),
        "reordered",
    );
    exec("UPDATE activities SET seq = -3 WHERE partner_id = $1 AND seq = 3").await;
    exec("UPDATE activities SET seq = 3 WHERE partner_id = $1 AND seq = 4").await;
    exec("UPDATE activities SET seq = 4 WHERE partner_id = $1 AND seq = -3").await;

    exec("DELETE FROM activities WHERE partner_id = $1 AND seq = 5").await;
    named(
        bundle::verify(&bundle(&mut audit, 0).await.0, &vkey, None).unwrap(),
        "deleted: 1 records are missing (leaves 4)",
    );

    // History rewritten (records changed, tree rebuilt over them): a bundle
    // now verifies on its own, but not against the checkpoint kept before.
    exec("UPDATE activities SET seq = seq - 1 WHERE partner_id = $1 AND seq > 5").await;
    exec("DELETE FROM tree_hashes WHERE partner_id = $1").await;
    exec("DELETE FROM log_checkpoints WHERE partner_id = $1").await;
    exec("DELETE FROM log_heads WHERE partner_id = $1").await;
    csp_audit::storage::AuditStore::new(db.clone())
        .build_missing_leaves(1000)
        .await
        .unwrap();
    // Exports record themselves: the rewritten log grows past the kept size.
    let kept_size = csp_audit::log::open(&kept, &vkey).unwrap().size;
    let _ = bundle(&mut audit, 0).await;
    let (rewritten, _) = bundle(&mut audit, kept_size).await;
    let alone = bundle::verify(&rewritten, &vkey, None).unwrap();
    assert!(alone.intact(), "{:?}", alone.problems);
    named(
        bundle::verify(&rewritten, &vkey, Some(&kept)).unwrap(),
        "history rewritten: the signed tree",
    );
    db.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arriving_during_a_check_are_not_tampering_and_a_rewritten_tree_is_not_signed() {
    use csp_proto::audit::v1::GetLogCheckpointRequest;
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let mut intake = system.audit_intake().await;
    let feeder = {
        let mut intake = intake.clone();
        let partner = partner.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                intake
                    .record_activities(RecordActivitiesRequest {
                        records: vec![record(
                            &partner,
                            &format!("live{i}"),
                            ActivityType::KeyAccessed,
                            base() + i,
                            "u",
                        )],
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    while !feeder.is_finished() {
        let found = verify(&mut audit).await;
        assert!(found.intact, "while records arrive: {}", found.summary);
    }
    feeder.await.unwrap();
    assert!(verify(&mut audit).await.intact);

    // The stored hash of the first 256 leaves changed behind the log's
    // back: the service will not sign a tree that does not extend what it
    // signed before.
    audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap();
    let db = system.service_db("audit").await;
    let index = csp_audit::log::stored_hash_index(8, 0) as i64;
    csp_store::on_db!(&db, pool => csp_tests::sqlx::query(
        "UPDATE tree_hashes SET hash = '0000000000000000000000000000000000000000000000000000000000000000' WHERE partner_id = $1 AND idx = $2")
        .bind(&partner).bind(index).execute(pool).await.map(drop)).unwrap();
    intake
        .record_activities(RecordActivitiesRequest {
            records: vec![record(
                &partner,
                "after",
                ActivityType::KeyAccessed,
                base(),
                "u",
            )],
        })
        .await
        .unwrap();
    let refused = audit
        .get_log_checkpoint(GetLogCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{}", refused.message());
    let found = verify(&mut audit).await;
    assert!(found.tree_damaged, "{}", found.summary);
    assert!(found.summary.contains("tree damaged"), "{}", found.summary);
    db.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_records_are_committed_together_and_each_call_counts_its_own() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let intake = system.audit_intake().await;
    let mut calls = Vec::new();
    for i in 0..60 {
        let (mut intake, partner) = (intake.clone(), partner.clone());
        calls.push(tokio::spawn(async move {
            // Every third call repeats the id of the call before it.
            let id = if i % 3 == 2 {
                format!("g{}", i - 1)
            } else {
                format!("g{i}")
            };
            intake
                .record_activities(RecordActivitiesRequest {
                    records: vec![record(
                        &partner,
                        &id,
                        ActivityType::KeyAccessed,
                        base() + i,
                        "u",
                    )],
                })
                .await
                .unwrap()
                .into_inner()
                .recorded
        }));
    }
    let mut recorded = 0;
    for call in calls {
        let counted = call.await.unwrap();
        assert!(counted <= 1, "a call counted {counted} records");
        recorded += counted;
    }
    // 40 distinct ids, each counted for exactly one call.
    assert_eq!(recorded, 40);
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let found = verify(&mut audit).await;
    assert!(found.intact, "{}", found.summary);
    assert_eq!(found.tree_size, 40, "each id once: {}", found.summary);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_records_are_checkpointed_without_anyone_asking() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    system
        .audit_intake()
        .await
        .record_activities(RecordActivitiesRequest {
            records: vec![record(
                &partner,
                "unasked",
                ActivityType::KeyAccessed,
                base(),
                "u",
            )],
        })
        .await
        .unwrap();
    // The background signer (every 500 ms) stores a checkpoint of size 1;
    // nobody calls GetLogCheckpoint. Waits at most 10 s.
    let db = system.service_db("audit").await;
    let mut signed = None;
    for _ in 0..200 {
        signed = csp_store::on_db!(&db, pool => csp_tests::sqlx::query_scalar::<_, String>(
            "SELECT note FROM log_checkpoints WHERE partner_id = $1 AND size = 1")
            .bind(&partner).fetch_optional(pool).await)
        .unwrap();
        if signed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let note = signed.expect("no checkpoint was signed in the background");
    let key = csp_audit::log::LogKey::from_config(
        csp_tests::audit_key().expose(),
        csp_audit::log::DEFAULT_LOG_NAME,
    )
    .unwrap();
    assert_eq!(
        csp_audit::log::open(&note, key.verifier_key())
            .unwrap()
            .size,
        1
    );
    db.close().await;
    system.stop().await;
}
