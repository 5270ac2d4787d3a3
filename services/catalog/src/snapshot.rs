//! The catalog in memory: small, read on every call and changed rarely (the
//! seed, an import), so every read is served from an immutable snapshot with
//! each market's prices already applied, and a new snapshot replaces it
//! whole when the catalog changes. The database stays the source of truth.

use std::collections::HashMap;

use crate::domain::{Market, Product};
use crate::hybrid::Rates;

/// One consistent view of the whole catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every market, by code.
    markets: Vec<Market>,
    /// Every product by id, SKUs unpriced.
    unpriced: Vec<Product>,
    /// Every product by id, SKUs priced in the market, per market code.
    priced: HashMap<String, Vec<Product>>,
    /// The product of each SKU.
    sku_products: HashMap<String, String>,
    /// Compute rates per market code.
    rates: HashMap<String, Rates>,
}

impl Snapshot {
    /// A snapshot of `markets`, `products` (unpriced), their `prices`
    /// ((SKU, market) -> minor units) and compute `rates`.
    pub fn new(
        mut markets: Vec<Market>,
        mut products: Vec<Product>,
        prices: &HashMap<(String, String), i64>,
        rates: HashMap<String, Rates>,
    ) -> Self {
        markets.sort_by(|a, b| a.code.cmp(&b.code));
        products.sort_by(|a, b| a.id.cmp(&b.id));
        let priced = markets
            .iter()
            .map(|market| {
                let mut in_market = products.clone();
                for product in &mut in_market {
                    for sku in &mut product.skus {
                        sku.price_minor =
                            prices.get(&(sku.id.clone(), market.code.clone())).copied();
                    }
                }
                (market.code.clone(), in_market)
            })
            .collect();
        let sku_products = products
            .iter()
            .flat_map(|p| p.skus.iter().map(|s| (s.id.clone(), p.id.clone())))
            .collect();
        Self {
            markets,
            unpriced: products,
            priced,
            sku_products,
            rates,
        }
    }

    /// Every market, by code.
    pub fn markets(&self) -> &[Market] {
        &self.markets
    }

    /// The market with `code` (normalized).
    pub fn market(&self, code: &str) -> Option<&Market> {
        self.markets
            .binary_search_by(|m| m.code.as_str().cmp(code))
            .ok()
            .map(|i| &self.markets[i])
    }

    /// Every product by id: priced in `market`, or unpriced.
    pub fn products(&self, market: Option<&str>) -> &[Product] {
        market
            .and_then(|code| self.priced.get(code))
            .unwrap_or(&self.unpriced)
    }

    /// The product `id`, priced in `market` or unpriced.
    pub fn product(&self, id: &str, market: Option<&str>) -> Option<&Product> {
        let products = self.products(market);
        products
            .binary_search_by(|p| p.id.as_str().cmp(id))
            .ok()
            .map(|i| &products[i])
    }

    /// The product id of a SKU.
    pub fn product_of_sku(&self, sku_id: &str) -> Option<&str> {
        self.sku_products.get(sku_id).map(String::as_str)
    }

    /// The compute rates of a market.
    pub fn rates(&self, market: &str) -> Option<Rates> {
        self.rates.get(market).copied()
    }
}
