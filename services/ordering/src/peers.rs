//! The services ordering calls: the catalog for markets and prices, and the
//! receivers of its events (licensing; audit is the shared destination), all
//! with this service's signed identity. Answers are read into the domain's
//! terms here; a peer's failure is read once, by [`PeerError`].

use std::sync::Arc;

use csp_kit::error::quoted;
use csp_kit::peer::{PeerError, PeerResult as _, Signed};
use csp_kit::{ApiError, ApiResult};
use csp_proto::catalog::v1 as catalog;
use csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::licensing::v1::ApplyOrderingEventsRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::OrderingEvent;
use csp_store::outbox::{BatchDestination, BatchFuture, Destination};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::domain::{ProductKind, Quote, RefundCap, RefundRule, SoldPolicy, Term, WindowUnit};

const CATALOG: &str = "catalog";

/// The destination name of the licensing service.
pub const LICENSING: &str = "licensing";

/// The catalog, as ordering uses it.
#[derive(Clone, Debug)]
pub struct Catalog {
    public: CatalogServiceClient<Signed>,
    internal: CatalogInternalServiceClient<Signed>,
}

impl Catalog {
    /// A client over `channel`.
    pub fn new(channel: Signed) -> Self {
        Self {
            public: CatalogServiceClient::new(channel.clone()),
            internal: CatalogInternalServiceClient::new(channel),
        }
    }

    /// The codes of every market the catalog sells in.
    pub async fn market_codes(&self) -> ApiResult<Vec<String>> {
        let markets = self
            .public
            .clone()
            .list_markets(catalog::ListMarketsRequest {})
            .await
            .peer(CATALOG)?
            .markets;
        Ok(markets.into_iter().map(|m| m.code).collect())
    }

    /// Prices `sku_ids` (one per order line, in order) in `market`. An
    /// unknown SKU is INVALID_ARGUMENT on its line; an Azure reservation
    /// where reservations are unavailable is FAILED_PRECONDITION naming the
    /// market and the product.
    pub async fn quote(&self, market: &str, sku_ids: &[String]) -> ApiResult<Vec<Quote>> {
        let answer = self
            .internal
            .clone()
            .quote_skus(catalog::QuoteSkusRequest {
                market: market.to_owned(),
                sku_ids: sku_ids.to_vec(),
            })
            .await
            .peer(CATALOG);
        let (quotes, price_list_version) = match answer {
            Ok(answer) => (answer.quotes, answer.price_list_version),
            Err(error) => return Err(refused_quote(error, sku_ids)),
        };
        // The catalog answers once per distinct SKU; give each line its quote.
        sku_ids
            .iter()
            .map(|sku| {
                let quote = quotes
                    .iter()
                    .find(|q| q.sku.as_ref().is_some_and(|s| s.id == *sku))
                    .ok_or_else(|| incomplete(format!("no quote for SKU {sku}")))?;
                read_quote(quote, price_list_version)
            })
            .collect()
    }
}

/// The catalog's refusal to quote, as ordering's caller should read it.
fn refused_quote(error: PeerError, sku_ids: &[String]) -> ApiError {
    let status = &error.status;
    match status.code() {
        Code::NotFound => {
            let sku = status
                .get_error_details()
                .resource_info()
                .map(|r| r.resource_name.clone())
                .unwrap_or_default();
            let line = sku_ids.iter().position(|s| *s == sku).unwrap_or(0);
            ApiError::invalid(
                format!("lines[{line}].sku_id"),
                format!(
                    "unknown SKU {}; see CatalogService.ListProducts",
                    quoted(&sku)
                ),
            )
        }
        Code::FailedPrecondition => {
            let details = status.get_error_details();
            let subject = details
                .precondition_failure()
                .and_then(|p| p.violations.first())
                .map(|v| v.subject.clone())
                .unwrap_or_default();
            ApiError::failed_precondition(
                "NOT_OFFERED_IN_MARKET",
                subject,
                status.message().to_owned(),
            )
        }
        _ => error.into(),
    }
}

