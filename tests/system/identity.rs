//! What a stolen service key can do: speak as that service and nothing
//! more. Each service signs with its own key; only the gateway's key signs
//! users; the contract says which services may call each internal RPC and
//! which may write each activity type; identities live at most 60 s.

use csp_kit::roles::Role;
use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;
use csp_proto::audit::v1::{
    Activity, ActivityRecord, ActivityType, ListActivityRequest, RecordActivitiesRequest,
};
use csp_proto::licensing::v1::RedeemDownloadLinkRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_proto::ordering::v1::{CheckCustomerRequest, GetCustomerRequest, get_customer_request};
use csp_tests::{IdentityHeader as Header, ServiceName, TestSystem, connect};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as a service signs them, for `path`, living `lifetime` seconds.
fn claims(iss: ServiceName, path: &str, lifetime: u64) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "iss": iss.as_str(),
        "aud": "csp-internal",
        "iat": now,
        "exp": now + lifetime,
        "mth": path,
    })
}

/// Signs `claims` with `service`'s key (the one the test system runs with).
fn signed(service: ServiceName, claims: &serde_json::Value) -> Header {
    Header(
        csp_tests::identity_keys()
            .key(service)
            .sign_claims(claims)
            .unwrap(),
    )
}

async fn ordering_internal(
    system: &TestSystem,
    identity: Header,
) -> OrderingInternalServiceClient<InterceptedService<Channel, Header>> {
    OrderingInternalServiceClient::with_interceptor(
        connect(system.addresses.ordering).await,
        identity,
    )
}

const CHECK_CUSTOMER: &str = "/csp.ordering.v1.OrderingInternalService/CheckCustomer";
const GET_CUSTOMER: &str = "/csp.ordering.v1.OrderingService/GetCustomer";
const REDEEM: &str = "/csp.licensing.v1.LicensingInternalService/RedeemDownloadLink";
const RECORD: &str = "/csp.audit.v1.AuditIntakeService/RecordActivities";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_key_calls_only_what_its_service_may_call() {
    let system = TestSystem::start().await;
    let (tenant, _) = system
        .purchase("stolen.example", &["windows-server-standard-p1y"])
        .await;
    let partner = system.partner.to_string();
    let check = CheckCustomerRequest {
        partner_id: partner.clone(),
        tenant_id: tenant.clone(),
    };

    // The catalog's key (a compromised catalog pod) may call none of these.
    let status = ordering_internal(
        &system,
        signed(
            ServiceName::Catalog,
            &claims(ServiceName::Catalog, CHECK_CUSTOMER, 30),
        ),
    )
    .await
    .check_customer(check.clone())
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("catalog service may not call this RPC")
            && status.message().contains("its callers: licensing"),
        "{}",
        status.message()
    );
    let status = LicensingInternalServiceClient::with_interceptor(
        connect(system.addresses.licensing).await,
        signed(
            ServiceName::Catalog,
            &claims(ServiceName::Catalog, REDEEM, 30),
        ),
    )
    .redeem_download_link(RedeemDownloadLinkRequest {
        token: "a".repeat(43),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = AuditIntakeServiceClient::with_interceptor(
        connect(system.addresses.audit).await,
        signed(
            ServiceName::Catalog,
            &claims(ServiceName::Catalog, RECORD, 30),
        ),
    )
    .record_activities(RecordActivitiesRequest::default())
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Ordering's key speaking as licensing is not licensing.
    let status = ordering_internal(
        &system,
        signed(
            ServiceName::Ordering,
            &claims(ServiceName::Licensing, CHECK_CUSTOMER, 30),
        ),
    )
    .await
    .check_customer(check.clone())
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The service that may call it does (the check refuses only the others).
    let found = ordering_internal(
        &system,
        signed(
            ServiceName::Licensing,
            &claims(ServiceName::Licensing, CHECK_CUSTOMER, 30),
        ),
    )
    .await
    .check_customer(check)
    .await;
    assert!(found.is_ok(), "{found:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_speaks_for_users_and_only_with_their_roles() {
    let system = TestSystem::start().await;
    let (tenant, _) = system
        .purchase("users.example", &["windows-server-standard-p1y"])
        .await;
    let get = || GetCustomerRequest {
        customer: Some(get_customer_request::Customer::TenantId(tenant.clone())),
    };
    let user = |roles: &[&str]| {
        let mut claims = claims(ServiceName::Gateway, GET_CUSTOMER, 30);
        claims["pid"] = system.partner.to_string().into();
        claims["sub"] = "mallory".into();
        claims["roles"] = roles.to_vec().into();
        claims
    };
    let client = |identity: Header| {
        let addr = system.addresses.ordering;
        async move { OrderingServiceClient::with_interceptor(connect(addr).await, identity) }
    };

    // A backend's key cannot sign a user, whatever roles it claims.
    let mut forged = user(&["admin_agent"]);
    forged["iss"] = "licensing".into();
    let status = client(signed(ServiceName::Licensing, &forged))
        .await
        .get_customer(get())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("only the gateway"),
        "{}",
        status.message()
    );

    // A service identity on a user RPC.
    let status = client(signed(
        ServiceName::Ordering,
        &claims(ServiceName::Ordering, GET_CUSTOMER, 30),
    ))
    .await
    .get_customer(get())
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A user identity without the roles the RPC declares: the backend checks
    // again, whatever the gateway did.
    for roles in [&[][..], &["marketing_content_admin"][..]] {
        let status = client(signed(ServiceName::Gateway, &user(roles)))
            .await
            .get_customer(get())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{roles:?}: {status:?}"
        );
        assert!(
            status.message().contains("needs one of the roles"),
            "{}",
            status.message()
        );
    }

    // A ten-year identity, and one issued in the future.
    let mut ten_years = user(&["admin_agent"]);
    ten_years["exp"] = (now() + 10 * 365 * 86_400).into();
    let status = client(signed(ServiceName::Gateway, &ten_years))
        .await
        .get_customer(get())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("longer than 60 s"),
        "{}",
        status.message()
    );
    let mut later = user(&["admin_agent"]);
    later["iat"] = (now() + 3600).into();
    later["exp"] = (now() + 3630).into();
    let status = client(signed(ServiceName::Gateway, &later))
        .await
        .get_customer(get())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The gateway's genuine identity with a role the RPC declares works.
    let found = client(signed(ServiceName::Gateway, &user(&["sales_agent"])))
        .await
        .get_customer(get())
        .await;
    assert!(found.is_ok(), "{found:?}");
    system.stop().await;
}

