//! Catalog storage: SQL over SQLite or PostgreSQL. Each SQL text is written
//! once and runs on either backend.

use std::collections::HashMap;

use csp_kit::clock::Micros;
use csp_store::db::{Db, DbTx, MigrationSource, Migrations};
use csp_store::error::parse;
use csp_store::{StoreError, StoreResult, on_db, on_tx};

use crate::changes::{self, Changes};
use crate::domain::{
    CancellationPolicy, CatalogData, DownloadOptions, FileType, Market, OptionKind, PricePeriod,
    Product, RefundCap, Sku,
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
        SHARED[2],
        MigrationSource {
            version: 6,
            description: "price list version triggers",
            sql: include_str!("../migrations/0006_price_list_version_sqlite.sql"),
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
        SHARED[2],
        MigrationSource {
            version: 6,
            description: "price list version triggers",
            sql: include_str!("../migrations/0006_price_list_version_postgres.sql"),
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
    MigrationSource {
        version: 5,
        description: "price lists, price periods, cancellation policies",
        sql: include_str!("../migrations/0005_price_lists.sql"),
    },
];

/// The catalog's storage: the whole catalog read at once (for the snapshot
/// reads are served from) and price lists written in one transaction.
#[derive(Clone, Debug)]
pub struct CatalogStore {
    db: Db,
}

/// Everything the snapshot is built from, read in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Markets, products, SKUs, download options and prices.
    pub data: CatalogData,
    /// Compute rates per market code.
    pub rates: HashMap<String, Rates>,
    /// Every version of every cancellation policy, by id and version.
    pub policies: Vec<CancellationPolicy>,
    /// The price list last imported, if any.
    pub price_list: Option<PriceListRecord>,
}

/// One imported price list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceListRecord {
    /// Its version: 1 for the first import, then one more for each import
    /// that changed the catalog.
    pub version: i64,
    /// SHA-256 of the file, hex.
    pub checksum: String,
    /// The file's name as the operator gave it.
    pub file_name: String,
    /// Who ran the import.
    pub imported_by: String,
    /// When.
    pub imported_at: Micros,
    /// Lines in the file, the header included.
    pub line_count: i64,
    /// What it changed.
    pub changes: Changes,
}

/// What an import is, besides its catalog.
#[derive(Clone, Debug)]
pub struct ImportMeta {
    /// SHA-256 of the file, hex.
    pub checksum: String,
    /// The file's name.
    pub file_name: String,
    /// Who runs it.
    pub imported_by: String,
    /// Lines in the file.
    pub line_count: i64,
    /// When.
    pub at: Micros,
    /// Only compute the changes; write nothing.
    pub dry_run: bool,
}

/// What an import did.
#[derive(Clone, Debug)]
pub enum ImportOutcome {
    /// The catalog now holds the list, as this new version.
    Imported(PriceListRecord),
    /// A dry run: what the list would change.
    Planned(Changes),
    /// Nothing changed: the list is the current one (`same_file`: byte for
    /// byte), which is this version.
    Unchanged {
        /// The current price list.
        current: PriceListRecord,
        /// Whether the file is the very same.
        same_file: bool,
    },
}

type MarketRow = (String, String, String, i32, bool, bool);
type ProductRow = (String, String, String, String, i32, String, String);
type SkuRow = (String, String, String, String, String);
type OptionRow = (String, String, String, String);
type PriceRow = (String, String, i64, Option<i64>, i64);
type RatesRow = (String, i64, i64);
type PolicyRow = (
    String,
    i32,
    String,
    Option<i32>,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<i32>,
    i64,
);
type PriceListRow = (i64, String, String, String, i64, i64, String);

const MARKETS: &str = "SELECT code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available \
                       FROM markets ORDER BY code";
const PRODUCTS: &str = "SELECT id, title, description, kind, cancellation_window_days, publisher, cancellation_policy_id \
                        FROM products ORDER BY id";
const SKUS: &str =
    "SELECT id, product_id, title, term, billing_plan FROM skus ORDER BY product_id, id";
const OPTIONS: &str = "SELECT product_id, kind, value, display_name FROM download_options \
                       ORDER BY product_id, kind, position";
