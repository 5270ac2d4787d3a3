//! The catalog's use cases: each read as one flow over the in-memory
//! snapshot of the catalog and the domain's rules (where reservations are
//! offered, what has a price, the Azure Hybrid Benefit arithmetic). Handlers
//! call exactly one of these.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use csp_kit::market::MarketCode;
use csp_kit::shutdown::Shutdown;
use csp_kit::{ApiError, ApiResult, paging};
use serde::{Deserialize, Serialize};

use crate::domain::{self, Market, Product, ProductKind, Sku};
use crate::hybrid::{self, Estimate, Rates, Situation};
use crate::snapshot::Snapshot;
use crate::storage::CatalogStore;

/// How often a replica asks whether the catalog changed (one single-row
/// read), so any change reaches every replica's snapshot within this time.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where the next page of ListProducts starts, and the query it belongs to.
#[derive(Serialize, Deserialize)]
struct ProductCursor {
    after: String,
    market: String,
    kind: i32,
}

/// A page of products in one market.
#[derive(Clone, Debug)]
pub struct ProductPage {
    /// The market, for prices and tax.
    pub market: Market,
    /// The products, with their SKUs priced in the market.
    pub products: Vec<Product>,
    /// The next page's token (empty on the last page).
    pub next_page_token: String,
}

/// A SKU priced in a market, with its product.
#[derive(Clone, Debug)]
pub struct Priced {
    /// The product (its SKUs priced in the market).
    pub product: Product,
    /// The SKU.
    pub sku: Sku,
}

/// An Azure Hybrid Benefit estimate, with what it was computed from.
#[derive(Clone, Debug)]
pub struct HybridEstimate {
    /// The market.
    pub market: Market,
    /// Its compute rates.
    pub rates: Rates,
    /// The estimate.
    pub estimate: Estimate,
}

/// The catalog's use cases, over the current snapshot.
#[derive(Clone, Debug)]
pub struct Catalog {
    store: CatalogStore,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    /// The catalog version the snapshot was loaded at.
    version: Arc<std::sync::atomic::AtomicI64>,
}

impl Catalog {
    /// Over `store`, with its catalog loaded.
    pub async fn load(store: CatalogStore) -> anyhow::Result<Self> {
        let catalog = Self {
            store,
            snapshot: Arc::default(),
            version: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        };
        catalog.reload().await?;
        Ok(catalog)
    }

    /// Loads the catalog again when its version moved, and serves the new
    /// snapshot from then on. The version is read before the catalog, so a
    /// change during the load is loaded again next time.
    pub async fn reload(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let version = self.store.version().await?;
        if version == self.version.load(Ordering::Acquire) {
            return Ok(());
        }
        let fresh = Arc::new(self.store.load_snapshot().await?);
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        self.version.store(version, Ordering::Release);
        tracing::info!(version, "catalog snapshot loaded");
        Ok(())
    }