fn record(partner: &str, id: &str, kind: ActivityType, seconds: i64) -> ActivityRecord {
    ActivityRecord {
        partner_id: partner.to_owned(),
        activity: Some(Activity {
            id: id.to_owned(),
            r#type: kind as i32,
            occur_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            user_id: "framed-user".to_owned(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_log_takes_records_only_from_their_producer_and_near_their_time() {
    let system = TestSystem::start().await;
    let partner = system.partner.to_string();
    let now = i64::try_from(now()).unwrap();
    let backdated = 1_609_459_200; // 2021-01-01
    let mut intake = AuditIntakeServiceClient::with_interceptor(
        connect(system.addresses.audit).await,
        csp_kit::identity::ServiceIdentity::new(csp_tests::signer(ServiceName::Licensing)),
    );
    let answer = intake
        .record_activities(RecordActivitiesRequest {
            records: vec![
                // Licensing may write key accesses, near now.
                record(&partner, "genuine-1", ActivityType::KeyAccessed, now),
                // Not an order: that is ordering's.
                record(&partner, "framed-1", ActivityType::OrderPlaced, now),
                // Not dated 2021, nor next week.
                record(
                    &partner,
                    "backdated-1",
                    ActivityType::KeyAccessed,
                    backdated,
                ),
                record(
                    &partner,
                    "ahead-1",
                    ActivityType::KeyAccessed,
                    now + 7 * 86_400,
                ),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.recorded, 1, "{answer:?}");
    let reasons: std::collections::HashMap<String, String> = answer
        .rejected
        .into_iter()
        .map(|r| (r.event_id, r.reason))
        .collect();
    assert!(
        reasons["framed-1"].contains("licensing service may not write order_placed"),
        "{reasons:?}"
    );
    assert!(
        reasons["backdated-1"].contains("hours before the log received it"),
        "{reasons:?}"
    );
    assert!(
        reasons["ahead-1"].contains("ahead of the log's clock"),
        "{reasons:?}"
    );

    // The partner's log holds the genuine record only.
    let listed = system
        .audit(&[Role::GlobalAdmin])
        .await
        .list_activity(ListActivityRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: backdated - 86_400,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: now + 30 * 86_400,
                nanos: 0,
            }),
            user_id: "framed-user".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.activities.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["genuine-1"]);
    system.stop().await;
}