const PRICES: &str = "SELECT sku_id, market, effective_from, effective_until, amount_minor \
                      FROM price_periods ORDER BY sku_id, market, effective_from";
const RATES: &str =
    "SELECT market, windows_rate_micro_minor, base_rate_micro_minor FROM compute_rates";
const POLICIES: &str = "SELECT id, version, title, window_amount, window_unit, refund_rule, \
                        cap_amount_minor, cap_currency, cap_period_days, effective_from \
                        FROM cancellation_policies ORDER BY id, version";
/// The columns of `price_lists`, in [`PriceListRow`] order.
macro_rules! price_list_columns {
    () => {
        "version, checksum, file_name, imported_by, imported_at, line_count, changes"
    };
}
const LATEST_PRICE_LIST: &str = concat!(
    "SELECT ",
    price_list_columns!(),
    " FROM price_lists ORDER BY version DESC LIMIT 1"
);
const PRICE_LISTS_BEFORE: &str = concat!(
    "SELECT ",
    price_list_columns!(),
    " FROM price_lists WHERE ($1 = 0 OR version < $1) ORDER BY version DESC LIMIT $2"
);
const PRICE_LIST: &str = concat!(
    "SELECT ",
    price_list_columns!(),
    " FROM price_lists WHERE version = $1"
);
const INSERT_PRICE_LIST: &str = concat!(
    "INSERT INTO price_lists (",
    price_list_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);

/// Rows per multi-row INSERT (5 to 7 values each, well inside both
/// backends' limit on bound values).
const BATCH: usize = 1000;

/// Writes the catalog's tables from `data` (the same SQL on both backends).
macro_rules! write_catalog_body {
    ($t:expr, $data:expr, $changes:expr) => {{
        let (t, data, changes) = ($t, $data, $changes);
        sqlx::query("DELETE FROM price_periods").execute(&mut *t).await?;
        sqlx::query("DELETE FROM download_options").execute(&mut *t).await?;
        for id in &changes.skus_removed {
            sqlx::query("DELETE FROM skus WHERE id = $1").bind(id).execute(&mut *t).await?;
        }
        for chunk in data.markets.chunks(BATCH) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO markets (code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available) ",
            );
            q.push_values(chunk, |mut b, m: &Market| {
                b.push_bind(&m.code)
                    .push_bind(&m.display_name)
                    .push_bind(&m.currency_code)
                    .push_bind(m.minor_unit_digits as i32)
                    .push_bind(m.tax_included)
                    .push_bind(m.azure_reservations_available);
            });
            q.push(
                " ON CONFLICT (code) DO UPDATE SET display_name = excluded.display_name, \
                 currency_code = excluded.currency_code, minor_unit_digits = excluded.minor_unit_digits, \
                 tax_included = excluded.tax_included, \
                 azure_reservations_available = excluded.azure_reservations_available",
            );
            q.build().execute(&mut *t).await?;
        }
        for chunk in data.products.chunks(BATCH) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO products (id, title, description, kind, cancellation_window_days, publisher, cancellation_policy_id) ",
            );
            q.push_values(chunk, |mut b, p: &Product| {
                b.push_bind(&p.id)
                    .push_bind(&p.title)
                    .push_bind(&p.description)
                    .push_bind(p.kind.as_db())
                    .push_bind(p.cancellation_window_days as i32)
                    .push_bind(&p.publisher)
                    .push_bind(&p.cancellation_policy_id);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description, \
                 kind = excluded.kind, cancellation_window_days = excluded.cancellation_window_days, \
                 publisher = excluded.publisher, cancellation_policy_id = excluded.cancellation_policy_id",
            );
            q.build().execute(&mut *t).await?;
        }
        let skus: Vec<&Sku> = data.products.iter().flat_map(|p| &p.skus).collect();
        for chunk in skus.chunks(BATCH) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO skus (id, product_id, title, term, billing_plan) ",
            );
            q.push_values(chunk, |mut b, s: &&Sku| {
                b.push_bind(&s.id)
                    .push_bind(&s.product_id)
                    .push_bind(&s.title)
                    .push_bind(s.term.as_db())
                    .push_bind(s.billing_plan.as_db());
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET product_id = excluded.product_id, title = excluded.title, \
                 term = excluded.term, billing_plan = excluded.billing_plan",
            );
            q.build().execute(&mut *t).await?;
        }
        // Removed products and markets go once nothing names them (a SKU may
        // have moved from a removed product to another).
        for id in &changes.products_removed {
            sqlx::query("DELETE FROM products WHERE id = $1").bind(id).execute(&mut *t).await?;
        }
        for code in &changes.markets_removed {
            sqlx::query("DELETE FROM compute_rates WHERE market = $1").bind(code).execute(&mut *t).await?;
            sqlx::query("DELETE FROM markets WHERE code = $1").bind(code).execute(&mut *t).await?;
        }
        let options: Vec<(&str, OptionKind, &str, &str, i32)> = data
            .products
            .iter()
            .flat_map(|p| {
                let o = &p.download_options;
                o.versions
                    .iter()
                    .map(|v| (OptionKind::Version, v.as_str(), v.as_str()))
                    .chain(o.languages.iter().map(|l| (OptionKind::Language, l.as_str(), l.as_str())))
                    .chain(o.file_types.iter().map(|f| (OptionKind::FileType, f.id.as_str(), f.display_name.as_str())))
                    .enumerate()
                    .map(move |(i, (kind, value, display))| (p.id.as_str(), kind, value, display, i as i32))
            })
            .collect();
        for chunk in options.chunks(BATCH) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO download_options (product_id, kind, value, display_name, position) ",
            );
            q.push_values(chunk, |mut b, o| {
                b.push_bind(o.0)
                    .push_bind(o.1.as_db())
                    .push_bind(o.2)
                    .push_bind(o.3)
                    .push_bind(o.4);
            });
            q.build().execute(&mut *t).await?;
        }
        for chunk in data.prices.chunks(BATCH) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO price_periods (sku_id, market, effective_from, effective_until, amount_minor) ",
            );
            q.push_values(chunk, |mut b, p: &PricePeriod| {
                b.push_bind(&p.sku_id)
                    .push_bind(&p.market)
                    .push_bind(p.from)
                    .push_bind(p.until)
                    .push_bind(p.amount_minor);
            });
            q.build().execute(&mut *t).await?;
        }
        Ok::<(), StoreError>(())
    }};
}

