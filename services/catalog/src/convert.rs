//! The domain's catalog in the contract's messages.

use csp_proto::catalog::v1 as pb;
use csp_proto::common::v1::Money;

use csp_kit::clock::{self, Micros};
use csp_kit::{ApiError, ApiResult};

use crate::changes::Changes;
use crate::domain::{
    CancellationPolicy, Market, Product, ProductKind, RefundRule, Sku, Term, WindowUnit,
};
use crate::hybrid;
use crate::storage::PriceListRecord;
use crate::use_cases::HybridEstimate;

/// A request's `as_of` time: absent for now.
pub fn as_of(at: Option<&prost_types::Timestamp>) -> ApiResult<Option<Micros>> {
    at.map(|t| {
        clock::from_timestamp(t).ok_or_else(|| {
            ApiError::invalid(
                "as_of",
                "not a valid time (nanos out of range or too far from 1970)",
            )
        })
    })
    .transpose()
}

/// An imported price list.
pub fn price_list(list: &PriceListRecord) -> pb::PriceList {
    pb::PriceList {
        version: list.version,
        checksum: list.checksum.clone(),
        file_name: list.file_name.clone(),
        imported_by: list.imported_by.clone(),
        imported_at: Some(clock::to_timestamp(list.imported_at)),
        line_count: list.line_count,
        summary: list.changes.summary(),
    }
}

/// What a price list changed.
pub fn changes(changes: &Changes) -> pb::PriceListChanges {
    let money = |currency: &str, digits: u32, minor: Option<i64>| {
        minor.map(|minor_units| Money {
            currency_code: currency.to_owned(),
            minor_units,
            minor_unit_digits: digits,
        })
    };
    pb::PriceListChanges {
        markets_added: changes.markets_added.clone(),
        markets_removed: changes.markets_removed.clone(),
        markets_changed: changes.markets_changed.clone(),
        products_added: changes.products_added.clone(),
        products_removed: changes.products_removed.clone(),
        products_changed: changes.products_changed.clone(),
        skus_added: changes.skus_added.clone(),
        skus_removed: changes.skus_removed.clone(),
        skus_changed: changes.skus_changed.clone(),
        price_changes: changes
            .price_changes
            .iter()
            .map(|c| pb::PriceChange {
                sku_id: c.sku_id.clone(),
                market: c.market.clone(),
                effective_from: Some(clock::to_timestamp(c.effective_from)),
                effective_until: c.effective_until.map(clock::to_timestamp),
                before: money(&c.currency, c.minor_unit_digits, c.before),
                after: money(&c.currency, c.minor_unit_digits, c.after),
            })
            .collect(),
    }
}

/// A market.
pub fn market(market: &Market) -> pb::Market {
    pb::Market {
        code: market.code.clone(),
        display_name: market.display_name.clone(),
        currency_code: market.currency_code.clone(),
        tax_included: market.tax_included,
        azure_reservations_available: market.azure_reservations_available,
    }
}

/// A SKU's price in a market; `None` when it has none there.
pub fn price(sku: &Sku, market: &Market) -> Option<pb::Price> {
    Some(pb::Price {
        sku_id: sku.id.clone(),
        market: market.code.clone(),
        amount: Some(Money {
            currency_code: market.currency_code.clone(),
            minor_units: sku.price_minor?,
            minor_unit_digits: market.minor_unit_digits,
        }),
        tax_included: market.tax_included,
    })
}

/// A SKU, priced when a market is given.
pub fn sku(sku: &Sku, market: Option<&Market>) -> pb::Sku {
    pb::Sku {
        id: sku.id.clone(),
        product_id: sku.product_id.clone(),
        title: sku.title.clone(),
        term: match sku.term {
            Term::OneYear => pb::Term::OneYear,
            Term::ThreeYears => pb::Term::ThreeYears,
        } as i32,
        price: market.and_then(|m| price(sku, m)),
        billing_plan: sku.billing_plan.as_db().to_owned(),
    }
}

