//! Sign-in through a real OpenID Connect provider (the npm package
//! oidc-provider): a production gateway (no --dev) takes its tokens, signed
//! RS256, ES256 or EdDSA, checks every claim, follows a key rotation, and
//! keeps working on cached keys while the provider is down.

use csp_gateway::oidc::OidcArgs;
use csp_proto::catalog::v1::ListMarketsRequest;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::ordering::v1::ListCustomersRequest;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_tests::oidc::{AUDIENCE, EDDSA, ES256, OTHER_AUDIENCE, Provider, RS256, User};
use csp_tests::{Bearer, Instance, TestSystem, connect};
use tonic::Code;

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn args(provider: &Provider) -> OidcArgs {
    args_for_issuer(&provider.issuer)
}

/// Trusts `issuer` for the test audience, fetching every unknown key at
/// once (the rotation tests).
fn args_for_issuer(issuer: &str) -> OidcArgs {
    OidcArgs {
        issuers: vec![issuer.to_owned()],
        audience: Some(AUDIENCE.to_owned()),
        refetch_secs: 0,
        ..OidcArgs::default()
    }
}

/// ListMarkets through `gateway` with `token`: the status code and message.
async fn list_markets(gateway: std::net::SocketAddr, token: &str) -> (Code, String) {
    let mut client =
        CatalogServiceClient::with_interceptor(connect(gateway).await, Bearer::new(token));
    match client.list_markets(ListMarketsRequest {}).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_sign_in_and_every_bad_claim_is_refused() {
    let system = TestSystem::start().await;
    let partner = system.partner;
    let provider = Provider::start(&[
        User::new("admin", partner, &["admin_agent"]),
        User::new("nobody", partner, &[]),
    ]);
    let addr = free_addr();
    let gateway = Instance::oidc_gateway(&system, addr, args(&provider)).await;

    // A good token of each algorithm; the partner is the token's tid.
    for resource in [RS256, ES256, EDDSA] {
        let token = provider.token("admin", resource).await;
        assert_eq!(
            list_markets(addr, &token).await,
            (Code::Ok, String::new()),
            "{resource}"
        );
    }
    let token = provider.token("admin", ES256).await;
    let mut ordering =
        OrderingServiceClient::with_interceptor(connect(addr).await, Bearer::new(&token));
    ordering
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap();
    // Roles come from the token: none, no access.
    let nobody = provider.token("nobody", RS256).await;
    assert_eq!(list_markets(addr, &nobody).await.0, Code::PermissionDenied);
    // Another API's token, and a development token, are not this gateway's.
    let other = provider.token("admin", OTHER_AUDIENCE).await;
    let (code, message) = list_markets(addr, &other).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("aud"), "{message}");
    let development = system.token(&[csp_kit::roles::Role::AdminAgent]);
    let (code, message) = list_markets(addr, &development).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("development gateway"), "{message}");

    // Claims the provider would never issue, signed with its own key.
    let now = now();
    let good = serde_json::json!({
        "iss": provider.issuer, "aud": AUDIENCE, "sub": "forged",
        "tid": partner.to_string(), "oid": "oid-forged", "name": "Forged",
        "roles": ["admin_agent"], "iat": now, "nbf": now, "exp": now + 600,
    });
    let signed = |claims: &serde_json::Value| provider.sign("ES256", claims);
    assert_eq!(
        list_markets(addr, &signed(&good)).await.0,
        Code::Ok,
        "the forging works"
    );
    let with = |changes: &[(&str, serde_json::Value)]| {
        let mut claims = good.clone();
        for (name, value) in changes {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(*name);
            } else {
                claims[*name] = value.clone();
            }
        }
        claims
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "expired",
            with(&[
                ("iat", (now - 1200).into()),
                ("nbf", (now - 1200).into()),
                ("exp", (now - 600).into()),
            ]),
            "expired",
        ),
        ("not yet valid", with(&[("nbf", (now + 600).into())]), "nbf"),
        (
            "issued in the future",
            with(&[("iat", (now + 600).into())]),
            "iat claim is in the future",
        ),
        (
            "too old",
            with(&[
                ("iat", (now - 2 * 86_400).into()),
                ("nbf", (now - 2 * 86_400).into()),
            ]),
            "older than",
        ),
        ("no nbf", with(&[("nbf", serde_json::Value::Null)]), "nbf"),
        ("no iat", with(&[("iat", serde_json::Value::Null)]), "iat"),
        ("no exp", with(&[("exp", serde_json::Value::Null)]), "exp"),
        ("no aud", with(&[("aud", serde_json::Value::Null)]), "aud"),
        (
            "another audience",
            with(&[("aud", "api://other".into())]),
            "aud",
        ),
        ("no iss", with(&[("iss", serde_json::Value::Null)]), "iss"),
        (
            "an unknown issuer",
            with(&[("iss", "https://login.example/other".into())]),
            "issuer",
        ),
        (
            "a partner that is no UUID",
            with(&[("tid", "contoso".into())]),
            "tid claim (the partner) is not a UUID",
        ),
        (
            "no user",
            with(&[("oid", serde_json::Value::Null)]),
            "oid claim (the user) is missing",
        ),
    ];
    for (case, claims, expected) in cases {
        let (code, message) = list_markets(addr, &signed(&claims)).await;
        assert_eq!(code, Code::Unauthenticated, "{case}: {message}");
        assert!(message.contains(expected), "{case}: {message}");
    }
    // A token signed by a key the provider does not publish.
    let stranger = Provider::start(&[]);
    let (code, _) = list_markets(addr, &stranger.sign("ES256", &good)).await;
    assert_eq!(code, Code::Unauthenticated);
    stranger.stop();

    gateway.stop().await;
    provider.stop();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_and_cached_keys_outlive_the_provider() {
    let system = TestSystem::start().await;
    let users = [User::new("admin", system.partner, &["admin_agent"])];
    let provider = Provider::start(&users);
    let port = provider.port;
    let addr = free_addr();
    let gateway = Instance::oidc_gateway(&system, addr, args(&provider)).await;
    let before = provider.token("admin", ES256).await;
    assert_eq!(list_markets(addr, &before).await.0, Code::Ok);

    // The provider rotates: a restart with fresh keys on the same issuer.
    provider.stop();
    let provider = Provider::start_on(port, &users);
    let after = provider.token("admin", ES256).await;
    assert_eq!(
        list_markets(addr, &after).await,
        (Code::Ok, String::new()),
        "the new key is fetched when a token names it"
    );
    // The old key is gone from the provider's set, so its tokens too.
    assert_eq!(list_markets(addr, &before).await.0, Code::Unauthenticated);

    // The provider goes down: cached keys keep working...
    let unknown_kid = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("es256-never-published".to_owned());
        let claims = serde_json::json!({"iss": provider.issuer, "aud": AUDIENCE});
        let token = provider.sign("ES256", &claims);
        // Same signature bytes, another kid: the gateway must look it up.
        let (_, rest) = token.split_once('.').unwrap();
        format!(
            "{}.{rest}",
            base64url(&serde_json::to_vec(&header).unwrap())
        )
    };
    provider.stop();
    assert_eq!(list_markets(addr, &after).await.0, Code::Ok);
    // ...and a key it cannot fetch is UNAVAILABLE, never accepted.
    let (code, message) = list_markets(addr, &unknown_kid).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("cannot be reached"), "{message}");

    // A gateway that starts while the provider is down has no key at all.
    let second_addr = free_addr();
    let second = Instance::oidc_gateway(
        &system,
        second_addr,
        args_for_issuer(&format!("http://127.0.0.1:{port}")),
    )
    .await;
    let (code, message) = list_markets(second_addr, &after).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("cannot be reached"), "{message}");

    second.stop().await;
    gateway.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_issuers_are_trusted_each_with_its_own_keys() {
    let system = TestSystem::start().await;
    let contoso = Provider::start(&[User::new("contoso-admin", system.partner, &["admin_agent"])]);
    let fabrikam = Provider::start(&[User::new(
        "fabrikam-admin",
        system.partner,
        &["admin_agent"],
    )]);
    let addr = free_addr();
    let gateway = Instance::oidc_gateway(
        &system,
        addr,
        OidcArgs {
            issuers: vec![contoso.issuer.clone(), fabrikam.issuer.clone()],
            ..args(&contoso)
        },
    )
    .await;
    for (provider, user) in [(&contoso, "contoso-admin"), (&fabrikam, "fabrikam-admin")] {
        let token = provider.token(user, EDDSA).await;
        assert_eq!(list_markets(addr, &token).await.0, Code::Ok, "{user}");
    }
    // One issuer's name on a token signed with the other's key is refused.
    let now = now();
    let claims = serde_json::json!({
        "iss": contoso.issuer, "aud": AUDIENCE, "tid": system.partner.to_string(),
        "oid": "x", "roles": ["admin_agent"], "iat": now, "nbf": now, "exp": now + 600,
    });
    let (code, _) = list_markets(addr, &fabrikam.sign("ES256", &claims)).await;
    assert_eq!(code, Code::Unauthenticated);
    gateway.stop().await;
    system.stop().await;
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
