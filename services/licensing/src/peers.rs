//! The services licensing calls, with its signed identity: the catalog for
//! a product's download options, and ordering to tell an unknown customer
//! from one with nothing bought. A peer's failure is read once, by
//! [`csp_kit::peer::PeerError`].

use csp_kit::ApiResult;
use csp_kit::ids::{PartnerId, TenantId};
use csp_kit::peer::{PeerResult as _, Signed};
use csp_proto::catalog::v1::GetProductRequest;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::ordering::v1::CheckCustomerRequest;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;

pub use csp_proto::catalog::v1::DownloadOptions;

/// The catalog and ordering, as licensing uses them.
#[derive(Clone, Debug)]
pub struct Peers {
    catalog: CatalogServiceClient<Signed>,
    ordering: OrderingInternalServiceClient<Signed>,
}

impl Peers {
    /// Over the two channels.
    pub fn new(catalog: Signed, ordering: Signed) -> Self {
        Self {
            catalog: CatalogServiceClient::new(catalog),
            ordering: OrderingInternalServiceClient::new(ordering),
        }
    }

    /// A product's download options; none for a product the catalog does
    /// not know (any more).
    pub async fn download_options(&self, product_id: &str) -> ApiResult<DownloadOptions> {
        let answer = self
            .catalog
            .clone()
            .get_product(GetProductRequest {
                product_id: product_id.to_owned(),
                market: String::new(),
            })
            .await
            .peer("catalog");
        match answer {
            Ok(answer) => Ok(answer
                .product
                .and_then(|p| p.download_options)
                .unwrap_or_default()),
            Err(error) if error.is_not_found() => Ok(DownloadOptions::default()),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether the partner has this customer.
    pub async fn has_customer(&self, partner: PartnerId, tenant: TenantId) -> ApiResult<bool> {
        let answer = self
            .ordering
            .clone()
            .check_customer(CheckCustomerRequest {
                partner_id: partner.to_string(),
                tenant_id: tenant.to_string(),
            })
            .await
            .peer("ordering");
        match answer {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}
