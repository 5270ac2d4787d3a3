//! Catalog storage: SQL over SQLite or PostgreSQL. Each SQL text is written
//! once and runs on either backend.

use csp_store::db::{Db, MigrationSource, Migrations};
use csp_store::error::parse;
use csp_store::{StoreError, StoreResult, on_db};

use crate::domain::{
    DownloadOptions, FileType, Market, OptionKind, Product, ProductKind, Sku, Term,
};
use crate::hybrid::Rates;

/// The catalog's migrations (the same SQL on both backends).
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        SHARED[0],
        SHARED[1],
        MigrationSource {
            version: 3,
            description: "catalog version",
            sql: include_str!("../migrations/0003_catalog_version_sqlite.sql"),
        },
    ],
    postgres: &[
        SHARED[0],
        SHARED[1],
        MigrationSource {
            version: 3,
            description: "catalog version",
            sql: include_str!("../migrations/0003_catalog_version_postgres.sql"),
        },
        MigrationSource {
            version: 4,
            description: "catalog version on truncate",
            sql: include_str!("../migrations/0004_catalog_version_truncate_postgres.sql"),
        },
    ],
};

const SHARED: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "catalog",
        sql: include_str!("../migrations/0001_catalog.sql"),
    },
    MigrationSource {
        version: 2,
        description: "compute rates",
        sql: include_str!("../migrations/0002_compute_rates.sql"),
    },
];

/// Reads the catalog.
#[derive(Clone, Debug)]
pub struct CatalogStore {
    db: Db,
}

type MarketRow = (String, String, String, i32, bool, bool);
type ProductRow = (String, String, String, String, i32);
type SkuRow = (String, String, String, String, Option<i64>);
type OptionRow = (String, String, String, String);
type PriceRow = (String, String, i64);
type RatesRow = (String, i64, i64);

