//! Azure Hybrid Benefit, without I/O: which planned VMs a customer's Windows
//! Server core licenses with Software Assurance cover, and what running them
//! at the base (Linux) compute rate instead of the Windows rate saves.
//!
//! Rules (Microsoft's Windows Server licensing documentation):
//! - only licenses with active Software Assurance (or an equivalent
//!   subscription license) qualify;
//! - every VM needs at least 8 core licenses, and one per virtual core beyond 8;
//! - Standard licenses are converted: they cover a VM in Azure or a server on
//!   premises, not both, with a one-time overlap of up to 180 days while
//!   migrating;
//! - Datacenter licenses are reused: Azure and on premises at once.
//!
//! Money is exact: rates are integers in millionths of a minor unit; each VM's
//! monthly cost is rounded half up to a minor unit once, and totals are sums of
//! those rounded figures.

use csp_kit::{ApiError, FieldViolation};

/// Core licenses a VM needs at the least.
pub const MIN_CORE_LICENSES_PER_VM: u32 = 8;
/// The one-time overlap Standard licenses allow while migrating.
pub const MAX_MIGRATION_OVERLAP_DAYS: u32 = 180;
/// Hours in the longest month.
pub const MAX_HOURS_PER_MONTH: u32 = 744;
/// The largest VM accepted.
pub const MAX_VIRTUAL_CORES: u32 = 1024;
/// The most VMs in one estimate.
pub const MAX_VMS: usize = 1000;

/// A Windows Server edition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    /// Converted licenses.
    Standard,
    /// Reused licenses.
    Datacenter,
}

/// A VM the customer plans in Azure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedVm {
    /// Its name.
    pub name: String,
    /// Virtual cores.
    pub virtual_cores: u32,
    /// Hours per month it runs.
    pub hours_per_month: u32,
}

/// What the partner tells us about the customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation {
    /// The edition; `None` when the request left it unspecified.
    pub edition: Option<Edition>,
    /// Core licenses owned.
    pub core_licenses: u32,
    /// Whether they carry Software Assurance.
    pub software_assurance: bool,
    /// Whether the on-premises servers stay in use for good.
    pub on_premises_in_use: bool,
    /// Days the on-premises servers overlap with Azure while migrating.
    pub migration_overlap_days: u32,
    /// The planned VMs.
    pub vms: Vec<PlannedVm>,
}

/// Compute rates per vCPU-hour, in millionths of a minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    /// The Windows rate.
    pub windows_micro_minor: i64,
    /// The base (Linux) rate.
    pub base_micro_minor: i64,
}

/// The estimate for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmEstimate {
    /// Its name.
    pub name: String,
    /// Core licenses it needs.
    pub core_licenses_needed: u32,
    /// Whether the owned licenses cover it.
    pub covered: bool,
    /// Monthly cost at the Windows rate, minor units.
    pub windows_minor: i64,
    /// Monthly cost at the base rate, minor units.
    pub base_minor: i64,
}

/// The whole estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Per VM, in request order.
    pub vms: Vec<VmEstimate>,
    /// The edition.
    pub edition: Edition,
    /// Licenses owned.
    pub core_licenses: u32,
    /// Licenses all VMs need together.
    pub core_licenses_needed: u64,
    /// Licenses missing to cover every VM.
    pub core_licenses_missing: u64,
    /// Covered VMs at the Windows rate, minor units.
    pub covered_windows_minor: i64,
    /// Covered VMs at the base rate, minor units.
    pub covered_base_minor: i64,
    /// The saving, minor units.
    pub saving_minor: i64,
    /// The saving as a share of the covered Windows-rate cost, basis points.
    pub saving_basis_points: u32,
}

impl Estimate {
    /// Whether the licenses are reused (Datacenter) rather than converted.
    pub fn licenses_reused(&self) -> bool {
        self.edition == Edition::Datacenter
    }

    /// How many VMs are covered.
    pub fn covered_count(&self) -> usize {
        self.vms.iter().filter(|v| v.covered).count()
    }
}

/// Core licenses a VM with `virtual_cores` needs.
pub fn core_licenses_needed(virtual_cores: u32) -> u32 {
    virtual_cores.max(MIN_CORE_LICENSES_PER_VM)
}

