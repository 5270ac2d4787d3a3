//! gRPC handlers: decode, validate, call storage and the domain rules, map
//! to the contract. Errors leave through `ApiError -> Status`.

use csp_kit::market::MarketCode;
use csp_kit::paging;
use csp_kit::{ApiError, ApiResult};
use csp_proto::catalog::v1 as pb;
use csp_proto::catalog::v1::catalog_internal_service_server::CatalogInternalService;
use csp_proto::catalog::v1::catalog_service_server::CatalogService;
use csp_proto::common::v1::Money;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::domain::{self, Market, Product, ProductKind, Sku, Term};
use crate::hybrid;
use crate::storage::CatalogStore;

/// The public catalog API.
#[derive(Clone, Debug)]
pub struct CatalogApi {
    store: CatalogStore,
}

impl CatalogApi {
    /// The API over `store`.
    pub fn new(store: CatalogStore) -> Self {
        Self { store }
    }

    /// The market named by a request field: well-formed and known.
    async fn market(&self, field: &str, code: &str) -> ApiResult<Market> {
        let code = MarketCode::parse(field, code)?;
        match self.store.get_market(code.as_str()).await? {
            Some(market) => Ok(market),
            None => {
                let known: Vec<String> = self
                    .store
                    .list_markets()
                    .await?
                    .into_iter()
                    .map(|m| m.code)
                    .collect();
                Err(domain::unknown_market(field, code.as_str(), &known))
            }
        }
    }
}

/// Where the next page of ListProducts starts, and the query it belongs to.
#[derive(Serialize, Deserialize)]
struct ProductCursor {
    after: String,
    market: String,
    kind: i32,
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_markets(
        &self,
        _request: Request<pb::ListMarketsRequest>,
    ) -> Result<Response<pb::ListMarketsResponse>, Status> {
        let markets = self.store.list_markets().await?;
        Ok(Response::new(pb::ListMarketsResponse {
            markets: markets.iter().map(market_to_pb).collect(),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let market = self.market("market", &request.market).await?;
        let kind = kind_filter(request.kind)?;
        let page_size = paging::page_size(
            request.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
        )?;
        let after = match paging::decode::<ProductCursor>(&request.page_token)? {
            None => String::new(),
            Some(cursor) if cursor.market == market.code && cursor.kind == request.kind => {
                cursor.after
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "page_token",
                    "this page token belongs to a query with another market or kind; start again from an empty page_token",
                )
                .into());
            }
        };

        let include_reservations = domain::is_offered(&market, ProductKind::AzureReservation);
        let mut products = self
            .store
            .list_products(
                &market.code,
                kind,
                include_reservations,
                &after,
                page_size + 1,
            )
            .await?;
        let next_page_token = paging::finish_page(&mut products, page_size, |last| ProductCursor {
            after: last.id.clone(),
            market: market.code.clone(),
            kind: request.kind,
        });
        Ok(Response::new(pb::ListProductsResponse {
            products: products
                .iter()
                .map(|p| product_to_pb(p, Some(&market)))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let request = request.into_inner();
        let product_id = required("product_id", &request.product_id)?;
        let market = if request.market.trim().is_empty() {
            None
        } else {
            Some(self.market("market", &request.market).await?)
        };
        let product = self
            .store
            .get_product(product_id, market.as_ref().map(|m| m.code.as_str()))
            .await?
            .ok_or_else(|| ApiError::not_found("product", product_id))?;
        if let Some(market) = &market {
            domain::ensure_offered(market, &product.id, product.kind)?;
        }
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_to_pb(&product, market.as_ref())),
        }))
    }

    async fn get_sku_price(
        &self,
        request: Request<pb::GetSkuPriceRequest>,
    ) -> Result<Response<pb::GetSkuPriceResponse>, Status> {
        let request = request.into_inner();
        let sku_id = required("sku_id", &request.sku_id)?;
        let market = self.market("market", &request.market).await?;
        let product_id = self
            .store
            .product_of_sku(sku_id)
            .await?
            .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
        let product = self
            .store
            .get_product(&product_id, Some(&market.code))
            .await?
            .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
        domain::ensure_offered(&market, &product.id, product.kind)?;
        let sku = product
            .skus
            .iter()
            .find(|s| s.id == sku_id)
            .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
        let price = price_to_pb(sku, &market).ok_or_else(|| {
            ApiError::failed_precondition(
                "SKU_NOT_PRICED",
                format!("sku/{sku_id}"),
                format!("SKU {sku_id} has no price in market {}", market.code),
            )
        })?;
        Ok(Response::new(pb::GetSkuPriceResponse {
            price: Some(price),
        }))
    }

    async fn estimate_hybrid_benefit(
        &self,
        request: Request<pb::EstimateHybridBenefitRequest>,
    ) -> Result<Response<pb::EstimateHybridBenefitResponse>, Status> {
        Ok(Response::new(
            self.estimate_hybrid_benefit_inner(request.into_inner())
                .await?,
        ))
    }
}

