//! The demo catalog: a price list in the repository (`demo-price-list.csv`),
//! imported at first start through the same path as an operator's `csp
//! catalog import`, so the system is usable at once. "First start" means the
//! catalog has never been imported: a catalog an operator loaded is never
//! touched. The demo's Azure Hybrid Benefit compute rates (not part of a
//! price list) are added for its markets where missing.
//!
//! The list prices 21 markets; Azure reservations are not priced (so not
//! offered) in the article's 11; AU and BR prices include tax. Every product
//! is sold under the article's 2019 policy (60 days, no fee, full refund).

use csp_store::db::Db;
use csp_store::on_db;

use crate::domain::ProductKind;
use crate::price_list::{self, KnownPolicy};
use crate::use_cases::{Catalog, ImportRequest};

/// The demo price list.
pub const DEMO_PRICE_LIST: &[u8] = include_bytes!("../demo-price-list.csv");
/// Its name in the price-list history.
pub const DEMO_FILE_NAME: &str = "demo-price-list.csv";
/// Who imports it, in the history.
pub const DEMO_IMPORTER: &str = "csp (the demo catalog, at first start)";

/// Compute rates per vCPU-hour in the US, in millionths of a US cent: the
/// Windows rate and the base (Linux) rate. Their ratio puts the demo's Azure
/// Hybrid Benefit saving near the documented "up to 40%" (39.6%).
pub const WINDOWS_RATE_USD_MICRO_CENTS: i64 = 9_600_000;
/// See [`WINDOWS_RATE_USD_MICRO_CENTS`].
pub const BASE_RATE_USD_MICRO_CENTS: i64 = 5_800_000;

/// Local minor units per 10 000 US cents in each demo market, for the
/// compute rates.
pub const EXCHANGE_RATES: &[(&str, i64)] = &[
    ("AR", 9_500_000),
    ("AU", 16_800),
    ("BR", 57_500),
    ("CA", 13_600),
    ("CN", 72_000),
    ("DE", 9_200),
    ("FR", 9_200),
    ("GB", 7_900),
    ("ID", 156_000_000),
    ("IN", 830_000),
    ("JP", 15_000),
    ("LI", 8_800),
    ("MX", 170_000),
    ("MY", 47_000),
    ("NL", 9_200),
    ("RU", 920_000),
    ("SA", 37_500),
    ("SG", 13_400),
    ("TR", 3_200_000),
    ("US", 10_000),
    ("ZA", 185_000),
];

/// The amount in a market of `usd_cents`, at `rate_per_10k`, rounded to the
/// nearest minor unit.
pub fn local_price(usd_cents: i64, rate_per_10k: i64) -> i64 {
    (usd_cents * rate_per_10k + 5_000) / 10_000
}

/// The SKU id of a demo product and term: `<product>-p1y` / `<product>-p3y`.
pub fn sku_id(product_id: &str, term: crate::domain::Term) -> String {
    format!("{product_id}-{}", term.as_db().to_ascii_lowercase())
}

/// Imports the demo price list when the catalog has never been imported,
/// then adds the demo compute rates where missing. Several replicas may
/// start at once: imports run one at a time, and the second finds the list
/// current.
pub async fn seed_demo_catalog(catalog: &Catalog, db: &Db) -> anyhow::Result<()> {
    if !catalog.ever_imported().await? {
        let report = catalog
            .import(ImportRequest {
                content: DEMO_PRICE_LIST.to_vec(),
                file_name: DEMO_FILE_NAME.to_owned(),
                imported_by: DEMO_IMPORTER.to_owned(),
                dry_run: false,
            })
            .await
            .map_err(|e| anyhow::anyhow!("the demo price list does not import: {e}"))?;
        tracing::info!(summary = %report.summary, "demo catalog");
    }
    on_db!(db, pool => {
        let mut tx = pool.begin().await?;
        for &(market, rate) in EXCHANGE_RATES {
            sqlx::query(
                "INSERT INTO compute_rates (market, windows_rate_micro_minor, base_rate_micro_minor) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM markets WHERE code = $1) \
                 ON CONFLICT (market) DO NOTHING",
            )
            .bind(market)
            .bind(local_price(WINDOWS_RATE_USD_MICRO_CENTS, rate))
            .bind(local_price(BASE_RATE_USD_MICRO_CENTS, rate))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })?;
    catalog.reload().await
}

/// The demo list, read (it is checked by the tests below, so this cannot
/// fail in a build that passed them; an error names what is wrong).
pub fn demo_catalog() -> anyhow::Result<crate::domain::CatalogData> {
    let policies = [KnownPolicy {
        id: "csp-2019-60-days".to_owned(),
        window_days: 60,
        cap_currency: None,
    }];
    price_list::parse(DEMO_PRICE_LIST, &policies).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the demo price list is invalid: {}", errors.join("; "))
    })
}

/// Every software download the demo catalog offers: (product, version,
/// language, file type), for each server subscription product.
pub fn download_selections() -> anyhow::Result<Vec<(String, String, String, String)>> {
    let mut selections = Vec::new();
    for product in demo_catalog()?.products {
        if product.kind != ProductKind::ServerSubscription {
            continue;
        }
        let options = &product.download_options;
        for version in &options.versions {
            for language in &options.languages {
                for file_type in &options.file_types {
                    selections.push((
                        product.id.clone(),
                        version.clone(),
                        language.clone(),
                        file_type.id.clone(),
                    ));
                }
            }
        }
    }
    Ok(selections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_list_reads_and_offers_reservations_outside_the_articles_eleven_markets() {
        let data = demo_catalog().unwrap();
        assert_eq!(data.markets.len(), 21);
        let mut unavailable: Vec<&str> = data
            .markets
            .iter()
            .filter(|m| !m.azure_reservations_available)
            .map(|m| m.code.as_str())
            .collect();
        unavailable.sort_unstable();
        assert_eq!(
            unavailable,
            [
                "AR", "BR", "CN", "ID", "LI", "MX", "MY", "RU", "SA", "TR", "ZA"
            ]
        );
        let taxed: Vec<&str> = data
            .markets
            .iter()
            .filter(|m| m.tax_included)
            .map(|m| m.code.as_str())
            .collect();
        assert_eq!(taxed, ["AU", "BR"]);
        assert_eq!(data.products.len(), 6);
        assert!(
            data.products
                .iter()
                .all(|p| p.cancellation_policy_id == "csp-2019-60-days")
        );
        assert_eq!(download_selections().unwrap().len(), 64);
    }

    #[test]
    fn every_market_has_compute_rates() {
        let data = demo_catalog().unwrap();
        let codes: Vec<&str> = data.markets.iter().map(|m| m.code.as_str()).collect();
        let rated: Vec<&str> = EXCHANGE_RATES.iter().map(|r| r.0).collect();
        assert_eq!(codes, rated);
    }

    #[test]
    fn demo_prices_follow_the_us_list_price_at_each_rate() {
        let data = demo_catalog().unwrap();
        let price = |sku: &str, market: &str| {
            data.prices
                .iter()
                .find(|p| p.sku_id == sku && p.market == market)
                .map(|p| p.amount_minor)
        };
        assert_eq!(price("windows-server-standard-p1y", "US"), Some(40_000));
        assert_eq!(price("windows-server-standard-p1y", "JP"), Some(60_000));
        assert_eq!(price("azure-reserved-vm-d2s-v3-p1y", "BR"), None);
        assert_eq!(local_price(1, 15_000), 2);
        assert_eq!(local_price(1, 14_999), 1);
    }
}