/// Checks the fields, then the licensing preconditions, then estimates.
pub fn estimate(situation: &Situation, rates: Rates) -> Result<Estimate, ApiError> {
    let edition = validate(situation)?;
    check_preconditions(situation, edition)?;

    let mut remaining = u64::from(situation.core_licenses);
    let mut vms = Vec::with_capacity(situation.vms.len());
    let mut needed_total = 0u64;
    for vm in &situation.vms {
        let needed = core_licenses_needed(vm.virtual_cores);
        needed_total += u64::from(needed);
        // Licenses go to the VMs in request order; a VM is covered whole or
        // not at all.
        let covered = remaining >= u64::from(needed);
        if covered {
            remaining -= u64::from(needed);
        }
        let vcpu_hours = i128::from(vm.virtual_cores) * i128::from(vm.hours_per_month);
        vms.push(VmEstimate {
            name: vm.name.clone(),
            core_licenses_needed: needed,
            covered,
            windows_minor: micro_to_minor(vcpu_hours * i128::from(rates.windows_micro_minor)),
            base_minor: micro_to_minor(vcpu_hours * i128::from(rates.base_micro_minor)),
        });
    }
    let covered = vms.iter().filter(|v| v.covered);
    let covered_windows_minor: i64 = covered.clone().map(|v| v.windows_minor).sum();
    let covered_base_minor: i64 = covered.map(|v| v.base_minor).sum();
    let saving_minor = covered_windows_minor - covered_base_minor;
    let saving_basis_points = if covered_windows_minor > 0 {
        // Half up, in integers.
        ((i128::from(saving_minor) * 20_000 + i128::from(covered_windows_minor))
            / (2 * i128::from(covered_windows_minor))) as u32
    } else {
        0
    };
    Ok(Estimate {
        vms,
        edition,
        core_licenses: situation.core_licenses,
        core_licenses_needed: needed_total,
        core_licenses_missing: needed_total.saturating_sub(u64::from(situation.core_licenses)),
        covered_windows_minor,
        covered_base_minor,
        saving_minor,
        saving_basis_points,
    })
}

/// Millionths of a minor unit to minor units, half up (amounts are never
/// negative).
fn micro_to_minor(micro: i128) -> i64 {
    ((micro + 500_000) / 1_000_000) as i64
}