/// Reads the whole catalog through one connection (inside a transaction).
macro_rules! read_catalog_body {
    ($c:expr) => {{
        let c = $c;
        let markets: Vec<MarketRow> = sqlx::query_as(MARKETS).fetch_all(&mut *c).await?;
        let products: Vec<ProductRow> = sqlx::query_as(PRODUCTS).fetch_all(&mut *c).await?;
        let skus: Vec<SkuRow> = sqlx::query_as(SKUS).fetch_all(&mut *c).await?;
        let options: Vec<OptionRow> = sqlx::query_as(OPTIONS).fetch_all(&mut *c).await?;
        let prices: Vec<PriceRow> = sqlx::query_as(PRICES).fetch_all(&mut *c).await?;
        let rates: Vec<RatesRow> = sqlx::query_as(RATES).fetch_all(&mut *c).await?;
        let policies: Vec<PolicyRow> = sqlx::query_as(POLICIES).fetch_all(&mut *c).await?;
        let price_list: Option<PriceListRow> = sqlx::query_as(LATEST_PRICE_LIST)
            .fetch_optional(&mut *c)
            .await?;
        assemble(
            markets, products, skus, options, prices, rates, policies, price_list,
        )
    }};
}

impl CatalogStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The catalog's version: it changes whenever anything in the catalog
    /// does (triggers on every table).
    pub async fn version(&self) -> StoreResult<i64> {
        const SQL: &str = "SELECT version FROM catalog_version WHERE id = 1";
        Ok(on_db!(&self.db, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?)
    }

    /// The whole catalog, read in one transaction (one consistent state).
    pub async fn load(&self) -> StoreResult<Loaded> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let loaded = read_catalog_body!(&mut *tx)?;
                tx.commit().await?;
                Ok(loaded)
            }
            Db::Postgres(pool) => {
                // One snapshot for every statement, not one each (READ
                // COMMITTED would mix an import committed midway).
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let loaded = read_catalog_body!(&mut *tx)?;
                tx.commit().await?;
                Ok(loaded)
            }
        }
    }

    /// The cancellation policies (every version).
    pub async fn policies(&self) -> StoreResult<Vec<CancellationPolicy>> {
        let rows: Vec<PolicyRow> =
            on_db!(&self.db, pool => sqlx::query_as(POLICIES).fetch_all(pool).await)?;
        rows.into_iter().map(policy_from_row).collect()
    }

    /// Imported price lists, newest first: at most `limit` with versions
    /// below `before` (0: from the newest).
    pub async fn price_lists(&self, before: i64, limit: u32) -> StoreResult<Vec<PriceListRecord>> {
        let rows: Vec<PriceListRow> = on_db!(&self.db, pool => sqlx::query_as(PRICE_LISTS_BEFORE)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(price_list_from_row).collect()
    }

    /// One imported price list.
    pub async fn price_list(&self, version: i64) -> StoreResult<Option<PriceListRecord>> {
        let row: Option<PriceListRow> = on_db!(&self.db, pool => sqlx::query_as(PRICE_LIST)
            .bind(version)
            .fetch_optional(pool)
            .await)?;
        row.map(price_list_from_row).transpose()
    }

    /// Makes `data` the catalog, in one transaction: markets, products and
    /// SKUs upserted or removed, download options and prices replaced, and
    /// the import recorded as the next price-list version. Nothing is
    /// written when the list is the current one, or for a dry run. Imports
    /// run one at a time (the catalog version's row is locked first).
    pub async fn import(
        &self,
        data: &CatalogData,
        meta: &ImportMeta,
    ) -> StoreResult<ImportOutcome> {
        let mut tx = self.db.begin().await?;
        let outcome = import_in(&mut tx, data, meta).await?;
        if matches!(outcome, ImportOutcome::Imported(_)) {
            tx.commit().await?;
        }
        Ok(outcome)
    }
}

