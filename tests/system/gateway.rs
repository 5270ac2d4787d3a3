//! The gateway's door: authentication, authorization, identity propagation,
//! request ids, and backends that refuse calls not coming through it.

use std::time::Duration;

use csp_kit::config::Secret;
use csp_kit::identity::keys::SigningKey;
use csp_kit::identity::{IDENTITY_HEADER, Signer, UserCaller};
use csp_kit::roles::Role;
use csp_proto::catalog::v1::ListMarketsRequest;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_tests::IdentityHeader as Identity;
use csp_tests::ServiceName;
use csp_tests::{Bearer, TestSystem, connect, mint, raw};
use tonic::Code;
use tonic_types::StatusExt as _;

const LIST_MARKETS: &str = "/csp.catalog.v1.CatalogService/ListMarkets";

async fn list_markets_with(system: &TestSystem, authorization: Option<&str>) -> tonic::Status {
    raw::call_empty(system.gateway().await, LIST_MARKETS, false, authorization).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_token_is_unauthenticated() {
    let system = TestSystem::start().await;
    let status = list_markets_with(&system, None).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
    let status = list_markets_with(&system, Some("Basic dXNlcjpwYXNz")).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = list_markets_with(&system, Some("Bearer not-a-jwt")).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_another_secret_is_unauthenticated() {
    let system = TestSystem::start().await;
    let forged = csp_gateway::auth::mint_dev_token(
        &Secret::new("some-other-secret-0123456789"),
        system.partner,
        "mallory",
        "Mallory",
        &[Role::GlobalAdmin],
        Duration::from_secs(600),
    )
    .unwrap();
    let status = list_markets_with(&system, Some(&format!("Bearer {forged}"))).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("signature"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains(&forged),
        "the token was echoed back"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_unauthenticated() {
    let system = TestSystem::start().await;
    // Expired well beyond the verifier's leeway.
    let token = {
        let secret = csp_tests::jwt_secret();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = csp_gateway::auth::UserClaims {
            sub: "ada".into(),
            partner_id: system.partner.to_string(),
            name: "Ada".into(),
            roles: vec!["admin_agent".into()],
            exp: now - 120,
            iat: now - 3600,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .unwrap()
    };
    let status = list_markets_with(&system, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_without_a_permitted_role_is_denied_naming_the_roles() {
    let system = TestSystem::start().await;
    let token = system.token(&[Role::SalesAgent]);
    let status = raw::call_empty(
        system.gateway().await,
        "/csp.licensing.v1.LicensingService/GetKeysAndDownloads",
        false,
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("admin_agent"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("sales_agent"),
        "{}",
        status.message()
    );

    let no_roles = system.token(&[]);
    let status = list_markets_with(&system, Some(&format!("Bearer {no_roles}"))).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_and_unknown_methods_are_not_routed() {
    let system = TestSystem::start().await;
    let authorization = format!("Bearer {}", system.token(&Role::ALL));
    for path in [
        "/csp.catalog.v1.CatalogInternalService/QuoteSkus",
        "/csp.ordering.v1.OrderingInternalService/CancelSubscription",
        "/csp.audit.v1.AuditIntakeService/RecordActivities",
        "/csp.catalog.v1.CatalogService/DropEverything",
    ] {
        let status =
            raw::call_empty(system.gateway().await, path, false, Some(&authorization)).await;
        assert_eq!(
            status.code(),
            Code::Unimplemented,
            "{path}: {}",
            status.message()
        );
        assert!(
            status.message().contains("unknown method"),
            "{path}: {}",
            status.message()
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_called_directly_refuses_calls_without_the_gateway_identity() {
    let system = TestSystem::start().await;
    let catalog = system.addresses.catalog;

    // Without any identity, even with a perfectly good user token.
    let authorization = format!("Bearer {}", system.token(&Role::ALL));
    let status = raw::call_empty(
        connect(catalog).await,
        LIST_MARKETS,
        false,
        Some(&authorization),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("gateway"), "{}", status.message());

    // With an identity signed by another key.
    let user = UserCaller {
        partner_id: system.partner.into(),
        user_id: "mallory".into(),
        display_name: "Mallory".into(),
        roles: Role::ALL.into_iter().collect(),
    };
    let forged = Signer::new(SigningKey::generate(ServiceName::Gateway).unwrap())
        .mint_for_user(&user, LIST_MARKETS)
        .unwrap()
        .to_string();
    let mut client =
        CatalogServiceClient::with_interceptor(connect(catalog).await, Identity(forged));
    let status = client
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // With a genuine identity issued for another method.
    let key = csp_tests::signer(ServiceName::Gateway);
    let other = key
        .mint_for_user(&user, "/csp.catalog.v1.CatalogService/ListProducts")
        .unwrap()
        .to_string();
    let mut client =
        CatalogServiceClient::with_interceptor(connect(catalog).await, Identity(other));
    let status = client
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A genuine identity for this method is accepted (the check is not
    // refusing everything).
    let genuine = key.mint_for_user(&user, LIST_MARKETS).unwrap().to_string();
    let mut client =
        CatalogServiceClient::with_interceptor(connect(catalog).await, Identity(genuine));
    assert!(client.list_markets(ListMarketsRequest {}).await.is_ok());

    // Health stays open for probes.
    let health = raw::call_empty(
        connect(catalog).await,
        "/grpc.health.v1.Health/Check",
        false,
        None,
    )
    .await;
    assert_eq!(health.code(), Code::Ok, "{}", health.message());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_smuggle_an_identity_through_the_gateway() {
    let system = TestSystem::start().await;
    // A browse-only user sends a self-made identity claiming admin_agent: the
    // gateway decides on the bearer token and replaces the header.
    let user = UserCaller {
        partner_id: system.partner.into(),
        user_id: "mallory".into(),
        display_name: "Mallory".into(),
        roles: [Role::AdminAgent].into_iter().collect(),
    };
    let path = "/csp.licensing.v1.LicensingService/ListSoftware";
    let smuggled = csp_tests::signer(ServiceName::Gateway)
        .mint_for_user(&user, path)
        .unwrap();
    let token = system.token(&[Role::MarketingContentAdmin]);
    let mut grpc = tonic::client::Grpc::new(system.gateway().await);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(csp_proto::licensing::v1::ListSoftwareRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .metadata_mut()
        .insert(IDENTITY_HEADER, smuggled.parse().unwrap());
    let status = grpc
        .unary::<_, csp_proto::licensing::v1::ListSoftwareResponse, _>(
            request,
            path.parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_echoed_or_generated() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::HelpdeskAgent]).await;

    let mut request = tonic::Request::new(ListMarketsRequest {});
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-42".parse().unwrap());
    let response = catalog.list_markets(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "trace-me-42"
    );

    let response = catalog.list_markets(ListMarketsRequest {}).await.unwrap();
    let generated = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    // Refusals carry it too.
    let mut anonymous =
        CatalogServiceClient::with_interceptor(system.gateway().await, Bearer::raw("Bearer x"));
    let mut request = tonic::Request::new(ListMarketsRequest {});
    request
        .metadata_mut()
        .insert("x-request-id", "refused-1".parse().unwrap());
    let status = anonymous.list_markets(request).await.unwrap_err();
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "refused-1");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_unavailable_not_a_hang() {
    let system = TestSystem::start().await;
    // A gateway of its own, pointing the catalog at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let config = csp_tests::dev_gateway_config(addr, system.backends_with(Some(dead_addr), None));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));
    let token = mint(system.partner, &[Role::AdminAgent], Duration::from_secs(60));
    let status = raw::call_empty(
        connect(addr).await,
        LIST_MARKETS,
        false,
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("catalog"), "{}", status.message());

    // Its health says which backend is missing, and it is not ready overall.
    let status_of = |service: &'static str| async move {
        let mut status = String::new();
        for _ in 0..100 {
            status = csp::health_status(addr, service).await.unwrap_or_default();
            if !status.is_empty() && status != "SERVICE_UNKNOWN" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        status
    };
    assert_eq!(
        status_of("csp.catalog.v1.CatalogService").await,
        "NOT_SERVING"
    );
    assert_eq!(
        status_of("csp.ordering.v1.OrderingService").await,
        "SERVING"
    );
    assert_eq!(
        status_of("csp.licensing.v1.LicensingService").await,
        "SERVING"
    );
    assert_eq!(status_of("").await, "NOT_SERVING");
    assert_eq!(status_of(csp_kit::server::LIVENESS).await, "SERVING");
    assert_eq!(
        status_of(csp_gateway::health::ROUTING).await,
        "SERVING",
        "the gateway itself routes calls (what readiness asks)"
    );
    trigger.fire();
    gateway.await.unwrap().unwrap();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reports_each_public_service_serving_once_its_backend_is() {
    let system = TestSystem::start().await;
    let addr = system.addresses.gateway;
    // csp::start returned: the gateway reported SERVING, so every backend does.
    for service in [
        "",
        "csp.catalog.v1.CatalogService",
        "csp.ordering.v1.OrderingService",
        "csp.licensing.v1.LicensingService",
        "csp.audit.v1.AuditService",
        "csp.support.v1.SupportService",
    ] {
        assert_eq!(
            csp::health_status(addr, service).await.unwrap(),
            "SERVING",
            "{service:?}"
        );
    }
    // Right away, a catalog call through the gateway is served (no
    // "starting" answers after the gateway says SERVING).
    let mut catalog = system.catalog(&[Role::SalesAgent]).await;
    catalog.list_markets(ListMarketsRequest {}).await.unwrap();
    system.stop().await;
}

/// A stand-in catalog that reports what arrived with each call, so the test
/// can see what the gateway forwards.
struct Recorder;

#[tonic::async_trait]
impl csp_proto::catalog::v1::catalog_service_server::CatalogService for Recorder {
    async fn list_markets(
        &self,
        request: tonic::Request<ListMarketsRequest>,
    ) -> Result<tonic::Response<csp_proto::catalog::v1::ListMarketsResponse>, tonic::Status> {
        let caller = csp_kit::Caller::user_of(&request)?.clone();
        let seen = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let mut response = tonic::Response::new(csp_proto::catalog::v1::ListMarketsResponse {
            markets: vec![csp_proto::catalog::v1::Market {
                code: caller.partner_id.to_string(),
                display_name: caller.roles.names().join(","),
                currency_code: seen("grpc-timeout"),
                ..Default::default()
            }],
        });
        let metadata = response.metadata_mut();
        metadata.insert("seen-authorization", seen("authorization").parse().unwrap());
        metadata.insert("seen-request-id", seen("x-request-id").parse().unwrap());
        Ok(response)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_receives_the_verified_caller_deadline_and_request_id_but_not_the_token() {
    csp_tests::logs::init();
    // The recording catalog, behind the same identity check as real backends.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let verifier = csp_tests::verifier(ServiceName::Catalog);
    let backend_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            csp_kit::server::run_backend("recorder", backend, &verifier, shutdown, |routes| {
                routes.add_service(
                    csp_proto::catalog::v1::catalog_service_server::CatalogServiceServer::new(
                        Recorder,
                    ),
                )
            })
            .await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    let url = format!("http://{backend_addr}");
    let config = csp_tests::dev_gateway_config(
        gateway_addr,
        csp_gateway::Backends::at(url.clone(), url.clone(), url.clone(), url.clone(), url),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_task = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));

    let partner = uuid::Uuid::new_v4();
    let token = mint(
        partner,
        &[Role::HelpdeskAgent, Role::AccountAdmin],
        Duration::from_secs(60),
    );
    let mut client =
        CatalogServiceClient::with_interceptor(connect(gateway_addr).await, Bearer::new(&token));
    let mut request = tonic::Request::new(ListMarketsRequest {});
    request.set_timeout(Duration::from_secs(7));
    request
        .metadata_mut()
        .insert("x-request-id", "seen-through-1".parse().unwrap());
    let response = client.list_markets(request).await.unwrap();
    let metadata = response.metadata().clone();
    let market = response.into_inner().markets.remove(0);
    assert_eq!(
        market.code,
        partner.to_string(),
        "the partner comes from the token"
    );
    assert_eq!(market.display_name, "helpdesk_agent,account_admin");
    let timeout = grpc_timeout(&market.currency_code).unwrap_or_else(|| {
        panic!(
            "no deadline reached the backend: grpc-timeout {:?}",
            market.currency_code
        )
    });
    assert!(
        timeout > Duration::from_secs(6) && timeout <= Duration::from_secs(7),
        "{timeout:?}"
    );
    assert_eq!(
        metadata.get("seen-authorization").unwrap(),
        "",
        "the user's token was forwarded"
    );
    assert_eq!(metadata.get("seen-request-id").unwrap(), "seen-through-1");

    // A call without a deadline gets the gateway's default one.
    let market = client
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap()
        .into_inner()
        .markets
        .remove(0);
    assert_eq!(
        grpc_timeout(&market.currency_code),
        Some(Duration::from_secs(csp_gateway::DEFAULT_DEADLINE_SECS)),
        "no default deadline reached the backend: {:?}",
        market.currency_code
    );

    trigger.fire();
    gateway_task.await.unwrap().unwrap();
    backend_task.await.unwrap().unwrap();
}

/// Parses a `grpc-timeout` value ("7S", "6999870u", ...).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_backend_is_not_serving_and_refuses_calls_until_ready() {
    csp_tests::logs::init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let starting = csp_kit::server::start_backend(
        "recorder",
        listener,
        &csp_tests::verifier(ServiceName::Catalog),
        shutdown,
    )
    .await
    .unwrap();

    let health = |addr| async move {
        let mut client = tonic_health::pb::health_client::HealthClient::new(connect(addr).await);
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status
    };
    assert_eq!(
        health(addr).await,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    // What `csp health` and the probes ask: liveness is SERVING from the
    // first moment, so a migrating pod is not restarted.
    assert_eq!(csp::health_status(addr, "").await.unwrap(), "NOT_SERVING");
    assert_eq!(
        csp::health_status(addr, csp_kit::server::LIVENESS)
            .await
            .unwrap(),
        "SERVING"
    );
    let user = UserCaller {
        partner_id: uuid::Uuid::new_v4().into(),
        user_id: "u".into(),
        display_name: "U".into(),
        roles: [Role::AdminAgent].into_iter().collect(),
    };
    let key = csp_tests::signer(ServiceName::Gateway);
    let mut client = CatalogServiceClient::with_interceptor(
        connect(addr).await,
        Identity(key.mint_for_user(&user, LIST_MARKETS).unwrap().to_string()),
    );
    let status = client
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("starting"),
        "{}",
        status.message()
    );

    let served = tokio::spawn(starting.ready(|routes| {
        routes.add_service(
            csp_proto::catalog::v1::catalog_service_server::CatalogServiceServer::new(Recorder),
        )
    }));
    for _ in 0..100 {
        if health(addr).await
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        health(addr).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(client.list_markets(ListMarketsRequest {}).await.is_ok());
    trigger.fire();
    served.await.unwrap().unwrap();
}

/// Waits (bounded) until the overall health of `addr` is `wanted`.
async fn health_becomes(addr: std::net::SocketAddr, wanted: &str) -> String {
    let mut status = String::new();
    for _ in 0..200 {
        status = csp::health_status(addr, "").await.unwrap();
        if status == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_database_stops_answering_is_not_serving_but_alive() {
    csp_tests::logs::init();
    let dir = std::env::temp_dir().join(format!("csp-test-{}", uuid::Uuid::new_v4().simple()));
    let db = csp_store::db::Db::connect(&format!("sqlite://{}", dir.join("watched.db").display()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let starting = csp_kit::server::start_backend(
        "watched",
        listener,
        &csp_tests::verifier(ServiceName::Catalog),
        shutdown,
    )
    .await
    .unwrap();
    let watched = db.clone();
    let served = tokio::spawn(async move {
        starting
            .ready_watching(
                csp_store::backend::probe(&watched),
                Duration::from_millis(20),
                |routes| {
                    routes.add_service(
                        csp_proto::catalog::v1::catalog_service_server::CatalogServiceServer::new(
                            Recorder,
                        ),
                    )
                },
            )
            .await
    });
    assert_eq!(health_becomes(addr, "SERVING").await, "SERVING");

    // The database goes away (here: its pool is closed).
    db.close().await;
    assert_eq!(health_becomes(addr, "NOT_SERVING").await, "NOT_SERVING");
    assert_eq!(
        csp::health_status(addr, csp_kit::server::LIVENESS)
            .await
            .unwrap(),
        "SERVING",
        "a process without its database is taken out of traffic, not restarted"
    );

    trigger.fire();
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_rate_is_told_when_to_retry_and_another_partner_is_not_slowed() {
    let system = TestSystem::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let config = csp_gateway::Config {
        limits: csp_gateway::limits::LimitArgs {
            user_rate: 1,
            user_burst: 3,
            ..csp_gateway::limits::LimitArgs::default()
        },
        ..system.gateway_config(addr)
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));
    let client = |partner: uuid::Uuid| async move {
        CatalogServiceClient::with_interceptor(
            connect(addr).await,
            Bearer::new(&mint(partner, &[Role::SalesAgent], Duration::from_secs(60))),
        )
    };
    let mut eager = client(system.partner).await;
    for _ in 0..3 {
        eager.list_markets(ListMarketsRequest {}).await.unwrap();
    }
    let status = eager.list_markets(ListMarketsRequest {}).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo says when to retry");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // Another partner's user is not slowed by it.
    let mut other = client(uuid::Uuid::new_v4()).await;
    for _ in 0..3 {
        other.list_markets(ListMarketsRequest {}).await.unwrap();
    }
    // After the wait, the first user is served again.
    tokio::time::sleep(retry).await;
    eager.list_markets(ListMarketsRequest {}).await.unwrap();
    // The refusal is counted.
    let metrics = csp_kit::metrics::render().await;
    assert!(
        metrics
            .contains("csp_gateway_limited_calls_total{service=\"gateway\",scope=\"user_rate\"}"),
        "{metrics}"
    );
    trigger.fire();
    gateway.await.unwrap().unwrap();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_listener_closes_silent_connections_and_caps_open_ones() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let system = TestSystem::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let config = csp_gateway::Config {
        http_limits: csp_gateway::listener::HttpLimits {
            idle_timeout_secs: 1,
            max_connections: 2,
        },
        ..system.gateway_config(addr)
    };
    let gateway = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));

    // A half-sent request is closed after the silence.
    let mut slow = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    slow.write_all(b"GET /download/abc HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buffer))
        .await
        .expect("a silent connection is closed, not kept");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the half-sent request got an answer: {closed:?}"
    );

    // Two silent connections fill the cap: a third is not served...
    let _first = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    third
        .write_all(b"GET /download/abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buffer)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");
    // ... until the silent ones are closed and free their slots.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    trigger.fire();
    gateway.await.unwrap().unwrap();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_download_slower_than_the_idle_timeout_is_not_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let system = TestSystem::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let url = |a: std::net::SocketAddr| format!("http://{a}");
    let content = system.content_args(Some(url(http_addr)));
    let config = csp_gateway::Config {
        http_limits: csp_gateway::listener::HttpLimits {
            idle_timeout_secs: 1,
            max_connections: 4,
        },
        content: content.clone(),
        ..system.gateway_config(addr)
    };
    let gateway = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));
    wait_for_listener(http_addr).await;

    // A 24 MiB file, read at about 8 MiB/s: three seconds of sending, with
    // the client sending nothing after its request.
    let selection = csp_licensing::domain::Selection {
        version: "2022".into(),
        language: "en-US".into(),
        file_type: "vhdx-x64".into(),
    };
    let bytes = vec![b'v'; 24 * 1024 * 1024];
    system
        .software_files()
        .await
        .put("windows-server-standard", &selection, &bytes[..], |_| {})
        .await
        .unwrap();
    let store = csp_content::ContentStore::open(&content, "test", false).unwrap();
    let key =
        csp_content::ObjectKey::software("windows-server-standard", "2022", "en-US", "vhdx-x64")
            .unwrap();
    let signed = store
        .signed_url(&key, csp_content::Purpose::Software)
        .await
        .unwrap()
        .url;
    let path = &signed[signed.find("/files/").unwrap()..];
    let mut stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the download stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        received += n;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        received > bytes.len(),
        "cut off after {received} of {} bytes",
        bytes.len()
    );
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the download was not slow: {:?}",
        started.elapsed()
    );
    trigger.fire();
    gateway.await.unwrap().unwrap();
    system.stop().await;
}

/// Waits until something accepts connections at `addr`.
async fn wait_for_listener(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens at {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_process_the_gateway_calls_a_backend_without_a_socket() {
    let system = TestSystem::start().await;
    // An address where nothing listens, registered in this process as the
    // catalog: only an in-process call can reach it.
    // Bound (so no other test takes it) but not listening: connections to
    // it are refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let nowhere = reserved.local_addr().unwrap();
    let catalog = csp_kit::inproc::lookup(system.addresses.catalog)
        .expect("the catalog of this process registers itself");
    let registration = csp_kit::inproc::register(nowhere, catalog);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let config = csp_tests::dev_gateway_config(addr, system.backends_with(Some(nowhere), None));
    let gateway = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));
    let mut client =
        csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient::with_interceptor(
            csp_tests::connect(addr).await,
            csp_tests::Bearer::new(&system.token(&[Role::SalesAgent])),
        );
    let markets = client
        .list_markets(csp_proto::catalog::v1::ListMarketsRequest {})
        .await
        .unwrap()
        .into_inner()
        .markets;
    assert!(!markets.is_empty(), "answered in process");
    // Withdrawn (as at a backend's shutdown), the call goes to the network,
    // where nothing listens.
    registration.withdraw();
    let status = client
        .list_markets(csp_proto::catalog::v1::ListMarketsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    trigger.fire();
    gateway.await.unwrap().unwrap();
    drop(reserved);
    system.stop().await;
}

/// The services reflection v1 (grpcurl) and v1alpha (Python grpcio's
/// reflection client) list at `addr`, and whether v1alpha resolves the
/// catalog service's file.
async fn reflected_services(addr: std::net::SocketAddr) -> (Vec<String>, Vec<String>, bool) {
    use tonic_reflection::pb::{v1, v1alpha};
    let channel = connect(addr).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 answers")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("reflection v1 did not list services: {answer:?}");
    };
    let v1_names = list.service.into_iter().map(|s| s.name).collect();

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let requests = [
        v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "csp.catalog.v1.CatalogService".to_owned(),
        ),
    ]
    .map(|message| v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection v1alpha answers")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("a first answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("reflection v1alpha did not list services: {answer:?}");
    };
    let v1alpha_names = list.service.into_iter().map(|s| s.name).collect();
    let answer = answers.message().await.unwrap().expect("a second answer");
    let resolved = matches!(
        answer.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files))
            if !files.file_descriptor_proto.is_empty()
    );
    (v1_names, v1alpha_names, resolved)
}

/// Reflection is made on its first call; both versions answer the same, on
/// the gateway (public services only) and on a backend (every service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_in_both_versions_on_the_gateway_and_on_a_backend() {
    let system = TestSystem::start().await;
    for (addr, lists_internal) in [
        (system.addresses.gateway, false),
        (system.addresses.licensing, true),
    ] {
        let (mut v1, mut v1alpha, resolved) = reflected_services(addr).await;
        // A backend lists the reflection version asked (tonic's way).
        for names in [&mut v1, &mut v1alpha] {
            names.retain(|s| !s.starts_with("grpc.reflection."));
        }
        assert_eq!(v1, v1alpha, "both versions list the same services");
        assert!(
            v1.iter().any(|s| s == "csp.licensing.v1.LicensingService"),
            "{v1:?}"
        );
        assert!(v1.iter().any(|s| s == "grpc.health.v1.Health"), "{v1:?}");
        assert_eq!(
            v1.iter().any(|s| s.contains("Internal")),
            lists_internal,
            "{addr}: {v1:?}"
        );
        assert!(resolved, "{addr}: v1alpha resolves the catalog's file");
    }
    system.stop().await;
}
