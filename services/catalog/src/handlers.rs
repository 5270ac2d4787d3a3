//! The gRPC handlers, public and internal: each decodes its request, calls
//! one use case and encodes the answer. Errors leave through
//! `ApiError -> Status`.

use csp_kit::Caller;
use csp_proto::catalog::v1 as pb;
use csp_proto::catalog::v1::catalog_internal_service_server::CatalogInternalService;
use csp_proto::catalog::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::hybrid;
use crate::use_cases::{Catalog, ImportRequest, required};

/// The public catalog API over its use cases.
#[derive(Clone, Debug)]
pub struct CatalogApi {
    catalog: Catalog,
}

impl CatalogApi {
    /// The API over `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_markets(
        &self,
        _request: Request<pb::ListMarketsRequest>,
    ) -> Result<Response<pb::ListMarketsResponse>, Status> {
        let markets = self.catalog.markets().await?;
        Ok(Response::new(pb::ListMarketsResponse {
            markets: markets.iter().map(convert::market).collect(),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let r = request.into_inner();
        let as_of = convert::as_of(r.as_of.as_ref())?;
        let page = self
            .catalog
            .list_products(&r.market, r.kind, r.page_size, &r.page_token, as_of)
            .await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: page
                .products
                .iter()
                .map(|p| convert::product(p, Some(&page.market)))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let r = request.get_ref();
        let product_id = required("product_id", &r.product_id)?;
        let (product, market) = self.catalog.product(product_id, &r.market).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(convert::product(&product, market.as_ref())),
        }))
    }

    async fn get_sku_price(
        &self,
        request: Request<pb::GetSkuPriceRequest>,
    ) -> Result<Response<pb::GetSkuPriceResponse>, Status> {
        let r = request.get_ref();
        let sku_id = required("sku_id", &r.sku_id)?;
        let as_of = convert::as_of(r.as_of.as_ref())?;
        let market = self.catalog.market("market", &r.market).await?;
        let priced = self.catalog.sku_price(sku_id, &market, as_of).await?;
        Ok(Response::new(pb::GetSkuPriceResponse {
            price: convert::price(&priced.sku, &market),
        }))
    }

    async fn estimate_hybrid_benefit(
        &self,
        request: Request<pb::EstimateHybridBenefitRequest>,
    ) -> Result<Response<pb::EstimateHybridBenefitResponse>, Status> {
        let r = request.get_ref();
        let situation = decode_situation(r);
        let found = self
            .catalog
            .estimate_hybrid_benefit(&r.market, &situation)
            .await?;
        Ok(Response::new(convert::estimate(&found)))
    }
}

/// The service-to-service catalog API.
#[derive(Clone, Debug)]
pub struct CatalogInternalApi {
    catalog: Catalog,
}

impl CatalogInternalApi {
    /// The API over `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl CatalogInternalService for CatalogInternalApi {
    async fn quote_skus(
        &self,
        request: Request<pb::QuoteSkusRequest>,
    ) -> Result<Response<pb::QuoteSkusResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.get_ref();
        let (market, quotes, price_list_version) =
            self.catalog.quote(&r.market, &r.sku_ids).await?;
        Ok(Response::new(pb::QuoteSkusResponse {
            quotes: quotes
                .iter()
                .map(|q| {
                    let mut product = convert::product(&q.product, Some(&market));
                    product.skus.clear();
                    pb::SkuQuote {
                        sku: Some(convert::sku(&q.sku, Some(&market))),
                        product: Some(product),
                        cap_unit_price: q.cap_unit_price.as_ref().map(
                            |(currency_code, minor_units, digits)| csp_proto::common::v1::Money {
                                currency_code: currency_code.clone(),
                                minor_units: *minor_units,
                                minor_unit_digits: *digits,
                            },
                        ),
                    }
                })
                .collect(),
            price_list_version,
        }))
    }

    async fn import_price_list(
        &self,
        request: Request<pb::ImportPriceListRequest>,
    ) -> Result<Response<pb::ImportPriceListResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.into_inner();
        let report = self
            .catalog
            .import(ImportRequest {
                content: r.content,
                file_name: r.file_name,
                imported_by: r.imported_by,
                dry_run: r.dry_run,
            })
            .await?;
        Ok(Response::new(pb::ImportPriceListResponse {
            price_list: report.price_list.as_ref().map(convert::price_list),
            changed: report.changed,
            changes: Some(convert::changes(&report.changes)),
            summary: report.summary,
        }))
    }

    async fn list_price_lists(
        &self,
        request: Request<pb::ListPriceListsRequest>,
    ) -> Result<Response<pb::ListPriceListsResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.get_ref();
        let (lists, next_page_token) = self.catalog.price_lists(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListPriceListsResponse {
            price_lists: lists.iter().map(convert::price_list).collect(),
            next_page_token,
        }))
    }

    async fn get_price_list(
        &self,
        request: Request<pb::GetPriceListRequest>,
    ) -> Result<Response<pb::GetPriceListResponse>, Status> {
        Caller::service_of(&request)?;
        let list = self.catalog.price_list(request.get_ref().version).await?;
        Ok(Response::new(pb::GetPriceListResponse {
            price_list: Some(convert::price_list(&list)),
            changes: Some(convert::changes(&list.changes)),
        }))
    }
}

fn decode_situation(r: &pb::EstimateHybridBenefitRequest) -> hybrid::Situation {
    hybrid::Situation {
        edition: match pb::WindowsServerEdition::try_from(r.edition) {
            Ok(pb::WindowsServerEdition::Standard) => Some(hybrid::Edition::Standard),
            Ok(pb::WindowsServerEdition::Datacenter) => Some(hybrid::Edition::Datacenter),
            _ => None,
        },
        core_licenses: r.core_licenses,
        software_assurance: r.software_assurance,
        on_premises_in_use: r.on_premises_in_use,
        migration_overlap_days: r.migration_overlap_days,
        vms: r
            .vms
            .iter()
            .enumerate()
            .map(|(i, vm)| hybrid::PlannedVm {
                name: if vm.name.trim().is_empty() {
                    format!("VM {}", i + 1)
                } else {
                    vm.name.clone()
                },
                virtual_cores: vm.virtual_cores,
                hours_per_month: vm.hours_per_month,
            })
            .collect(),
    }
}
