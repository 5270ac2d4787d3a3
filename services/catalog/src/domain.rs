//! Catalog rules, without I/O: market codes, where Azure reservations are
//! offered, and what a price says about tax.

use csp_kit::ApiError;
use csp_kit::clock::Micros;
pub use csp_kit::product::{ProductKind, RefundRule, Term, WindowUnit};

/// A market the catalog sells in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Market {
    /// ISO 3166-1 alpha-2 code.
    pub code: String,
    /// English name.
    pub display_name: String,
    /// ISO 4217 currency of its prices.
    pub currency_code: String,
    /// Decimal digits of the currency's minor unit.
    pub minor_unit_digits: u32,
    /// Whether prices include tax (AU and BR).
    pub tax_included: bool,
    /// Whether Azure reservations are offered.
    pub azure_reservations_available: bool,
}

csp_kit::stored_enum! {
    /// Which of a product's download options a stored option is.
    pub enum OptionKind {
        /// A version, for example 2022.
        Version = "version",
        /// A language, for example en-US.
        Language = "language",
        /// A file type, for example iso-x64.
        FileType = "file_type",
    }
}

csp_kit::stored_enum! {
    /// How a SKU is billed. Every plan here charges the unit price once, at
    /// purchase, for the whole term (Partner Center's names).
    pub enum BillingPlan {
        /// Paid up front for a one-year term.
        Annual = "Annual",
        /// Paid up front for a three-year term.
        Triennial = "Triennial",
        /// Paid once (perpetual software, reservations paid up front).
        OneTime = "OneTime",
    }
}

/// A SKU, with its price in one market when one was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sku {
    /// Id.
    pub id: String,
    /// Its product.
    pub product_id: String,
    /// Title.
    pub title: String,
    /// Term.
    pub term: Term,
    /// How it is billed.
    pub billing_plan: BillingPlan,
    /// Price in minor units of the market's currency.
    pub price_minor: Option<i64>,
}

/// A file type a download comes as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileType {
    /// Id, for example `iso-x64`.
    pub id: String,
    /// Display name.
    pub display_name: String,
}

/// What an admin agent picks from before getting keys and downloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Versions.
    pub versions: Vec<String>,
    /// Languages.
    pub languages: Vec<String>,
    /// File types.
    pub file_types: Vec<FileType>,
}

/// A product with its SKUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: ProductKind,
    /// Who publishes it, for example Microsoft Corporation.
    pub publisher: String,
    /// The cancellation policy its subscriptions are sold under.
    pub cancellation_policy_id: String,
    /// That policy's current version, attached by the snapshot (`None` in a
    /// price list as read).
    pub cancellation_policy: Option<CancellationPolicy>,
    /// Days after purchase a subscription can be cancelled (the policy's
    /// window, whole days rounded up).
    pub cancellation_window_days: u32,
    /// SKUs, by id.
    pub skus: Vec<Sku>,
    /// Download options (empty for reservations).
    pub download_options: DownloadOptions,
}

/// A limit on refunds: at most `amount_minor` of `currency` per customer
/// over a rolling `period_days`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundCap {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The rolling period.
    pub period_days: u32,
}

/// One version of a cancellation policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancellationPolicy {
    /// Id, for example `new-commerce-168-hours`.
    pub id: String,
    /// Version, from 1.
    pub version: u32,
    /// A sentence for a person.
    pub title: String,
    /// The window's length in its unit (`None` for [`WindowUnit::Term`]).
    pub window_amount: Option<u32>,
    /// The window's unit.
    pub window_unit: WindowUnit,
    /// What a cancellation refunds.
    pub refund_rule: RefundRule,
    /// A limit on refunds, if any.
    pub cap: Option<RefundCap>,
    /// When this version took effect.
    pub effective_from: Micros,
}

impl CancellationPolicy {
    /// The window in whole days, rounded up (0: until the term ends).
    pub fn window_days(&self) -> u32 {
        match (self.window_unit, self.window_amount) {
            (WindowUnit::Hours, Some(hours)) => hours.div_ceil(24),
            (WindowUnit::Days, Some(days)) => days,
            _ => 0,
        }
    }
}

/// A SKU's price in a market over a period: from `from` (inclusive) until
/// `until` (exclusive; `None`: no end), in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricePeriod {
    /// The SKU.
    pub sku_id: String,
    /// The market code.
    pub market: String,
    /// The first instant the price applies.
    pub from: Micros,
    /// The first instant it no longer applies.
    pub until: Option<Micros>,
    /// Minor units of the market's currency.
    pub amount_minor: i64,
}

impl PricePeriod {
    /// Whether the price applies at `at`.
    pub fn covers(&self, at: Micros) -> bool {
        self.from <= at && self.until.is_none_or(|until| at < until)
    }
}

/// The whole catalog as a price list states it: markets, products with
/// their (unpriced) SKUs and download options, and every price period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogData {
    /// Markets, by code.
    pub markets: Vec<Market>,
    /// Products, by id, with their SKUs by id.
    pub products: Vec<Product>,
    /// Prices, by SKU, market and start.
    pub prices: Vec<PricePeriod>,
}

/// The error for a well-formed market code the catalog does not sell in.
pub fn unknown_market(field: &str, code: &str, known: &[String]) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "unknown market {}; the catalog sells in {}",
            csp_kit::error::quoted(code),
            known.join(", ")
        ),
    )
}

/// FAILED_PRECONDITION for a SKU without a price in a market.
pub fn not_priced(sku_id: &str, market: &Market) -> ApiError {
    ApiError::failed_precondition(
        "SKU_NOT_PRICED",
        format!("sku/{sku_id}"),
        format!("SKU {sku_id} has no price in market {}", market.code),
    )
}

/// Whether products of `kind` are listed in `market`.
pub fn is_offered(market: &Market, kind: ProductKind) -> bool {
    kind != ProductKind::AzureReservation || market.azure_reservations_available
}

/// FAILED_PRECONDITION when `product` is not offered in `market`: Azure
/// reservations are unavailable where the price list prices none.
pub fn ensure_offered(
    market: &Market,
    product_id: &str,
    kind: ProductKind,
) -> Result<(), ApiError> {
    if is_offered(market, kind) {
        return Ok(());
    }
    Err(ApiError::failed_precondition(
        "AZURE_RESERVATIONS_UNAVAILABLE",
        format!("market/{}", market.code),
        format!(
            "Azure reservations are not available in market {} ({}), so product {product_id} cannot be offered or ordered there",
            market.code, market.display_name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(code: &str, reservations: bool) -> Market {
        Market {
            code: code.to_owned(),
            display_name: code.to_owned(),
            currency_code: "USD".to_owned(),
            minor_unit_digits: 2,
            tax_included: false,
            azure_reservations_available: reservations,
        }
    }

    #[test]
    fn reservations_are_refused_where_unavailable_and_name_the_market() {
        let br = market("BR", false);
        assert!(
            ensure_offered(
                &br,
                "windows-server-standard",
                ProductKind::ServerSubscription
            )
            .is_ok()
        );
        let error = ensure_offered(
            &br,
            "azure-reserved-vm-d2s-v3",
            ProductKind::AzureReservation,
        )
        .unwrap_err();
        assert!(error.to_string().contains("market BR"), "{error}");
        assert!(ensure_offered(&market("US", true), "x", ProductKind::AzureReservation).is_ok());
    }
}