async fn import_in(
    tx: &mut DbTx,
    data: &CatalogData,
    meta: &ImportMeta,
) -> StoreResult<ImportOutcome> {
    if let DbTx::Postgres(t) = tx {
        sqlx::query("SELECT version FROM catalog_version WHERE id = 1 FOR UPDATE")
            .execute(&mut **t)
            .await?;
    }
    let current = on_tx!(tx, t => read_catalog_body!(&mut **t))?;
    if let Some(latest) = &current.price_list
        && latest.checksum == meta.checksum
    {
        return Ok(ImportOutcome::Unchanged {
            current: latest.clone(),
            same_file: true,
        });
    }
    let changes = changes::diff(&current.data, data);
    if let Some(latest) = &current.price_list
        && changes.is_empty()
    {
        return Ok(ImportOutcome::Unchanged {
            current: latest.clone(),
            same_file: false,
        });
    }
    if meta.dry_run {
        return Ok(ImportOutcome::Planned(changes));
    }
    let record = PriceListRecord {
        version: current.price_list.as_ref().map_or(1, |p| p.version + 1),
        checksum: meta.checksum.clone(),
        file_name: meta.file_name.clone(),
        imported_by: meta.imported_by.clone(),
        imported_at: meta.at,
        line_count: meta.line_count,
        changes,
    };
    let changes_json = serde_json::to_string(&record.changes)
        .map_err(|e| StoreError::corrupt("price_lists.changes", e.to_string()))?;
    on_tx!(tx, t => {
        write_catalog_body!(&mut **t, data, &record.changes)?;
        sqlx::query(INSERT_PRICE_LIST)
            .bind(record.version)
            .bind(&record.checksum)
            .bind(&record.file_name)
            .bind(&record.imported_by)
            .bind(record.imported_at)
            .bind(record.line_count)
            .bind(&changes_json)
            .execute(&mut **t)
            .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(ImportOutcome::Imported(record))
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    markets: Vec<MarketRow>,
    products: Vec<ProductRow>,
    skus: Vec<SkuRow>,
    options: Vec<OptionRow>,
    prices: Vec<PriceRow>,
    rates: Vec<RatesRow>,
    policies: Vec<PolicyRow>,
    price_list: Option<PriceListRow>,
) -> StoreResult<Loaded> {
    let markets = markets
        .into_iter()
        .map(market_from_row)
        .collect::<StoreResult<_>>()?;
    let mut products = products
        .into_iter()
        .map(
            |(id, title, description, kind, window, publisher, policy)| {
                Ok(Product {
                    kind: parse("products.kind", &kind)?,
                    cancellation_window_days: u32::try_from(window).map_err(|_| {
                        StoreError::corrupt("products.cancellation_window_days", window.to_string())
                    })?,
                    id,
                    title,
                    description,
                    publisher,
                    cancellation_policy_id: policy,
                    cancellation_policy: None,
                    skus: Vec::new(),
                    download_options: DownloadOptions::default(),
                })
            },
        )
        .collect::<StoreResult<Vec<Product>>>()?;
    let index: HashMap<String, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i))
        .collect();
    for (id, product_id, title, term, plan) in skus {
        let Some(&i) = index.get(&product_id) else {
            return Err(StoreError::corrupt("skus.product_id", product_id));
        };
        products[i].skus.push(Sku {
            term: parse("skus.term", &term)?,
            billing_plan: parse("skus.billing_plan", &plan)?,
            id,
            product_id,
            title,
            price_minor: None,
        });
    }
    for (product_id, kind, value, display_name) in options {
        let Some(&i) = index.get(&product_id) else {
            return Err(StoreError::corrupt(
                "download_options.product_id",
                product_id,
            ));
        };
        let options = &mut products[i].download_options;
        match parse::<OptionKind>("download_options.kind", &kind)? {
            OptionKind::Version => options.versions.push(value),
            OptionKind::Language => options.languages.push(value),
            OptionKind::FileType => options.file_types.push(FileType {
                id: value,
                display_name,
            }),
        }
    }
    let prices = prices
        .into_iter()
        .map(|(sku_id, market, from, until, amount_minor)| PricePeriod {
            sku_id,
            market,
            from,
            until,
            amount_minor,
        })
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
    Ok(Loaded {
        data: CatalogData {
            markets,
            products,
            prices,
        },
        rates,
        policies: policies
            .into_iter()
            .map(policy_from_row)
            .collect::<StoreResult<_>>()?,
        price_list: price_list.map(price_list_from_row).transpose()?,
    })
}