impl CatalogApi {
    async fn estimate_hybrid_benefit_inner(
        &self,
        request: pb::EstimateHybridBenefitRequest,
    ) -> ApiResult<pb::EstimateHybridBenefitResponse> {
        let market = self.market("market", &request.market).await?;
        let situation = hybrid::Situation {
            edition: match pb::WindowsServerEdition::try_from(request.edition) {
                Ok(pb::WindowsServerEdition::Standard) => Some(hybrid::Edition::Standard),
                Ok(pb::WindowsServerEdition::Datacenter) => Some(hybrid::Edition::Datacenter),
                _ => None,
            },
            core_licenses: request.core_licenses,
            software_assurance: request.software_assurance,
            on_premises_in_use: request.on_premises_in_use,
            migration_overlap_days: request.migration_overlap_days,
            vms: request
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
        };
        let rates = self
            .store
            .compute_rates(&market.code)
            .await?
            .ok_or_else(|| {
                ApiError::failed_precondition(
                    "NO_COMPUTE_RATES",
                    format!("market/{}", market.code),
                    format!(
                        "the catalog has no compute rates for market {}",
                        market.code
                    ),
                )
            })?;
        let estimate = hybrid::estimate(&situation, rates)?;
        let money = |minor_units| Money {
            currency_code: market.currency_code.clone(),
            minor_units,
            minor_unit_digits: market.minor_unit_digits,
        };
        Ok(pb::EstimateHybridBenefitResponse {
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
            core_licenses_missing: u32::try_from(estimate.core_licenses_missing)
                .unwrap_or(u32::MAX),
            monthly_saving: Some(money(estimate.saving_minor)),
            saving_basis_points: estimate.saving_basis_points,
            licenses_reused: estimate.licenses_reused(),
            tax_included: market.tax_included,
            summary: hybrid::summary(&estimate, &market.currency_code, market.minor_unit_digits),
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
        })
    }
}

/// The service-to-service catalog API.
#[derive(Clone, Debug)]
pub struct CatalogInternalApi {
    api: CatalogApi,
}

impl CatalogInternalApi {
    /// The API over `store`.
    pub fn new(store: CatalogStore) -> Self {
        Self {
            api: CatalogApi::new(store),
        }
    }

    async fn quote(&self, request: pb::QuoteSkusRequest) -> ApiResult<pb::QuoteSkusResponse> {
        let market = self.api.market("market", &request.market).await?;
        if request.sku_ids.is_empty() {
            return Err(ApiError::invalid("sku_ids", "name at least one SKU"));
        }
        let mut quotes: Vec<pb::SkuQuote> = Vec::new();
        let mut products: Vec<Product> = Vec::new();
        for (i, sku_id) in request.sku_ids.iter().enumerate() {
            let sku_id = required(&format!("sku_ids[{i}]"), sku_id)?;
            if quotes
                .iter()
                .any(|q| q.sku.as_ref().is_some_and(|s| s.id == sku_id))
            {
                continue;
            }
            let product_id = self
                .api
                .store
                .product_of_sku(sku_id)
                .await?
                .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
            if !products.iter().any(|p| p.id == product_id) {
                let product = self
                    .api
                    .store
                    .get_product(&product_id, Some(&market.code))
                    .await?
                    .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
                domain::ensure_offered(&market, &product.id, product.kind)?;
                products.push(product);
            }
            let product = products
                .iter()
                .find(|p| p.id == product_id)
                .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
            let mut product_pb = product_to_pb(product, Some(&market));
            let sku = product_pb
                .skus
                .iter()
                .find(|s| s.id == sku_id)
                .cloned()
                .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
            if sku.price.is_none() {
                return Err(ApiError::failed_precondition(
                    "SKU_NOT_PRICED",
                    format!("sku/{sku_id}"),
                    format!("SKU {sku_id} has no price in market {}", market.code),
                ));
            }
            product_pb.skus.clear();
            quotes.push(pb::SkuQuote {
                sku: Some(sku),
                product: Some(product_pb),
            });
        }
        Ok(pb::QuoteSkusResponse { quotes })
    }
}

#[tonic::async_trait]
impl CatalogInternalService for CatalogInternalApi {
    async fn quote_skus(
        &self,
        request: Request<pb::QuoteSkusRequest>,
    ) -> Result<Response<pb::QuoteSkusResponse>, Status> {
        csp_kit::Caller::service_of(&request)?;
        Ok(Response::new(self.quote(request.into_inner()).await?))
    }
}

fn required<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    Ok(value)
}

fn kind_filter(kind: i32) -> ApiResult<Option<ProductKind>> {
    match pb::ProductKind::try_from(kind) {
        Ok(pb::ProductKind::Unspecified) => Ok(None),
        Ok(pb::ProductKind::ServerSubscription) => Ok(Some(ProductKind::ServerSubscription)),
        Ok(pb::ProductKind::AzureReservation) => Ok(Some(ProductKind::AzureReservation)),
        Err(_) => Err(ApiError::invalid(
            "kind",
            format!("{kind} is not a ProductKind"),
        )),
    }
}

fn market_to_pb(market: &Market) -> pb::Market {
    pb::Market {
        code: market.code.clone(),
        display_name: market.display_name.clone(),
        currency_code: market.currency_code.clone(),
        tax_included: market.tax_included,
        azure_reservations_available: market.azure_reservations_available,
    }
}

fn price_to_pb(sku: &Sku, market: &Market) -> Option<pb::Price> {
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

/// The contract's view of a product; SKUs carry prices when a market is given.
pub fn product_to_pb(product: &Product, market: Option<&Market>) -> pb::Product {
    pb::Product {
        id: product.id.clone(),
        title: product.title.clone(),
        description: product.description.clone(),
        kind: match product.kind {
            ProductKind::ServerSubscription => pb::ProductKind::ServerSubscription,
            ProductKind::AzureReservation => pb::ProductKind::AzureReservation,
        } as i32,
        skus: product
            .skus
            .iter()
            .map(|sku| pb::Sku {
                id: sku.id.clone(),
                product_id: sku.product_id.clone(),
                title: sku.title.clone(),
                term: match sku.term {
                    Term::P1Y => pb::Term::OneYear,
                    Term::P3Y => pb::Term::ThreeYears,
                } as i32,
                price: market.and_then(|m| price_to_pb(sku, m)),
            })
            .collect(),
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
    }
}