/// The contract's view of a product; SKUs carry prices when a market is given.
pub fn product(product: &Product, market: Option<&Market>) -> pb::Product {
    pb::Product {
        id: product.id.clone(),
        title: product.title.clone(),
        description: product.description.clone(),
        kind: match product.kind {
            ProductKind::ServerSubscription => pb::ProductKind::ServerSubscription,
            ProductKind::AzureReservation => pb::ProductKind::AzureReservation,
        } as i32,
        skus: product.skus.iter().map(|s| sku(s, market)).collect(),
        download_options: Some(pb::DownloadOptions {
            versions: product.download_options.versions.clone(),
            languages: product.download_options.languages.clone(),
            file_types: product
                .download_options
                .file_types
                .iter()
                .map(|f| pb::FileType {
                    id: f.id.clone(),
                    display_name: f.display_name.clone(),
                })
                .collect(),
        }),
        cancellation_window_days: product.cancellation_window_days,
        publisher: product.publisher.clone(),
        cancellation_policy_id: product.cancellation_policy_id.clone(),
        cancellation_policy: product.cancellation_policy.as_ref().map(policy),
    }
}

/// One version of a cancellation policy.
pub fn policy(policy: &CancellationPolicy) -> pb::CancellationPolicy {
    pb::CancellationPolicy {
        id: policy.id.clone(),
        version: policy.version,
        title: policy.title.clone(),
        window_unit: match policy.window_unit {
            WindowUnit::Hours => pb::CancellationWindowUnit::Hours,
            WindowUnit::Days => pb::CancellationWindowUnit::Days,
            WindowUnit::Term => pb::CancellationWindowUnit::Term,
        } as i32,
        window_amount: policy.window_amount.unwrap_or(0),
        refund_rule: match policy.refund_rule {
            RefundRule::Full => pb::RefundRule::Full,
            RefundRule::ProratedByHour => pb::RefundRule::ProratedByHour,
            RefundRule::ProratedByDay => pb::RefundRule::ProratedByDay,
        } as i32,
        refund_cap: policy.cap.as_ref().map(|cap| Money {
            currency_code: cap.currency.clone(),
            minor_units: cap.amount_minor,
            minor_unit_digits: crate::price_list::minor_unit_digits(&cap.currency),
        }),
        refund_cap_period_days: policy.cap.as_ref().map_or(0, |cap| cap.period_days),
    }
}

/// An Azure Hybrid Benefit estimate.
pub fn estimate(found: &HybridEstimate) -> pb::EstimateHybridBenefitResponse {
    let (market, rates, estimate) = (&found.market, &found.rates, &found.estimate);
    let money = |minor_units| Money {
        currency_code: market.currency_code.clone(),
        minor_units,
        minor_unit_digits: market.minor_unit_digits,
    };
    pb::EstimateHybridBenefitResponse {
        vms: estimate
            .vms
            .iter()
            .map(|vm| pb::VmEstimate {
                name: vm.name.clone(),
                core_licenses_needed: vm.core_licenses_needed,
                covered: vm.covered,
                windows_rate_cost: Some(money(vm.windows_minor)),
                base_rate_cost: Some(money(vm.base_minor)),
            })
            .collect(),
        core_licenses_missing: u32::try_from(estimate.core_licenses_missing).unwrap_or(u32::MAX),
        monthly_saving: Some(money(estimate.saving_minor)),
        saving_basis_points: estimate.saving_basis_points,
        licenses_reused: estimate.licenses_reused(),
        tax_included: market.tax_included,
        summary: hybrid::summary(estimate, &market.currency_code, market.minor_unit_digits),
        covered_windows_rate_cost: Some(money(estimate.covered_windows_minor)),
        covered_base_rate_cost: Some(money(estimate.covered_base_minor)),
        core_licenses_needed: u32::try_from(estimate.core_licenses_needed).unwrap_or(u32::MAX),
        rates: Some(pb::ComputeRates {
            market: market.code.clone(),
            currency_code: market.currency_code.clone(),
            windows_rate_micro_minor: rates.windows_micro_minor,
            base_rate_micro_minor: rates.base_micro_minor,
            tax_included: market.tax_included,
        }),
    }
}
