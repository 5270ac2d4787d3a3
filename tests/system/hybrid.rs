//! Azure Hybrid Benefit estimates through the gateway.

use csp_kit::roles::Role;
use csp_proto::catalog::v1::{EstimateHybridBenefitRequest, PlannedVm, WindowsServerEdition};
use csp_tests::TestSystem;
use tonic::Code;
use tonic_types::StatusExt as _;

fn vm(name: &str, virtual_cores: u32, hours_per_month: u32) -> PlannedVm {
    PlannedVm {
        name: name.into(),
        virtual_cores,
        hours_per_month,
    }
}

fn request(
    market: &str,
    edition: WindowsServerEdition,
    core_licenses: u32,
    vms: Vec<PlannedVm>,
) -> EstimateHybridBenefitRequest {
    EstimateHybridBenefitRequest {
        market: market.into(),
        edition: edition as i32,
        core_licenses,
        software_assurance: true,
        on_premises_in_use: false,
        vms,
        migration_overlap_days: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimates_cover_vms_with_the_eight_core_minimum_and_exact_money() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::ReferralAdmin]).await;

    // A 4-core VM needs 8 licenses: 8 cover it, 7 do not.
    let covered = catalog
        .estimate_hybrid_benefit(request(
            "US",
            WindowsServerEdition::Datacenter,
            8,
            vec![vm("web", 4, 730)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(covered.vms[0].core_licenses_needed, 8);
    assert!(covered.vms[0].covered);
    assert_eq!(covered.core_licenses_missing, 0);
    // US demo rates: 9.6 and 5.8 cents per vCPU-hour; 4 x 730 = 2920 vCPU-hours.
    let windows = covered.covered_windows_rate_cost.unwrap();
    let base = covered.covered_base_rate_cost.unwrap();
    let saving = covered.monthly_saving.unwrap();
    assert_eq!(
        (
            windows.currency_code.as_str(),
            windows.minor_units,
            base.minor_units,
            saving.minor_units
        ),
        ("USD", 28_032, 16_936, 11_096)
    );
    assert_eq!(covered.saving_basis_points, 3958, "near the documented 40%");
    assert!(!covered.tax_included);
    assert!(
        covered.summary.contains("USD 110.96 saved"),
        "{}",
        covered.summary
    );

    let short = catalog
        .estimate_hybrid_benefit(request(
            "US",
            WindowsServerEdition::Datacenter,
            7,
            vec![vm("web", 4, 730)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!short.vms[0].covered);
    assert_eq!(short.core_licenses_missing, 1);
    assert_eq!(short.monthly_saving.unwrap().minor_units, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_coverage_names_the_licenses_missing() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::AdminAgent]).await;
    let estimate = catalog
        .estimate_hybrid_benefit(request(
            "DE",
            WindowsServerEdition::Datacenter,
            24,
            vec![vm("a", 16, 730), vm("b", 16, 730), vm("c", 2, 100)],
        ))
        .await
        .unwrap()
        .into_inner();
    let covered: Vec<bool> = estimate.vms.iter().map(|v| v.covered).collect();
    assert_eq!(covered, [true, false, true]);
    assert_eq!(estimate.core_licenses_needed, 40);
    assert_eq!(estimate.core_licenses_missing, 16);
    let covered_windows: i64 = estimate
        .vms
        .iter()
        .filter(|v| v.covered)
        .map(|v| v.windows_rate_cost.as_ref().unwrap().minor_units)
        .sum();
    assert_eq!(
        estimate.covered_windows_rate_cost.unwrap().minor_units,
        covered_windows
    );
    assert_eq!(estimate.monthly_saving.unwrap().currency_code, "EUR");
    assert!(
        estimate.summary.contains("cover 2 of 3"),
        "{}",
        estimate.summary
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_licenses_are_converted_and_datacenter_licenses_reused() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::SalesAgent]).await;
    let vms = || vec![vm("db", 8, 730)];

    let standard = catalog
        .estimate_hybrid_benefit(request("US", WindowsServerEdition::Standard, 8, vms()))
        .await
        .unwrap()
        .into_inner();
    assert!(!standard.licenses_reused);
    assert!(
        standard.summary.contains("converted"),
        "{}",
        standard.summary
    );

    let mut kept = request("US", WindowsServerEdition::Standard, 8, vms());
    kept.on_premises_in_use = true;
    let status = catalog
        .estimate_hybrid_benefit(kept.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .get_error_details()
            .precondition_failure()
            .unwrap()
            .violations[0]
            .subject,
        "on_premises_in_use"
    );
    assert!(
        status.message().contains("180 days"),
        "{}",
        status.message()
    );

    let mut migrating = request("US", WindowsServerEdition::Standard, 8, vms());
    migrating.migration_overlap_days = 180;
    assert!(
        catalog
            .estimate_hybrid_benefit(migrating.clone())
            .await
            .is_ok()
    );
    migrating.migration_overlap_days = 181;
    let status = catalog
        .estimate_hybrid_benefit(migrating)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    kept.edition = WindowsServerEdition::Datacenter as i32;
    let datacenter = catalog
        .estimate_hybrid_benefit(kept)
        .await
        .unwrap()
        .into_inner();
    assert!(datacenter.licenses_reused);
    assert!(
        datacenter.summary.contains("reused"),
        "{}",
        datacenter.summary
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_without_software_assurance_do_not_qualify() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::GlobalAdmin]).await;
    let mut no_sa = request(
        "US",
        WindowsServerEdition::Datacenter,
        16,
        vec![vm("a", 8, 730)],
    );
    no_sa.software_assurance = false;
    let status = catalog.estimate_hybrid_benefit(no_sa).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("Software Assurance"),
        "{}",
        status.message()
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_carry_the_market_currency_and_tax_flag() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::HelpdeskAgent]).await;
    let vms = || vec![vm("a", 4, 730)];

    let au = catalog
        .estimate_hybrid_benefit(request("AU", WindowsServerEdition::Datacenter, 8, vms()))
        .await
        .unwrap()
        .into_inner();
    assert!(au.tax_included);
    assert!(au.rates.unwrap().tax_included);
    // AU rates: 9.6 x 1.68 = 16.128 cents; 2920 x 16.128 = 47093.76 -> 47094 cents.
    assert_eq!(
        au.vms[0].windows_rate_cost.clone().unwrap().minor_units,
        47_094
    );
    assert_eq!(
        au.vms[0].windows_rate_cost.clone().unwrap().currency_code,
        "AUD"
    );

    let jp = catalog
        .estimate_hybrid_benefit(request("JP", WindowsServerEdition::Datacenter, 8, vms()))
        .await
        .unwrap()
        .into_inner();
    assert!(!jp.tax_included);
    // JPY has no minor digits: 14.4 and 8.7 yen per vCPU-hour.
    let windows = jp.vms[0].windows_rate_cost.clone().unwrap();
    assert_eq!(
        (windows.minor_units, windows.minor_unit_digits),
        (42_048, 0)
    );
    assert_eq!(
        jp.vms[0].base_rate_cost.clone().unwrap().minor_units,
        25_404
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::AccountAdmin]).await;
    let fields = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default()
    };
    let ok = || {
        request(
            "US",
            WindowsServerEdition::Datacenter,
            8,
            vec![vm("a", 4, 730)],
        )
    };

    let mut r = ok();
    r.market = "QQ".into();
    assert_eq!(
        fields(catalog.estimate_hybrid_benefit(r).await.unwrap_err()),
        ["market"]
    );
    let mut r = ok();
    r.core_licenses = 0;
    assert_eq!(
        fields(catalog.estimate_hybrid_benefit(r).await.unwrap_err()),
        ["core_licenses"]
    );
    let mut r = ok();
    r.edition = 0;
    assert_eq!(
        fields(catalog.estimate_hybrid_benefit(r).await.unwrap_err()),
        ["edition"]
    );
    let mut r = ok();
    r.vms = vec![vm("a", 4, 730), vm("b", 0, 0)];
    assert_eq!(
        fields(catalog.estimate_hybrid_benefit(r).await.unwrap_err()),
        ["vms[1].virtual_cores", "vms[1].hours_per_month"]
    );
    let mut r = ok();
    r.vms.clear();
    assert_eq!(
        fields(catalog.estimate_hybrid_benefit(r).await.unwrap_err()),
        ["vms"]
    );
    system.stop().await;
}
