//! Catalog rules, without I/O: market codes, where Azure reservations are
//! offered, and what a price says about tax.

use csp_kit::ApiError;
pub use csp_kit::product::{ProductKind, Term};

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
    /// Days after purchase a subscription can be cancelled.
    pub cancellation_window_days: u32,
    /// SKUs, by id.
    pub skus: Vec<Sku>,
    /// Download options (empty for reservations).
    pub download_options: DownloadOptions,
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
/// reservations are unavailable in 11 markets.
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
