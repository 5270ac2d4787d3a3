//! The demo catalog, seeded on first start so the system is usable at once.
//! Seeding is idempotent (`ON CONFLICT DO NOTHING`), so every start and every
//! replica may run it; rows edited since are left alone.
//!
//! Prices are derived from a list price in US cents and a per-market rate, in
//! integer arithmetic. In AU and BR, where prices include tax, the rate folds
//! in the tax (AU: 10% GST; BR: an indicative 15%).

use csp_store::db::Db;
use csp_store::on_db;

use crate::domain::{OptionKind, ProductKind, Term};

/// (code, name, currency, minor digits, tax included, reservations offered,
/// local minor units per 10 000 US cents).
pub const MARKETS: &[(&str, &str, &str, u32, bool, bool, i64)] = &[
    ("AR", "Argentina", "ARS", 2, false, false, 9_500_000),
    ("AU", "Australia", "AUD", 2, true, true, 16_800),
    ("BR", "Brazil", "BRL", 2, true, false, 57_500),
    ("CA", "Canada", "CAD", 2, false, true, 13_600),
    ("CN", "China", "CNY", 2, false, false, 72_000),
    ("DE", "Germany", "EUR", 2, false, true, 9_200),
    ("FR", "France", "EUR", 2, false, true, 9_200),
    ("GB", "United Kingdom", "GBP", 2, false, true, 7_900),
    ("ID", "Indonesia", "IDR", 2, false, false, 156_000_000),
    ("IN", "India", "INR", 2, false, true, 830_000),
    ("JP", "Japan", "JPY", 0, false, true, 15_000),
    ("LI", "Liechtenstein", "CHF", 2, false, false, 8_800),
    ("MX", "Mexico", "MXN", 2, false, false, 170_000),
    ("MY", "Malaysia", "MYR", 2, false, false, 47_000),
    ("NL", "Netherlands", "EUR", 2, false, true, 9_200),
    ("RU", "Russia", "RUB", 2, false, false, 920_000),
    ("SA", "Saudi Arabia", "SAR", 2, false, false, 37_500),
    ("SG", "Singapore", "SGD", 2, false, true, 13_400),
    ("TR", "Turkey", "TRY", 2, false, false, 3_200_000),
    ("US", "United States", "USD", 2, false, true, 10_000),
    ("ZA", "South Africa", "ZAR", 2, false, false, 185_000),
];

/// (id, title, description, kind).
pub const PRODUCTS: &[(&str, &str, &str, ProductKind)] = &[
    (
        "azure-reserved-vm-d2s-v3",
        "Azure Reserved VM Instance, D2s v3",
        "A reservation of one D2s v3 virtual machine (2 vCPUs, 8 GiB) in Azure, paid up front for the term.",
        ProductKind::AzureReservation,
    ),
    (
        "azure-reserved-vm-e4s-v3",
        "Azure Reserved VM Instance, E4s v3",
        "A reservation of one E4s v3 virtual machine (4 vCPUs, 32 GiB) in Azure, paid up front for the term.",
        ProductKind::AzureReservation,
    ),
    (
        "sql-server-enterprise",
        "SQL Server Enterprise",
        "SQL Server Enterprise edition, 2-core pack, for mission-critical databases.",
        ProductKind::ServerSubscription,
    ),
    (
        "sql-server-standard",
        "SQL Server Standard",
        "SQL Server Standard edition, 2-core pack, for departmental databases.",
        ProductKind::ServerSubscription,
    ),
    (
        "windows-server-datacenter",
        "Windows Server Datacenter",
        "Windows Server Datacenter edition, 16-core pack, for highly virtualized datacenters; eligible for Azure Hybrid Benefit with Software Assurance (licenses reused).",
        ProductKind::ServerSubscription,
    ),
    (
        "windows-server-standard",
        "Windows Server Standard",
        "Windows Server Standard edition, 16-core pack, for physical or lightly virtualized servers; eligible for Azure Hybrid Benefit with Software Assurance (licenses converted).",
        ProductKind::ServerSubscription,
    ),
];

/// (product id, term, list price in US cents). SKU ids are
/// `<product>-p1y` / `<product>-p3y`.
pub const SKUS: &[(&str, Term, i64)] = &[
    ("azure-reserved-vm-d2s-v3", Term::OneYear, 60_000),
    ("azure-reserved-vm-d2s-v3", Term::ThreeYears, 120_000),
    ("azure-reserved-vm-e4s-v3", Term::OneYear, 150_000),
    ("azure-reserved-vm-e4s-v3", Term::ThreeYears, 300_000),
    ("sql-server-enterprise", Term::OneYear, 700_000),
    ("sql-server-enterprise", Term::ThreeYears, 1_950_000),
    ("sql-server-standard", Term::OneYear, 190_000),
    ("sql-server-standard", Term::ThreeYears, 520_000),
    ("windows-server-datacenter", Term::OneYear, 140_000),
    ("windows-server-datacenter", Term::ThreeYears, 390_000),
    ("windows-server-standard", Term::OneYear, 40_000),
    ("windows-server-standard", Term::ThreeYears, 110_000),
];

/// Compute rates per vCPU-hour in the US, in millionths of a US cent: the
/// Windows rate and the base (Linux) rate. Their ratio puts the demo's Azure
/// Hybrid Benefit saving near the documented "up to 40%" (39.6%).
pub const WINDOWS_RATE_USD_MICRO_CENTS: i64 = 9_600_000;
/// See [`WINDOWS_RATE_USD_MICRO_CENTS`].
pub const BASE_RATE_USD_MICRO_CENTS: i64 = 5_800_000;

