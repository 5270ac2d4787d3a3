//! The catalog in memory: small, read on every call and changed rarely (an
//! import), so every read is served from an immutable snapshot with each
//! market's prices in effect already applied. A new snapshot replaces it
//! whole when the catalog changes, and a re-priced one when the clock passes
//! the start or end of a price period. The database stays the source of
//! truth.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::Micros;

use crate::domain::{CancellationPolicy, Market, PricePeriod, Product};
use crate::hybrid::Rates;
use crate::storage::Loaded;

/// What does not depend on the time: the catalog as loaded.
#[derive(Debug, Default)]
struct Base {
    /// Every market, by code.
    markets: Vec<Market>,
    /// Every product by id, SKUs unpriced.
    unpriced: Vec<Product>,
    /// The product of each SKU.
    sku_products: HashMap<String, String>,
    /// Compute rates per market code.
    rates: HashMap<String, Rates>,
    /// Price periods per market, per SKU, by start.
    periods: HashMap<String, HashMap<String, Vec<PricePeriod>>>,
    /// Every instant a price starts or stops applying, ascending.
    boundaries: Vec<Micros>,
    /// Every version of every cancellation policy.
    policies: Vec<CancellationPolicy>,
    /// The price list last imported (0: none yet).
    price_list_version: i64,
}

/// One consistent view of the whole catalog, priced at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    base: Arc<Base>,
    /// Every product by id, SKUs priced in the market, per market code.
    priced: HashMap<String, Vec<Product>>,
    /// The instants this pricing holds for: `from <= t < until`.
    from: Micros,
    until: Micros,
}

impl Snapshot {
    /// A snapshot of a loaded catalog, priced at `at`.
    pub fn new(loaded: Loaded, at: Micros) -> Self {
        let Loaded {
            data,
            rates,
            policies,
            price_list,
        } = loaded;
        let (mut markets, mut products) = (data.markets, data.products);
        markets.sort_by(|a, b| a.code.cmp(&b.code));
        products.sort_by(|a, b| a.id.cmp(&b.id));
        for product in &mut products {
            product.cancellation_policy = policies
                .iter()
                .filter(|p| p.id == product.cancellation_policy_id)
                .max_by_key(|p| p.version)
                .cloned();
        }
        let sku_products = products
            .iter()
            .flat_map(|p| p.skus.iter().map(|s| (s.id.clone(), p.id.clone())))
            .collect();
        let mut boundaries: Vec<Micros> = Vec::new();
        let mut periods: HashMap<String, HashMap<String, Vec<PricePeriod>>> = HashMap::new();
        for period in data.prices {
            boundaries.push(period.from);
            boundaries.extend(period.until);
            periods
                .entry(period.market.clone())
                .or_default()
                .entry(period.sku_id.clone())
                .or_default()
                .push(period);
        }
        for by_sku in periods.values_mut() {
            for list in by_sku.values_mut() {
                list.sort_by_key(|p| p.from);
            }
        }
        boundaries.sort_unstable();
        boundaries.dedup();
        let base = Base {
            markets,
            unpriced: products,
            sku_products,
            rates,
            periods,
            boundaries,
            policies,
            price_list_version: price_list.map_or(0, |p| p.version),
        };
        Self::priced(Arc::new(base), at)
    }

    /// The same catalog, priced at `at`.
    pub fn at(&self, at: Micros) -> Self {
        Self::priced(self.base.clone(), at)
    }

    fn priced(base: Arc<Base>, at: Micros) -> Self {
        let priced = base
            .markets
            .iter()
            .map(|m| (m.code.clone(), price_in(&base, &m.code, at)))
            .collect();
        let next = base.boundaries.partition_point(|&b| b <= at);
        let from = next
            .checked_sub(1)
            .map_or(Micros::MIN, |i| base.boundaries[i]);
        let until = base.boundaries.get(next).copied().unwrap_or(Micros::MAX);
        Self {
            base,
            priced,
            from,
            until,
        }
    }

    /// Whether this snapshot's prices are the ones in effect at `at`.
    pub fn prices_hold_at(&self, at: Micros) -> bool {
        self.from <= at && at < self.until
    }

    /// Every market, by code.
    pub fn markets(&self) -> &[Market] {
        &self.base.markets
    }

    /// The market with `code` (normalized).
    pub fn market(&self, code: &str) -> Option<&Market> {
        let markets = &self.base.markets;
        markets
            .binary_search_by(|m| m.code.as_str().cmp(code))
            .ok()
            .map(|i| &markets[i])
    }

    /// Every product by id: priced in `market`, or unpriced.
    pub fn products(&self, market: Option<&str>) -> &[Product] {
        market
            .and_then(|code| self.priced.get(code))
            .unwrap_or(&self.base.unpriced)
    }

    /// Every product by id, priced in `market` at `at` (another instant
    /// than the snapshot's).
    pub fn products_at(&self, market: &str, at: Micros) -> Vec<Product> {
        price_in(&self.base, market, at)
    }

    /// The product `id`, priced in `market` or unpriced.
    pub fn product(&self, id: &str, market: Option<&str>) -> Option<&Product> {
        find(self.products(market), id)
    }

    /// The product id of a SKU.
    pub fn product_of_sku(&self, sku_id: &str) -> Option<&str> {
        self.base.sku_products.get(sku_id).map(String::as_str)
    }

    /// The compute rates of a market.
    pub fn rates(&self, market: &str) -> Option<Rates> {
        self.base.rates.get(market).copied()
    }

    /// A SKU's price now in `currency`: from the first market (by code)
    /// that prices it in that currency.
    pub fn sku_price_in_currency(&self, sku_id: &str, currency: &str) -> Option<(i64, u32)> {
        let product_id = self.product_of_sku(sku_id)?;
        self.base
            .markets
            .iter()
            .filter(|m| m.currency_code == currency)
            .find_map(|m| {
                self.product(product_id, Some(&m.code))?
                    .skus
                    .iter()
                    .find(|s| s.id == sku_id)?
                    .price_minor
                    .map(|price| (price, m.minor_unit_digits))
            })
    }

    /// The price list the catalog was last imported from (0: none yet).
    pub fn price_list_version(&self) -> i64 {
        self.base.price_list_version
    }

    /// The latest version of the cancellation policy `id`.
    pub fn policy(&self, id: &str) -> Option<&CancellationPolicy> {
        self.base
            .policies
            .iter()
            .filter(|p| p.id == id)
            .max_by_key(|p| p.version)
    }
}

/// A product by id in a list sorted by id.
pub fn find<'a>(products: &'a [Product], id: &str) -> Option<&'a Product> {
    products
        .binary_search_by(|p| p.id.as_str().cmp(id))
        .ok()
        .map(|i| &products[i])
}

/// Every product with its SKUs priced in `market` at `at`.
fn price_in(base: &Base, market: &str, at: Micros) -> Vec<Product> {
    let periods = base.periods.get(market);
    let mut products = base.unpriced.clone();
    for product in &mut products {
        for sku in &mut product.skus {
            sku.price_minor = periods
                .and_then(|by_sku| by_sku.get(&sku.id))
                .and_then(|list| list.iter().find(|p| p.covers(at)))
                .map(|p| p.amount_minor);
        }
    }
    products
}
