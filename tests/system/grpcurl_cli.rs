//! The running system driven with the real grpcurl binary: list, describe,
//! a call, health, and an error as a user sees them.

use csp_kit::roles::Role;
use csp_tests::{TestSystem, grpcurl};

fn stdout_of(args: &[&str]) -> String {
    let output = grpcurl::run(args);
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_the_gateway() {
    let system = TestSystem::start().await;
    let addr = system.addresses.gateway.to_string();
    let token = system.token(&[Role::SalesAgent]);
    let header = format!("authorization: Bearer {token}");

    // grpcurl blocks; run it off the async threads.
    let (list, describe, products, health, denied, internal) =
        tokio::task::spawn_blocking(move || {
            let list = stdout_of(&["-plaintext", &addr, "list"]);
            let describe = stdout_of(&[
                "-plaintext",
                &addr,
                "describe",
                "csp.catalog.v1.CatalogService",
            ]);
            let products = stdout_of(&[
                "-plaintext",
                "-H",
                &header,
                "-d",
                r#"{"market":"AU","page_size":100}"#,
                &addr,
                "csp.catalog.v1.CatalogService/ListProducts",
            ]);
            let health = stdout_of(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
            let denied = grpcurl::run(&[
                "-plaintext",
                "-H",
                &header,
                "-d",
                r#"{"customer_tenant_id":"x"}"#,
                &addr,
                "csp.licensing.v1.LicensingService/ListSoftware",
            ]);
            let internal = grpcurl::run(&[
                "-plaintext",
                &addr,
                "describe",
                "csp.licensing.v1.LicensingInternalService",
            ]);
            (list, describe, products, health, denied, internal)
        })
        .await
        .unwrap();

    for service in [
        "csp.catalog.v1.CatalogService",
        "csp.ordering.v1.OrderingService",
        "csp.ordering.v1.BillingService",
        "csp.licensing.v1.LicensingService",
        "csp.audit.v1.AuditService",
        "csp.support.v1.SupportService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.lines().any(|l| l == service),
            "{service} missing from:\n{list}"
        );
    }
    assert!(
        !list.contains("Internal"),
        "internal services are listed:\n{list}"
    );
    assert!(describe.contains("rpc ListProducts"), "{describe}");
    assert!(describe.contains("csp.auth.v1.access"), "{describe}");
    assert!(
        describe.contains("Azure reservations"),
        "comments missing:\n{describe}"
    );
    assert!(products.contains("\"taxIncluded\": true"), "{products}");
    assert!(products.contains("\"currencyCode\": \"AUD\""), "{products}");
    assert!(health.contains("SERVING"), "{health}");
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(stderr.contains("admin_agent"), "{stderr}");
    // Reflection on the public port resolves no internal service.
    assert!(
        !internal.status.success(),
        "an internal service is described on the public port:\n{}",
        String::from_utf8_lossy(&internal.stdout)
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reads_prices_as_of_a_time_and_billing_as_a_billing_admin() {
    let system = TestSystem::start().await;
    system
        .purchase(
            "grpcurl-billing.example.com",
            &["windows-server-standard-p1y"],
        )
        .await;
    let addr = system.addresses.gateway.to_string();
    let sales = format!(
        "authorization: Bearer {}",
        system.token(&[Role::SalesAgent])
    );
    let billing = format!(
        "authorization: Bearer {}",
        system.token(&[Role::BillingAdmin])
    );
    let month = csp_kit::clock::to_date(csp_kit::clock::Clock::now(&csp_kit::clock::SystemClock))
        [..7]
        .to_owned();
    let (price, statement, export, bad) = tokio::task::spawn_blocking(move || {
        let price = stdout_of(&[
            "-plaintext",
            "-H",
            &sales,
            "-d",
            r#"{"sku_id":"windows-server-standard-p1y","market":"US","as_of":"2026-12-01T00:00:00Z"}"#,
            &addr,
            "csp.catalog.v1.CatalogService/GetSkuPrice",
        ]);
        let month_json = format!(r#"{{"month":"{month}"}}"#);
        let statement = stdout_of(&[
            "-plaintext",
            "-H",
            &billing,
            "-d",
            &month_json,
            &addr,
            "csp.ordering.v1.BillingService/GetBillingStatement",
        ]);
        let export = stdout_of(&[
            "-plaintext",
            "-H",
            &billing,
            "-d",
            &month_json,
            &addr,
            "csp.ordering.v1.BillingService/ExportBillingLineItems",
        ]);
        let bad = grpcurl::run(&[
            "-plaintext",
            "-H",
            &billing,
            "-d",
            r#"{"month":"2026-13"}"#,
            &addr,
            "csp.ordering.v1.BillingService/GetBillingStatement",
        ]);
        (price, statement, export, bad)
    })
    .await
    .unwrap();
    assert!(price.contains("\"minorUnits\": \"40000\""), "{price}");
    assert!(
        statement.contains("\"currencyCode\": \"USD\""),
        "{statement}"
    );
    assert!(
        statement.contains("\"lineItemCount\": \"1\""),
        "{statement}"
    );
    // The CSV arrives base64-encoded in grpcurl's JSON.
    let data: serde_json::Value = serde_json::from_str(&export).unwrap();
    let csv = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        data["data"].as_str().unwrap(),
    )
    .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("LineItemId,ChargeType,"), "{csv}");
    assert!(
        csv.contains(
            ",windows-server-standard-p1y,windows-server-standard,US,USD,1,400.00,400.00,"
        ),
        "{csv}"
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("month"),
        "{stderr}"
    );
    system.stop().await;
}
