//! Prometheus metrics on `/metrics`: calls by service, method and status
//! code, latency histograms, outbox backlog, database pools.
//!
//! The registry is per process and tests run side by side, so counts are
//! checked as "at least"; what one test caused is told apart by method and
//! code.

use csp_kit::roles::Role;
use csp_proto::catalog::v1::{GetProductRequest, ListMarketsRequest};
use csp_tests::TestSystem;
use tonic::Code;
use uuid::Uuid;

async fn scrape(system: &TestSystem) -> String {
    let addr = system
        .addresses
        .metrics
        .expect("test systems serve metrics");
    let answer = csp_tests::http::get(&format!("http://{addr}/metrics")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_service_method_and_code_and_timed() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::SalesAgent]).await;
    catalog.list_markets(ListMarketsRequest {}).await.unwrap();
    let missing = catalog
        .get_product(GetProductRequest {
            product_id: "no-such-product".into(),
            market: "US".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let text = scrape(&system).await;
    const LIST: &str = "/csp.catalog.v1.CatalogService/ListMarkets";
    const GET: &str = "/csp.catalog.v1.CatalogService/GetProduct";
    for service in ["gateway", "catalog"] {
        let ok = csp_tests::metric_sample(
            &text,
            "csp_grpc_server_handled_total",
            &[("service", service), ("method", LIST), ("code", "OK")],
        );
        assert!(ok >= Some(1.0), "{service} {LIST} OK: {ok:?}\n{text}");
        let not_found = csp_tests::metric_sample(
            &text,
            "csp_grpc_server_handled_total",
            &[("service", service), ("method", GET), ("code", "NOT_FOUND")],
        );
        assert!(
            not_found >= Some(1.0),
            "{service} {GET}: {not_found:?}\n{text}"
        );
        let timed = csp_tests::metric_sample(
            &text,
            "csp_grpc_server_handling_seconds_count",
            &[("service", service), ("method", LIST)],
        );
        assert!(timed >= Some(1.0), "{service} latency count: {timed:?}");
        let slowest_bucket = csp_tests::metric_sample(
            &text,
            "csp_grpc_server_handling_seconds_bucket",
            &[("le", "+Inf"), ("service", service), ("method", LIST)],
        );
        assert_eq!(
            slowest_bucket, timed,
            "every call falls in the +Inf bucket\n{text}"
        );
    }
    // Health probes are counted under their own method; nothing else leaks
    // an unbounded label.
    assert!(
        !text.contains("no-such"),
        "a request field became a label:\n{text}"
    );
    for service in ["catalog", "ordering", "licensing", "audit", "support"] {
        let max = csp_tests::metric_sample(
            &text,
            "csp_db_pool_max_connections",
            &[("service", service)],
        );
        assert!(max >= Some(1.0), "{service} pool size: {max:?}\n{text}");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_answers_are_counted_by_status_without_the_token() {
    let system = TestSystem::start().await;
    let token = "not-a-real-download-token-0123456789";
    let answer = csp_tests::http::get(&format!(
        "http://{}/download/{token}",
        system.addresses.gateway_http
    ))
    .await;
    assert_eq!(answer.status, 404, "{answer:?}");
    let text = scrape(&system).await;
    let counted = csp_tests::metric_sample(
        &text,
        "csp_http_server_responses_total",
        &[
            ("service", "gateway"),
            ("route", "/download"),
            ("code", "404"),
        ],
    );
    assert!(counted >= Some(1.0), "{counted:?}\n{text}");
    assert!(!text.contains(token), "a download token became a label");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_counted_as_other() {
    let system = TestSystem::start().await;
    let bearer = format!("Bearer {}", system.token(&[Role::SalesAgent]));
    let status = csp_tests::raw::call_empty(
        system.gateway().await,
        "/csp.catalog.v1.NoSuchService/Nothing",
        false,
        Some(&bearer),
    )
    .await;
    assert_eq!(status.code(), Code::Unimplemented);
    let text = scrape(&system).await;
    let other = csp_tests::metric_sample(
        &text,
        "csp_grpc_server_handled_total",
        &[
            ("service", "gateway"),
            ("method", "other"),
            ("code", "UNIMPLEMENTED"),
        ],
    );
    assert!(other >= Some(1.0), "{other:?}\n{text}");
    assert!(!text.contains("NoSuchService"), "{text}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_backlog_shows_what_waits_for_a_service_that_is_down() {
    let system = TestSystem::start_without_audit().await;
    system
        .purchase(
            &format!("metrics-{}.example.com", Uuid::new_v4().simple()),
            &["windows-server-standard-p1y"],
        )
        .await;
    let text = scrape(&system).await;
    let waiting = csp_tests::metric_sample(
        &text,
        "csp_outbox_backlog",
        &[("service", "ordering"), ("destination", "audit")],
    );
    assert!(waiting >= Some(1.0), "{waiting:?}\n{text}");
    system.stop().await;
}
