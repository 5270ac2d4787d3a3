//! The services ordering calls: the catalog for markets and prices, and the
//! receivers of its events (licensing and audit), all with this service's
//! signed identity.

use std::sync::Arc;

use csp_kit::identity::IdentityKey;
use csp_kit::outbox::{self, Destination, Envelope, Outcome};
use csp_kit::upstream::{Signed, decode_all};
use csp_kit::{ApiError, ApiResult};
use csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::catalog::v1::{ListMarketsRequest, Market, QuoteSkusRequest, SkuQuote};
use csp_proto::licensing::v1::ApplyOrderingEventsRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::OrderingEvent;
use tonic::Code;
use tonic_types::StatusExt as _;

pub use csp_kit::upstream::{AUDIT, AuditDestination, encode};

/// A lazily connected channel that signs calls as the ordering service.
pub fn channel(url: &str, key: &Arc<IdentityKey>) -> anyhow::Result<Signed> {
    csp_kit::upstream::signed_channel(url, key, crate::NAME)
}

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

    /// The market with `code`, if the catalog sells there.
    pub async fn market(&self, code: &str) -> ApiResult<Option<Market>> {
        let markets = self
            .public
            .clone()
            .list_markets(ListMarketsRequest {})
            .await
            .map_err(unavailable)?
            .into_inner()
            .markets;
        Ok(markets.into_iter().find(|m| m.code == code))
    }

    /// The codes of every market, for messages.
    pub async fn market_codes(&self) -> ApiResult<Vec<String>> {
        let markets = self
            .public
            .clone()
            .list_markets(ListMarketsRequest {})
            .await
            .map_err(unavailable)?
            .into_inner()
            .markets;
        Ok(markets.into_iter().map(|m| m.code).collect())
    }

    /// Prices `sku_ids` (one per order line, in order) in `market`. An
    /// unknown SKU is INVALID_ARGUMENT on its line; an Azure reservation
    /// where reservations are unavailable is FAILED_PRECONDITION naming the
    /// market and the product.
    pub async fn quote(&self, market: &str, sku_ids: &[String]) -> ApiResult<Vec<SkuQuote>> {
        let result = self
            .internal
            .clone()
            .quote_skus(QuoteSkusRequest {
                market: market.to_owned(),
                sku_ids: sku_ids.to_vec(),
            })
            .await;
        let quotes = match result {
            Ok(response) => response.into_inner().quotes,
            Err(status) if status.code() == Code::NotFound => {
                let sku = status
                    .get_error_details()
                    .resource_info()
                    .map(|r| r.resource_name.clone())
                    .unwrap_or_default();
                let line = sku_ids.iter().position(|s| *s == sku).unwrap_or(0);
                return Err(ApiError::invalid(
                    format!("lines[{line}].sku_id"),
                    format!("unknown SKU {sku:?}; see CatalogService.ListProducts"),
                ));
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                let details = status.get_error_details();
                let violation = details
                    .precondition_failure()
                    .and_then(|p| p.violations.first());
                return Err(ApiError::failed_precondition(
                    "NOT_OFFERED_IN_MARKET",
                    violation.map(|v| v.subject.clone()).unwrap_or_default(),
                    status.message().to_owned(),
                ));
            }
            Err(status) => return Err(unavailable(status)),
        };
        // The catalog answers once per distinct SKU; give each line its quote.
        sku_ids
            .iter()
            .map(|sku| {
                quotes
                    .iter()
                    .find(|q| q.sku.as_ref().is_some_and(|s| s.id == *sku))
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::Internal(anyhow::anyhow!("the catalog did not price SKU {sku}"))
                    })
            })
            .collect()
    }
}

fn unavailable(status: tonic::Status) -> ApiError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            ApiError::Unavailable(format!(
                "the catalog is unavailable ({}); try again",
                status.message()
            ))
        }
        _ => ApiError::Internal(anyhow::anyhow!(
            "the catalog answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// The destination name of the licensing service.
pub const LICENSING: &str = "licensing";

/// Delivers ordering events to licensing.
pub struct LicensingDestination {
    client: LicensingInternalServiceClient<Signed>,
}

impl LicensingDestination {
    /// Over `channel`.
    pub fn new(channel: Signed) -> Self {
        Self {
            client: LicensingInternalServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl Destination for LicensingDestination {
    fn name(&self) -> &'static str {
        LICENSING
    }

    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let (events, mut rejected) = decode_all::<OrderingEvent>(batch);
        if events.is_empty() {
            return Outcome::Accepted { rejected };
        }
        match self
            .client
            .clone()
            .apply_ordering_events(ApplyOrderingEventsRequest { events })
            .await
        {
            Ok(response) => {
                rejected.extend(
                    response
                        .into_inner()
                        .rejected
                        .into_iter()
                        .map(|r| (r.event_id, r.reason)),
                );
                Outcome::Accepted { rejected }
            }
            Err(status) => outbox::failed(&status),
        }
    }
}