/// A quote in the domain's terms; anything missing or unknown is the
/// catalog's fault (INTERNAL), never a default.
fn read_quote(quote: &catalog::SkuQuote, price_list_version: i64) -> ApiResult<Quote> {
    let (Some(sku), Some(product)) = (&quote.sku, &quote.product) else {
        return Err(incomplete("a quote without its SKU or product".to_owned()));
    };
    let price = sku.price.as_ref();
    let amount = price
        .and_then(|p| p.amount.as_ref())
        .ok_or_else(|| incomplete(format!("no price for SKU {}", sku.id)))?;
    let product_kind = match catalog::ProductKind::try_from(product.kind) {
        Ok(catalog::ProductKind::ServerSubscription) => ProductKind::ServerSubscription,
        Ok(catalog::ProductKind::AzureReservation) => ProductKind::AzureReservation,
        _ => {
            return Err(incomplete(format!(
                "product {} has unknown kind {}",
                product.id, product.kind
            )));
        }
    };
    let term = match catalog::Term::try_from(sku.term) {
        Ok(catalog::Term::OneYear) => Term::OneYear,
        Ok(catalog::Term::ThreeYears) => Term::ThreeYears,
        _ => {
            return Err(incomplete(format!(
                "SKU {} has unknown term {}",
                sku.id, sku.term
            )));
        }
    };
    Ok(Quote {
        sku_id: sku.id.clone(),
        product_id: product.id.clone(),
        product_title: product.title.clone(),
        product_kind,
        term,
        unit_minor: amount.minor_units,
        currency_code: amount.currency_code.clone(),
        minor_unit_digits: i32::try_from(amount.minor_unit_digits).unwrap_or(2),
        tax_included: price.is_some_and(|p| p.tax_included),
        cap_unit_minor: quote.cap_unit_price.as_ref().and_then(|unit| {
            let policy_cap = product.cancellation_policy.as_ref()?.refund_cap.as_ref()?;
            (policy_cap.currency_code == unit.currency_code).then_some(unit.minor_units)
        }),
        policy: read_policy(product)?,
        price_list_version,
    })
}

/// The cancellation policy the catalog sells a product under.
fn read_policy(product: &catalog::Product) -> ApiResult<SoldPolicy> {
    let Some(p) = &product.cancellation_policy else {
        return Err(incomplete(format!(
            "product {} without its cancellation policy",
            product.id
        )));
    };
    let window_unit = match catalog::CancellationWindowUnit::try_from(p.window_unit) {
        Ok(catalog::CancellationWindowUnit::Hours) => WindowUnit::Hours,
        Ok(catalog::CancellationWindowUnit::Days) => WindowUnit::Days,
        Ok(catalog::CancellationWindowUnit::Term) => WindowUnit::Term,
        _ => return Err(incomplete(format!("policy {} has no window unit", p.id))),
    };
    let refund_rule = match catalog::RefundRule::try_from(p.refund_rule) {
        Ok(catalog::RefundRule::Full) => RefundRule::Full,
        Ok(catalog::RefundRule::ProratedByHour) => RefundRule::ProratedByHour,
        Ok(catalog::RefundRule::ProratedByDay) => RefundRule::ProratedByDay,
        _ => return Err(incomplete(format!("policy {} has no refund rule", p.id))),
    };
    Ok(SoldPolicy {
        id: p.id.clone(),
        version: p.version,
        window_amount: (window_unit != WindowUnit::Term).then_some(p.window_amount),
        window_unit,
        refund_rule,
        cap: p.refund_cap.as_ref().map(|cap| RefundCap {
            amount_minor: cap.minor_units,
            currency: cap.currency_code.clone(),
            period_days: p.refund_cap_period_days,
        }),
    })
}

fn incomplete(what: String) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "the catalog sent an incomplete quote: {what}"
    ))
}

/// Ordering's events, delivered to licensing over `channel`.
pub fn licensing_destination(channel: Signed) -> Arc<dyn Destination> {
    let client = LicensingInternalServiceClient::new(channel);
    Arc::new(BatchDestination::new(
        LICENSING,
        move |events: Vec<OrderingEvent>| {
            let mut client = client.clone();
            Box::pin(async move {
                let answer = client
                    .apply_ordering_events(ApplyOrderingEventsRequest { events })
                    .await
                    .peer(LICENSING)?;
                Ok(answer
                    .rejected
                    .into_iter()
                    .map(|r| (r.event_id, r.reason))
                    .collect())
            }) as BatchFuture
        },
    ))
}