impl CatalogStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Every market, by code.
    pub async fn list_markets(&self) -> StoreResult<Vec<Market>> {
        let sql = "SELECT code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available \
                   FROM markets ORDER BY code";
        let rows: Vec<MarketRow> =
            on_db!(&self.db, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(market_from_row).collect())
    }

    /// A market by its (normalized) code.
    pub async fn get_market(&self, code: &str) -> StoreResult<Option<Market>> {
        const SQL: &str = "SELECT code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available \
                           FROM markets WHERE code = $1";
        let row: Option<MarketRow> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).bind(code).fetch_optional(pool).await)?;
        Ok(row.map(market_from_row))
    }

    /// Products after `after` (by id), at most `limit`, of `kind` (or any),
    /// leaving out Azure reservations unless `include_reservations`; each
    /// with its SKUs priced in `market` and its download options.
    pub async fn list_products(
        &self,
        market: &str,
        kind: Option<ProductKind>,
        include_reservations: bool,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<Product>> {
        const SQL: &str = "SELECT id, title, description, kind, cancellation_window_days FROM products \
                           WHERE id > $1 AND ($2 = '' OR kind = $2) AND ($3 OR kind <> $5) \
                           ORDER BY id LIMIT $4";
        let kind = kind.map_or("", ProductKind::as_db);
        let rows: Vec<ProductRow> = on_db!(&self.db, pool => sqlx::query_as(SQL)
            .bind(after)
            .bind(kind)
            .bind(include_reservations)
            .bind(i64::from(limit))
            .bind(ProductKind::AzureReservation.as_db())
            .fetch_all(pool)
            .await)?;
        self.with_details(rows, Some(market)).await
    }

    /// One product with its SKUs (priced when `market` is given) and download
    /// options.
    pub async fn get_product(
        &self,
        id: &str,
        market: Option<&str>,
    ) -> StoreResult<Option<Product>> {
        const SQL: &str = "SELECT id, title, description, kind, cancellation_window_days FROM products WHERE id = $1";
        let rows: Vec<ProductRow> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).bind(id).fetch_all(pool).await)?;
        Ok(self.with_details(rows, market).await?.pop())
    }

    /// The product id of a SKU.
    pub async fn product_of_sku(&self, sku_id: &str) -> StoreResult<Option<String>> {
        const SQL: &str = "SELECT product_id FROM skus WHERE id = $1";
        let id: Option<String> = on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(sku_id).fetch_optional(pool).await)?;
        Ok(id)
    }

    /// The compute rates of a market, for Azure Hybrid Benefit estimates.
    pub async fn compute_rates(&self, market: &str) -> StoreResult<Option<Rates>> {
        const SQL: &str = "SELECT windows_rate_micro_minor, base_rate_micro_minor FROM compute_rates WHERE market = $1";
        let row: Option<(i64, i64)> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).bind(market).fetch_optional(pool).await)?;
        Ok(row.map(|(windows_micro_minor, base_micro_minor)| Rates {
            windows_micro_minor,
            base_micro_minor,
        }))
    }

    /// The catalog's version: it changes whenever anything in the catalog
    /// does (triggers on every table).
    pub async fn version(&self) -> StoreResult<i64> {
        const SQL: &str = "SELECT version FROM catalog_version WHERE id = 1";
        Ok(on_db!(&self.db, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?)
    }

    /// The whole catalog, for the in-memory snapshot reads are served from.
    pub async fn load_snapshot(&self) -> StoreResult<crate::snapshot::Snapshot> {
        const PRODUCTS: &str = "SELECT id, title, description, kind, cancellation_window_days FROM products ORDER BY id";
        const PRICES: &str = "SELECT sku_id, market, amount_minor FROM prices";
        const RATES: &str =
            "SELECT market, windows_rate_micro_minor, base_rate_micro_minor FROM compute_rates";
        let markets = self.list_markets().await?;
        let rows: Vec<ProductRow> =
            on_db!(&self.db, pool => sqlx::query_as(PRODUCTS).fetch_all(pool).await)?;
        let products = self.with_details(rows, None).await?;
        let (prices, rates): (Vec<PriceRow>, Vec<RatesRow>) = on_db!(&self.db, pool => {
            let prices = sqlx::query_as(PRICES).fetch_all(pool).await?;
            let rates = sqlx::query_as(RATES).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((prices, rates))
        })?;
        let prices = prices
            .into_iter()
            .map(|(sku, market, amount)| ((sku, market), amount))
            .collect();
        let rates = rates
            .into_iter()
            .map(|(market, windows_micro_minor, base_micro_minor)| {
                (
                    market,
                    Rates {
                        windows_micro_minor,
                        base_micro_minor,
                    },
                )
            })
            .collect();
        Ok(crate::snapshot::Snapshot::new(
            markets, products, &prices, rates,
        ))
    }

    /// Adds SKUs and download options to product rows. The rows are one
    /// contiguous id range, so two range queries fetch everything.
    async fn with_details(
        &self,
        rows: Vec<ProductRow>,
        market: Option<&str>,
    ) -> StoreResult<Vec<Product>> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let (first, last) = (first.0.clone(), last.0.clone());
        const SKUS: &str = "SELECT s.id, s.product_id, s.title, s.term, p.amount_minor \
                            FROM skus s LEFT JOIN prices p ON p.sku_id = s.id AND p.market = $3 \
                            WHERE s.product_id >= $1 AND s.product_id <= $2 ORDER BY s.product_id, s.id";
        const OPTIONS: &str = "SELECT product_id, kind, value, display_name FROM download_options \
                               WHERE product_id >= $1 AND product_id <= $2 ORDER BY product_id, kind, position";
        let market = market.unwrap_or("");
        let (skus, options): (Vec<SkuRow>, Vec<OptionRow>) = on_db!(&self.db, pool => {
            let skus = sqlx::query_as(SKUS).bind(&first).bind(&last).bind(market).fetch_all(pool).await?;
            let options = sqlx::query_as(OPTIONS).bind(&first).bind(&last).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((skus, options))
        })?;

        let mut products = rows
            .into_iter()
            .map(|(id, title, description, kind, window)| {
                Ok(Product {
                    kind: parse("products.kind", &kind)?,
                    cancellation_window_days: u32::try_from(window).map_err(|_| {
                        StoreError::corrupt("products.cancellation_window_days", window.to_string())
                    })?,
                    id,
                    title,
                    description,
                    skus: Vec::new(),
                    download_options: DownloadOptions::default(),
                })
            })
            .collect::<StoreResult<Vec<Product>>>()?;

        let index: std::collections::HashMap<String, usize> = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        for (id, product_id, title, term, price) in skus {
            let Some(product) = index.get(&product_id).map(|&i| &mut products[i]) else {
                continue; // a product in the id range but filtered out
            };
            let term: Term = parse("skus.term", &term)?;
            product.skus.push(Sku {
                id,
                product_id,
                title,
                term,
                price_minor: price,
            });
        }
        for (product_id, kind, value, display_name) in options {
            let Some(product) = index.get(&product_id).map(|&i| &mut products[i]) else {
                continue;
            };
            let options = &mut product.download_options;
            match parse::<OptionKind>("download_options.kind", &kind)? {
                OptionKind::Version => options.versions.push(value),
                OptionKind::Language => options.languages.push(value),
                OptionKind::FileType => options.file_types.push(FileType {
                    id: value,
                    display_name,
                }),
            }
        }
        Ok(products)
    }
}

fn market_from_row(row: MarketRow) -> Market {
    let (code, display_name, currency_code, digits, tax_included, azure_reservations_available) =
        row;
    Market {
        code,
        display_name,
        currency_code,
        minor_unit_digits: u32::try_from(digits).unwrap_or(2),
        tax_included,
        azure_reservations_available,
    }
}
