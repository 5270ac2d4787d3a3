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