fn validate(situation: &Situation) -> Result<Edition, ApiError> {
    let mut violations = Vec::new();
    if situation.edition.is_none() {
        violations.push(FieldViolation::new(
            "edition",
            "required: WINDOWS_SERVER_EDITION_STANDARD or WINDOWS_SERVER_EDITION_DATACENTER",
        ));
    }
    if situation.core_licenses == 0 {
        violations.push(FieldViolation::new(
            "core_licenses",
            "must be at least 1: the number of Windows Server core licenses owned",
        ));
    }
    if situation.vms.is_empty() {
        violations.push(FieldViolation::new("vms", "name at least one planned VM"));
    }
    if situation.vms.len() > MAX_VMS {
        violations.push(FieldViolation::new(
            "vms",
            format!("at most {MAX_VMS} VMs per estimate"),
        ));
    }
    for (i, vm) in situation.vms.iter().enumerate() {
        if vm.virtual_cores == 0 || vm.virtual_cores > MAX_VIRTUAL_CORES {
            violations.push(FieldViolation::new(
                format!("vms[{i}].virtual_cores"),
                format!("must be from 1 to {MAX_VIRTUAL_CORES}"),
            ));
        }
        if vm.hours_per_month == 0 || vm.hours_per_month > MAX_HOURS_PER_MONTH {
            violations.push(FieldViolation::new(
                format!("vms[{i}].hours_per_month"),
                format!("must be from 1 to {MAX_HOURS_PER_MONTH} (31 days)"),
            ));
        }
    }
    match (situation.edition, violations.is_empty()) {
        (Some(edition), true) => Ok(edition),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

fn check_preconditions(situation: &Situation, edition: Edition) -> Result<(), ApiError> {
    if !situation.software_assurance {
        return Err(ApiError::failed_precondition(
            "SOFTWARE_ASSURANCE_REQUIRED",
            "software_assurance",
            "Azure Hybrid Benefit needs Windows Server licenses with active Software Assurance (or an equivalent \
             subscription license); licenses without it cannot run Azure VMs at the base rate",
        ));
    }
    if edition == Edition::Standard && situation.on_premises_in_use {
        return Err(ApiError::failed_precondition(
            "STANDARD_LICENSES_CONVERTED",
            "on_premises_in_use",
            format!(
                "Standard licenses are converted: each covers a VM in Azure or a server on premises, not both. \
                 Stop using them on premises (a one-time overlap of up to {MAX_MIGRATION_OVERLAP_DAYS} days is \
                 allowed while migrating), or use Datacenter licenses, which are reused"
            ),
        ));
    }
    if edition == Edition::Standard && situation.migration_overlap_days > MAX_MIGRATION_OVERLAP_DAYS
    {
        return Err(ApiError::failed_precondition(
            "MIGRATION_OVERLAP_TOO_LONG",
            "migration_overlap_days",
            format!(
                "Standard licenses may stay in use on premises for at most {MAX_MIGRATION_OVERLAP_DAYS} days while \
                 migrating to Azure, not {} days",
                situation.migration_overlap_days
            ),
        ));
    }
    Ok(())
}

/// Formats minor units as an amount with its currency: `USD 1234.56`.
pub fn format_money(minor: i64, digits: u32, currency: &str) -> String {
    if digits == 0 {
        return format!("{currency} {minor}");
    }
    let scale = 10i64.pow(digits);
    format!(
        "{currency} {}.{:0width$}",
        minor / scale,
        minor % scale,
        width = digits as usize
    )
}

/// The sentence a partner reads to the customer.
pub fn summary(estimate: &Estimate, currency: &str, digits: u32) -> String {
    let money = |minor| format_money(minor, digits, currency);
    let edition = match estimate.edition {
        Edition::Standard => "Standard",
        Edition::Datacenter => "Datacenter",
    };
    let mut text = format!(
        "{} Windows Server {edition} core licenses with Software Assurance cover {} of {} planned VMs",
        estimate.core_licenses,
        estimate.covered_count(),
        estimate.vms.len()
    );
    if estimate.core_licenses_missing > 0 {
        text.push_str(&format!(
            " ({} more core licenses would cover the rest)",
            estimate.core_licenses_missing
        ));
    }
    text.push_str(". ");
    if estimate.covered_count() > 0 {
        text.push_str(&format!(
            "With Azure Hybrid Benefit the covered VMs cost {} a month at the base rate instead of {} at the \
             Windows rate: {} saved ({}.{:02}%). ",
            money(estimate.covered_base_minor),
            money(estimate.covered_windows_minor),
            money(estimate.saving_minor),
            estimate.saving_basis_points / 100,
            estimate.saving_basis_points % 100
        ));
    }
    text.push_str(match estimate.edition {
        Edition::Standard => {
            "Standard licenses are converted: once the VMs run in Azure, the licenses no longer cover the \
             on-premises servers (after a migration overlap of at most 180 days)."
        }
        Edition::Datacenter => {
            "Datacenter licenses are reused: they keep covering the on-premises servers while they cover the Azure VMs."
        }
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        windows_micro_minor: 9_600_000,
        base_micro_minor: 5_800_000,
    };

    fn vm(name: &str, virtual_cores: u32, hours_per_month: u32) -> PlannedVm {
        PlannedVm {
            name: name.into(),
            virtual_cores,
            hours_per_month,
        }
    }

    fn situation(edition: Edition, core_licenses: u32, vms: Vec<PlannedVm>) -> Situation {
        Situation {
            edition: Some(edition),
            core_licenses,
            software_assurance: true,
            on_premises_in_use: false,
            migration_overlap_days: 0,
            vms,
        }
    }

    #[test]
    fn a_small_vm_still_needs_eight_licenses() {
        assert_eq!(core_licenses_needed(1), 8);
        assert_eq!(core_licenses_needed(4), 8);
        assert_eq!(core_licenses_needed(8), 8);
        assert_eq!(core_licenses_needed(12), 12);
        let e = estimate(
            &situation(Edition::Datacenter, 8, vec![vm("a", 4, 730)]),
            RATES,
        )
        .unwrap();
        assert_eq!(e.vms[0].core_licenses_needed, 8);
        assert!(e.vms[0].covered);
        let e = estimate(
            &situation(Edition::Datacenter, 7, vec![vm("a", 4, 730)]),
            RATES,
        )
        .unwrap();
        assert!(!e.vms[0].covered);
        assert_eq!(e.core_licenses_missing, 1);
    }

    #[test]
    fn money_is_exact_and_rounded_once_per_vm() {
        // 4 vCPU x 730 h = 2920 vCPU-hours; 2920 x 9.6 cents = 28032 cents;
        // 2920 x 5.8 cents = 16936 cents.
        let e = estimate(
            &situation(Edition::Datacenter, 16, vec![vm("a", 4, 730)]),
            RATES,
        )
        .unwrap();
        assert_eq!(
            (e.vms[0].windows_minor, e.vms[0].base_minor),
            (28_032, 16_936)
        );
        assert_eq!(e.saving_minor, 11_096);
        // 11096 / 28032 = 39.583% -> 3958 basis points.
        assert_eq!(e.saving_basis_points, 3958);
        // Half-up rounding: 1 vCPU-hour at 0.5000005 cents -> 1 cent.
        let odd = Rates {
            windows_micro_minor: 500_001,
            base_micro_minor: 499_999,
        };
        let e = estimate(&situation(Edition::Datacenter, 8, vec![vm("a", 1, 1)]), odd).unwrap();
        assert_eq!((e.vms[0].windows_minor, e.vms[0].base_minor), (1, 0));
    }

    #[test]
    fn licenses_cover_vms_in_order_and_the_rest_is_missing() {
        let e = estimate(
            &situation(
                Edition::Datacenter,
                20,
                vec![vm("a", 4, 100), vm("b", 16, 100), vm("c", 2, 100)],
            ),
            RATES,
        )
        .unwrap();
        let covered: Vec<bool> = e.vms.iter().map(|v| v.covered).collect();
        // a takes 8, b needs 16 of the 12 left, c takes 8 of those 12.
        assert_eq!(covered, [true, false, true]);
        assert_eq!(e.core_licenses_needed, 32);
        assert_eq!(e.core_licenses_missing, 12);
        assert_eq!(
            e.covered_windows_minor,
            e.vms[0].windows_minor + e.vms[2].windows_minor
        );
    }

    #[test]
    fn standard_is_converted_and_datacenter_reused() {
        let mut s = situation(Edition::Standard, 16, vec![vm("a", 8, 730)]);
        assert!(!estimate(&s, RATES).unwrap().licenses_reused());
        s.on_premises_in_use = true;
        let error = estimate(&s, RATES).unwrap_err();
        assert!(
            matches!(error, ApiError::FailedPrecondition { subject, .. } if subject == "on_premises_in_use")
        );
        s.on_premises_in_use = false;
        s.migration_overlap_days = 180;
        assert!(estimate(&s, RATES).is_ok());
        s.migration_overlap_days = 181;
        let error = estimate(&s, RATES).unwrap_err();
        assert!(
            matches!(error, ApiError::FailedPrecondition { subject, .. } if subject == "migration_overlap_days")
        );

        let mut d = situation(Edition::Datacenter, 16, vec![vm("a", 8, 730)]);
        d.on_premises_in_use = true;
        d.migration_overlap_days = 1000;
        assert!(estimate(&d, RATES).unwrap().licenses_reused());
    }

    #[test]
    fn no_software_assurance_is_a_failed_precondition() {
        let mut s = situation(Edition::Datacenter, 16, vec![vm("a", 8, 730)]);
        s.software_assurance = false;
        let error = estimate(&s, RATES).unwrap_err();
        assert!(error.to_string().contains("Software Assurance"));
    }

    #[test]
    fn bad_fields_are_all_named() {
        let s = Situation {
            edition: None,
            core_licenses: 0,
            software_assurance: false,
            on_premises_in_use: false,
            migration_overlap_days: 0,
            vms: vec![vm("a", 0, 745)],
        };
        let Err(ApiError::InvalidArgument(violations)) = estimate(&s, RATES) else {
            panic!("expected INVALID_ARGUMENT")
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "edition",
                "core_licenses",
                "vms[0].virtual_cores",
                "vms[0].hours_per_month"
            ]
        );
    }

    #[test]
    fn the_summary_reads_well() {
        let e = estimate(
            &situation(
                Edition::Datacenter,
                8,
                vec![vm("a", 4, 730), vm("b", 8, 730)],
            ),
            RATES,
        )
        .unwrap();
        let text = summary(&e, "USD", 2);
        assert!(text.contains("cover 1 of 2 planned VMs"), "{text}");
        assert!(text.contains("8 more core licenses"), "{text}");
        assert!(
            text.contains("USD 169.36 a month at the base rate instead of USD 280.32"),
            "{text}"
        );
        assert!(text.contains("(39.58%)"), "{text}");
        assert!(text.contains("reused"), "{text}");
        assert_eq!(format_money(5, 2, "EUR"), "EUR 0.05");
        assert_eq!(format_money(500, 0, "JPY"), "JPY 500");
    }
}