const VERSIONS: &[&str] = &["2019", "2022"];
const LANGUAGES: &[&str] = &["en-US", "zh-CN", "de-DE", "ja-JP"];
const FILE_TYPES: &[(&str, &str)] = &[("iso-x64", "ISO 64-bit"), ("vhdx-x64", "VHDX 64-bit")];

/// Every software download the demo catalog offers: (product, version,
/// language, file type), for each server subscription product.
pub fn download_selections()
-> impl Iterator<Item = (&'static str, &'static str, &'static str, &'static str)> {
    PRODUCTS
        .iter()
        .filter(|p| p.3 == ProductKind::ServerSubscription)
        .flat_map(|p| {
            VERSIONS.iter().flat_map(move |v| {
                LANGUAGES
                    .iter()
                    .flat_map(move |l| FILE_TYPES.iter().map(move |(f, _)| (p.0, *v, *l, *f)))
            })
        })
}

/// The SKU id of a product and term.
pub fn sku_id(product_id: &str, term: Term) -> String {
    format!("{product_id}-{}", term.as_db().to_ascii_lowercase())
}

/// The SKU title of a product and term.
fn sku_title(product_title: &str, term: Term) -> String {
    let term = match term {
        Term::OneYear => "1 year",
        Term::ThreeYears => "3 years",
    };
    format!("{product_title}, {term}")
}

/// The price in `market` of a SKU listed at `usd_cents`, rounded to the
/// nearest minor unit.
pub fn local_price(usd_cents: i64, rate_per_10k: i64) -> i64 {
    (usd_cents * rate_per_10k + 5_000) / 10_000
}

/// Inserts the demo catalog where it is missing, in one transaction.
pub async fn seed_demo_catalog(db: &Db) -> anyhow::Result<()> {
    on_db!(db, pool => {
        let mut tx = pool.begin().await?;
        for &(code, name, currency, digits, tax, reservations, _) in MARKETS {
            sqlx::query(
                "INSERT INTO markets (code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO NOTHING",
            )
            .bind(code)
            .bind(name)
            .bind(currency)
            .bind(digits as i32)
            .bind(tax)
            .bind(reservations)
            .execute(&mut *tx)
            .await?;
        }
        for &(id, title, description, kind) in PRODUCTS {
            sqlx::query(
                "INSERT INTO products (id, title, description, kind, cancellation_window_days) \
                 VALUES ($1, $2, $3, $4, 60) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(title)
            .bind(description)
            .bind(kind.as_db())
            .execute(&mut *tx)
            .await?;
            if kind == ProductKind::ServerSubscription {
                let options = VERSIONS
                    .iter()
                    .map(|v| (OptionKind::Version, *v, *v))
                    .chain(LANGUAGES.iter().map(|l| (OptionKind::Language, *l, *l)))
                    .chain(FILE_TYPES.iter().map(|(id, name)| (OptionKind::FileType, *id, *name)));
                for (position, (option_kind, value, display)) in options.enumerate() {
                    sqlx::query(
                        "INSERT INTO download_options (product_id, kind, value, display_name, position) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (product_id, kind, value) DO NOTHING",
                    )
                    .bind(id)
                    .bind(option_kind.as_db())
                    .bind(value)
                    .bind(display)
                    .bind(position as i32)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        for &(product_id, term, usd_cents) in SKUS {
            let product_title = PRODUCTS
                .iter()
                .find(|p| p.0 == product_id)
                .map(|p| p.1)
                .unwrap_or(product_id);
            let id = sku_id(product_id, term);
            sqlx::query("INSERT INTO skus (id, product_id, title, term) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
                .bind(&id)
                .bind(product_id)
                .bind(sku_title(product_title, term))
                .bind(term.as_db())
                .execute(&mut *tx)
                .await?;
            for &(market, .., rate) in MARKETS {
                sqlx::query("INSERT INTO prices (sku_id, market, amount_minor) VALUES ($1, $2, $3) ON CONFLICT (sku_id, market) DO NOTHING")
                    .bind(&id)
                    .bind(market)
                    .bind(local_price(usd_cents, rate))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for &(market, .., rate) in MARKETS {
            sqlx::query(
                "INSERT INTO compute_rates (market, windows_rate_micro_minor, base_rate_micro_minor) \
                 VALUES ($1, $2, $3) ON CONFLICT (market) DO NOTHING",
            )
            .bind(market)
            .bind(local_price(WINDOWS_RATE_USD_MICRO_CENTS, rate))
            .bind(local_price(BASE_RATE_USD_MICRO_CENTS, rate))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleven_markets_without_reservations_are_seeded_as_such() {
        let mut unavailable: Vec<&str> = MARKETS.iter().filter(|m| !m.5).map(|m| m.0).collect();
        unavailable.sort_unstable();
        assert_eq!(
            unavailable,
            [
                "AR", "BR", "CN", "ID", "LI", "MX", "MY", "RU", "SA", "TR", "ZA"
            ]
        );
    }

    #[test]
    fn only_australia_and_brazil_include_tax() {
        let taxed: Vec<&str> = MARKETS.iter().filter(|m| m.4).map(|m| m.0).collect();
        assert_eq!(taxed, ["AU", "BR"]);
    }

    #[test]
    fn local_prices_round_to_the_nearest_minor_unit() {
        assert_eq!(local_price(40_000, 10_000), 40_000);
        assert_eq!(local_price(40_000, 15_000), 60_000);
        assert_eq!(local_price(1, 15_000), 2);
        assert_eq!(local_price(1, 14_999), 1);
    }
}