    /// Checks for a change every [`REFRESH`] until `shutdown` fires (a
    /// failed reload keeps the last snapshot and is logged).
    pub async fn refresh_until(self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "cannot reload the catalog; serving the last snapshot");
            }
        }
    }

    /// The snapshot reads are served from.
    fn now(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every market.
    pub async fn markets(&self) -> ApiResult<Vec<Market>> {
        Ok(self.now().markets().to_vec())
    }

    /// The market named by a request field: well-formed and known.
    pub async fn market(&self, field: &str, code: &str) -> ApiResult<Market> {
        market_in(&self.now(), field, code)
    }

    /// A page of the products offered in a market (reservations only where
    /// they are available), optionally of one kind (`kind_filter` is the
    /// request's value, bound into the page token).
    pub async fn list_products(
        &self,
        market: &str,
        kind_filter: i32,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<ProductPage> {
        // One snapshot for the whole read, so the market and its prices
        // agree.
        let snapshot = self.now();
        let market = market_in(&snapshot, "market", market)?;
        let kind = kind_of(kind_filter)?;
        let page_size =
            paging::page_size(page_size, paging::DEFAULT_PAGE_SIZE, paging::MAX_PAGE_SIZE)?;
        let after = match paging::decode::<ProductCursor>(page_token)? {
            None => String::new(),
            Some(cursor) if cursor.market == market.code && cursor.kind == kind_filter => {
                cursor.after
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "page_token",
                    "this page token belongs to a query with another market or kind; start again from an empty page_token",
                ));
            }
        };
        let include_reservations = domain::is_offered(&market, ProductKind::AzureReservation);
        let mut products: Vec<Product> = snapshot
            .products(Some(&market.code))
            .iter()
            .filter(|p| p.id.as_str() > after.as_str())
            .filter(|p| kind.is_none_or(|k| p.kind == k))
            .filter(|p| include_reservations || p.kind != ProductKind::AzureReservation)
            .take(page_size as usize + 1)
            .cloned()
            .collect();
        let next_page_token = paging::finish_page(&mut products, page_size, |last| ProductCursor {
            after: last.id.clone(),
            market: market.code.clone(),
            kind: kind_filter,
        });
        Ok(ProductPage {
            market,
            products,
            next_page_token,
        })
    }

    /// A product, priced in `market` when one is named (where it must be
    /// offered).
    pub async fn product(
        &self,
        product_id: &str,
        market: &str,
    ) -> ApiResult<(Product, Option<Market>)> {
        let snapshot = self.now();
        let market = if market.trim().is_empty() {
            None
        } else {
            Some(market_in(&snapshot, "market", market)?)
        };
        let product = snapshot
            .product(product_id, market.as_ref().map(|m| m.code.as_str()))
            .cloned()
            .ok_or_else(|| ApiError::not_found("product", product_id))?;
        if let Some(market) = &market {
            domain::ensure_offered(market, &product.id, product.kind)?;
        }
        Ok((product, market))
    }

    /// A SKU's price in a market: the SKU's product must be offered there,
    /// and the SKU priced.
    pub async fn sku_price(&self, sku_id: &str, market: &Market) -> ApiResult<Priced> {
        sku_price_in(&self.now(), sku_id, market)
    }

    /// Prices SKUs for an order in one market, each distinct SKU once, in
    /// the order first named, all from one snapshot (one price list).
    pub async fn quote(
        &self,
        market: &str,
        sku_ids: &[String],
    ) -> ApiResult<(Market, Vec<Priced>)> {
        let snapshot = self.now();
        let market = market_in(&snapshot, "market", market)?;
        if sku_ids.is_empty() {
            return Err(ApiError::invalid("sku_ids", "name at least one SKU"));
        }
        let mut quotes: Vec<Priced> = Vec::new();
        for (i, sku_id) in sku_ids.iter().enumerate() {
            let sku_id = required(&format!("sku_ids[{i}]"), sku_id)?;
            if quotes.iter().any(|q| q.sku.id == sku_id) {
                continue;
            }
            quotes.push(sku_price_in(&snapshot, sku_id, &market)?);
        }
        Ok((market, quotes))
    }

    /// What Azure Hybrid Benefit saves in a market for a planned situation.
    pub async fn estimate_hybrid_benefit(
        &self,
        market: &str,
        situation: &Situation,
    ) -> ApiResult<HybridEstimate> {
        let snapshot = self.now();
        let market = market_in(&snapshot, "market", market)?;
        let rates = snapshot.rates(&market.code).ok_or_else(|| {
            ApiError::failed_precondition(
                "NO_COMPUTE_RATES",
                format!("market/{}", market.code),
                format!(
                    "the catalog has no compute rates for market {}",
                    market.code
                ),
            )
        })?;
        let estimate = hybrid::estimate(situation, rates)?;
        Ok(HybridEstimate {
            market,
            rates,
            estimate,
        })
    }
}

/// A SKU's price in a market in `snapshot`: the SKU's product must be
/// offered there, and the SKU priced.
fn sku_price_in(snapshot: &Snapshot, sku_id: &str, market: &Market) -> ApiResult<Priced> {
    let product = snapshot
        .product_of_sku(sku_id)
        .and_then(|product_id| snapshot.product(product_id, Some(&market.code)))
        .cloned()
        .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
    domain::ensure_offered(market, &product.id, product.kind)?;
    let sku = product
        .skus
        .iter()
        .find(|s| s.id == sku_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("sku", sku_id))?;
    if sku.price_minor.is_none() {
        return Err(domain::not_priced(sku_id, market));
    }
    Ok(Priced { product, sku })
}

/// The market named by a request field in `snapshot`: well-formed and known.
fn market_in(snapshot: &Snapshot, field: &str, code: &str) -> ApiResult<Market> {
    let code = MarketCode::parse(field, code)?;
    if let Some(market) = snapshot.market(code.as_str()) {
        return Ok(market.clone());
    }
    let known: Vec<String> = snapshot.markets().iter().map(|m| m.code.clone()).collect();
    Err(domain::unknown_market(field, code.as_str(), &known))
}

/// The kind a ListProducts filter names (`None`: every kind).
fn kind_of(kind: i32) -> ApiResult<Option<ProductKind>> {
    use csp_proto::catalog::v1 as pb;
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

/// A required text field, trimmed.
pub fn required<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    Ok(value)
}
