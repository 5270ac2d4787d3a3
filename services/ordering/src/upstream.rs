//! The services ordering calls: the catalog for markets and prices, and the
//! receivers of its events (licensing and audit), all with this service's
//! signed identity.

use std::sync::Arc;

use csp_kit::peer::{PeerError, PeerResult as _, Signed};
use csp_kit::{ApiError, ApiResult};
use csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::catalog::v1::{ListMarketsRequest, Market, QuoteSkusRequest, SkuQuote};
use csp_proto::licensing::v1::ApplyOrderingEventsRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::OrderingEvent;
use csp_store::outbox::{BatchDestination, BatchFuture, Destination};
use tonic::Code;
use tonic_types::StatusExt as _;

const CATALOG: &str = "catalog";

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

    /// Every market the catalog sells in.
    pub async fn markets(&self) -> ApiResult<Vec<Market>> {
        Ok(self
            .public
            .clone()
            .list_markets(ListMarketsRequest {})
            .await
            .peer(CATALOG)?
            .markets)
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
        let quotes = match result.peer(CATALOG) {
            Ok(answer) => answer.quotes,
            Err(PeerError { status, .. }) if status.code() == Code::NotFound => {
                let sku = status
                    .get_error_details()
                    .resource_info()
                    .map(|r| r.resource_name.clone())
                    .unwrap_or_default();
                let line = sku_ids.iter().position(|s| *s == sku).unwrap_or(0);
                return Err(ApiError::invalid(
                    format!("lines[{line}].sku_id"),
                    format!(
                        "unknown SKU {}; see CatalogService.ListProducts",
                        csp_kit::error::quoted(&sku)
                    ),
                ));
            }
            Err(PeerError { status, .. }) if status.code() == Code::FailedPrecondition => {
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
            Err(error) => return Err(error.into()),
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

/// The destination name of the licensing service.
pub const LICENSING: &str = "licensing";

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
