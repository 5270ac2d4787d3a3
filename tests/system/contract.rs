//! The contract itself: every public RPC declares who may call it, and the
//! declarations match the capability matrix of `DOMAIN.md`.

use csp_kit::access::{self, PublicMethod};
use csp_kit::roles::{Role, RoleSet};
use csp_tests::{TestSystem, raw};
use tonic::Code;

/// The capability matrix of domain.md, written out independently of the
/// proto options.
fn capability(method: &PublicMethod) -> Option<RoleSet> {
    use Role::*;
    let browse = [
        AdminAgent,
        SalesAgent,
        HelpdeskAgent,
        GlobalAdmin,
        AccountAdmin,
        ReferralAdmin,
        MarketingContentAdmin,
        BillingAdmin,
    ];
    let view = [AdminAgent, SalesAgent, HelpdeskAgent, GlobalAdmin];
    let billing = [GlobalAdmin, BillingAdmin];
    let buy = [AdminAgent, SalesAgent];
    let software = [AdminAgent];
    let tickets = [AdminAgent, HelpdeskAgent, GlobalAdmin];
    let activity = [
        GlobalAdmin,
        AccountAdmin,
        ReferralAdmin,
        MarketingContentAdmin,
    ];
    let roles: &[Role] = match (method.service.as_str(), method.method.as_str()) {
        ("csp.catalog.v1.CatalogService", _) => &browse,
        ("csp.ordering.v1.OrderingService", "CreateCustomer" | "PlaceOrder") => &buy,
        ("csp.ordering.v1.OrderingService", m) if m.starts_with("Get") || m.starts_with("List") => {
            &view
        }
        ("csp.ordering.v1.BillingService", _) => &billing,
        ("csp.licensing.v1.LicensingService", _) => &software,
        // Refund tickets are further limited to admin agents by the support
        // service itself; the gateway lets every ticket role through.
        ("csp.support.v1.SupportService", _) => &tickets,
        ("csp.audit.v1.AuditService", _) => &activity,
        _ => return None,
    };
    Some(roles.iter().copied().collect())
}

fn methods() -> Vec<PublicMethod> {
    access::public_methods(csp_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

#[test]
fn every_public_rpc_declares_the_roles_that_may_call_it() {
    let methods = methods();
    assert!(
        methods.len() >= 20,
        "only {} public RPCs found",
        methods.len()
    );
    let undeclared: Vec<&str> = methods
        .iter()
        .filter(|m| !m.declares_access || m.roles.is_empty())
        .map(|m| m.path.as_str())
        .collect();
    assert!(
        undeclared.is_empty(),
        "public RPCs without (csp.auth.v1.access): {undeclared:?}"
    );
}

#[test]
fn the_public_services_are_exposed_and_internal_ones_are_not() {
    let mut services = access::public_services(csp_proto::FILE_DESCRIPTOR_SET).unwrap();
    services.sort();
    assert_eq!(
        services,
        [
            "csp.audit.v1.AuditService",
            "csp.catalog.v1.CatalogService",
            "csp.licensing.v1.LicensingService",
            "csp.ordering.v1.BillingService",
            "csp.ordering.v1.OrderingService",
            "csp.support.v1.SupportService",
        ]
    );
}

#[test]
fn declared_roles_match_the_domain_matrix() {
    for method in methods() {
        let expected = capability(&method).unwrap_or_else(|| {
            panic!(
                "{} is not in the test's capability matrix; add it",
                method.path
            )
        });
        assert_eq!(
            method.roles, expected,
            "{} declares the wrong roles",
            method.path
        );
    }
}

/// Calls every public RPC with every role through the gateway: exactly the
/// roles of the matrix get past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_matrix_roles_get_past_the_gateway() {
    let system = TestSystem::start().await;
    let channel = system.gateway().await;
    let mut checked = 0;
    for method in methods() {
        let expected =
            capability(&method).unwrap_or_else(|| panic!("{} is not in the matrix", method.path));
        for role in Role::ALL {
            let authorization = format!("Bearer {}", system.token(&[role]));
            let status = raw::call_empty(
                channel.clone(),
                &method.path,
                method.server_streaming,
                Some(&authorization),
            )
            .await;
            if expected.contains(role) {
                assert!(
                    !matches!(
                        status.code(),
                        Code::PermissionDenied | Code::Unauthenticated | Code::Unavailable
                    ),
                    "{role} should get past the gateway to {}, got {:?}: {}",
                    method.path,
                    status.code(),
                    status.message()
                );
            } else {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{role} should be denied {}: {}",
                    method.path,
                    status.message()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 140, "only {checked} calls made");
    system.stop().await;
}

/// A user with several roles has the union of their capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_roles_grant_the_union() {
    let system = TestSystem::start().await;
    let channel = system.gateway().await;
    let token = system.token(&[Role::SalesAgent, Role::AccountAdmin]);
    let authorization = format!("Bearer {token}");
    let audit = raw::call_empty(
        channel.clone(),
        "/csp.audit.v1.AuditService/ListActivity",
        false,
        Some(&authorization),
    )
    .await;
    assert_ne!(audit.code(), Code::PermissionDenied, "{}", audit.message());
    let order = raw::call_empty(
        channel.clone(),
        "/csp.ordering.v1.OrderingService/PlaceOrder",
        false,
        Some(&authorization),
    )
    .await;
    assert_ne!(order.code(), Code::PermissionDenied, "{}", order.message());
    let keys = raw::call_empty(
        channel,
        "/csp.licensing.v1.LicensingService/GetKeysAndDownloads",
        false,
        Some(&authorization),
    )
    .await;
    assert_eq!(keys.code(), Code::PermissionDenied);
    system.stop().await;
}