fn market_from_row(row: MarketRow) -> StoreResult<Market> {
    let (code, display_name, currency_code, digits, tax_included, azure_reservations_available) =
        row;
    Ok(Market {
        minor_unit_digits: u32::try_from(digits)
            .map_err(|_| StoreError::corrupt("markets.minor_unit_digits", digits.to_string()))?,
        code,
        display_name,
        currency_code,
        tax_included,
        azure_reservations_available,
    })
}

fn policy_from_row(row: PolicyRow) -> StoreResult<CancellationPolicy> {
    let (id, version, title, amount, unit, rule, cap, currency, period, from) = row;
    let positive = |column: &'static str, value: i32| {
        u32::try_from(value).map_err(|_| StoreError::corrupt(column, value.to_string()))
    };
    Ok(CancellationPolicy {
        version: positive("cancellation_policies.version", version)?,
        window_amount: amount
            .map(|a| positive("cancellation_policies.window_amount", a))
            .transpose()?,
        window_unit: parse("cancellation_policies.window_unit", &unit)?,
        refund_rule: parse("cancellation_policies.refund_rule", &rule)?,
        cap: match (cap, currency, period) {
            (Some(amount_minor), Some(currency), Some(period)) => Some(RefundCap {
                amount_minor,
                currency,
                period_days: positive("cancellation_policies.cap_period_days", period)?,
            }),
            _ => None,
        },
        effective_from: from,
        id,
        title,
    })
}

fn price_list_from_row(row: PriceListRow) -> StoreResult<PriceListRecord> {
    let (version, checksum, file_name, imported_by, imported_at, line_count, changes) = row;
    Ok(PriceListRecord {
        changes: serde_json::from_str(&changes)
            .map_err(|_| StoreError::corrupt("price_lists.changes", changes.clone()))?,
        version,
        checksum,
        file_name,
        imported_by,
        imported_at,
        line_count,
    })
}
