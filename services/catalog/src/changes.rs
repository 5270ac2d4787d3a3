//! What an import changes in the catalog: markets, products and SKUs added,
//! removed or changed, and prices per market. Computed before anything is
//! written, and kept with the price list's version for `csp catalog
//! history`.

use std::collections::{BTreeMap, BTreeSet};

use csp_kit::clock::Micros;
use serde::{Deserialize, Serialize};

use crate::domain::{CatalogData, Market, Product, Sku};

/// The differences between two catalogs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Market codes new in the list.
    pub markets_added: Vec<String>,
    /// Market codes no longer in it.
    pub markets_removed: Vec<String>,
    /// Markets whose name, currency, tax flag or kinds offered changed.
    pub markets_changed: Vec<String>,
    /// Product ids new in the list.
    pub products_added: Vec<String>,
    /// Product ids no longer in it.
    pub products_removed: Vec<String>,
    /// Products whose title, description, kind, publisher, download options
    /// or cancellation policy changed.
    pub products_changed: Vec<String>,
    /// SKU ids new in the list.
    pub skus_added: Vec<String>,
    /// SKU ids no longer in it.
    pub skus_removed: Vec<String>,
    /// SKUs whose title, term, billing plan or product changed.
    pub skus_changed: Vec<String>,
    /// Prices of SKUs in both lists that changed, appeared or went.
    pub price_changes: Vec<PriceChange>,
}

/// One price period of a SKU in a market that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChange {
    /// The SKU.
    pub sku_id: String,
    /// The market.
    pub market: String,
    /// The market's currency (in the new list; the old one when removed).
    pub currency: String,
    /// Its minor unit digits.
    pub minor_unit_digits: u32,
    /// The period's first instant.
    pub effective_from: Micros,
    /// The first instant after it (in the new list; the old one when
    /// removed).
    pub effective_until: Option<Micros>,
    /// The price before (`None`: a new period).
    pub before: Option<i64>,
    /// The price after (`None`: a period removed).
    pub after: Option<i64>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self == &Changes::default()
    }

    /// One line for a person: `2 SKUs added, 1 SKU removed, 40 prices
    /// changed`.
    pub fn summary(&self) -> String {
        let counts = [
            (self.markets_added.len(), "market", "added"),
            (self.markets_removed.len(), "market", "removed"),
            (self.markets_changed.len(), "market", "changed"),
            (self.products_added.len(), "product", "added"),
            (self.products_removed.len(), "product", "removed"),
            (self.products_changed.len(), "product", "changed"),
            (self.skus_added.len(), "SKU", "added"),
            (self.skus_removed.len(), "SKU", "removed"),
            (self.skus_changed.len(), "SKU", "changed"),
            (self.price_changes.len(), "price", "changed"),
        ];
        let parts: Vec<String> = counts
            .iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, what, verb)| {
                let s = if *n == 1 { "" } else { "s" };
                format!("{n} {what}{s} {verb}")
            })
            .collect();
        if parts.is_empty() {
            "no changes".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// What changes from `before` to `after`.
pub fn diff(before: &CatalogData, after: &CatalogData) -> Changes {
    let mut changes = Changes::default();
    compare(
        &by_key(&before.markets, |m: &Market| m.code.clone()),
        &by_key(&after.markets, |m: &Market| m.code.clone()),
        |a, b| a == b,
        (
            &mut changes.markets_added,
            &mut changes.markets_removed,
            &mut changes.markets_changed,
        ),
    );
    compare(
        &by_key(&before.products, |p: &Product| p.id.clone()),
        &by_key(&after.products, |p: &Product| p.id.clone()),
        |a, b| {
            (
                &a.title,
                &a.description,
                a.kind,
                &a.publisher,
                &a.cancellation_policy_id,
                a.cancellation_window_days,
                &a.download_options,
            ) == (
                &b.title,
                &b.description,
                b.kind,
                &b.publisher,
                &b.cancellation_policy_id,
                b.cancellation_window_days,
                &b.download_options,
            )
        },
        (
            &mut changes.products_added,
            &mut changes.products_removed,
            &mut changes.products_changed,
        ),
    );
    let skus = |data: &CatalogData| -> BTreeMap<String, Sku> {
        data.products
            .iter()
            .flat_map(|p| p.skus.iter().map(|s| (s.id.clone(), s.clone())))
            .collect()
    };
    compare(
        &skus(before),
        &skus(after),
        |a, b| a == b,
        (
            &mut changes.skus_added,
            &mut changes.skus_removed,
            &mut changes.skus_changed,
        ),
    );
    let fresh: BTreeSet<&String> = changes
        .skus_added
        .iter()
        .chain(&changes.skus_removed)
        .collect();
    let currency = |data: &CatalogData, code: &str| {
        data.markets
            .binary_search_by(|m| m.code.as_str().cmp(code))
            .ok()
            .map(|i| {
                let m = &data.markets[i];
                (m.currency_code.clone(), m.minor_unit_digits)
            })
            .unwrap_or_default()
    };
    let (old, new) = (periods(before, &fresh), periods(after, &fresh));
    let keys: BTreeSet<&(String, String, Micros)> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (was, is) = (old.get(key), new.get(key));
        if let (Some(was), Some(is)) = (was, is)
            && (was.amount_minor, was.until) == (is.amount_minor, is.until)
            && currency(before, &key.1) == currency(after, &key.1)
        {
            continue;
        }
        let (currency, minor_unit_digits) = match is {
            Some(_) => currency(after, &key.1),
            None => currency(before, &key.1),
        };
        changes.price_changes.push(PriceChange {
            sku_id: key.0.clone(),
            market: key.1.clone(),
            currency,
            minor_unit_digits,
            effective_from: key.2,
            effective_until: is.or(was).and_then(|p| p.until),
            before: was.map(|p| p.amount_minor),
            after: is.map(|p| p.amount_minor),
        });
    }
    changes
}

/// Price periods by (SKU, market, start), leaving out the SKUs in `skip`.
fn periods<'a>(
    data: &'a CatalogData,
    skip: &BTreeSet<&String>,
) -> BTreeMap<(String, String, Micros), &'a crate::domain::PricePeriod> {
    data.prices
        .iter()
        .filter(|p| !skip.contains(&p.sku_id))
        .map(|p| ((p.sku_id.clone(), p.market.clone(), p.from), p))
        .collect()
}

fn by_key<T: Clone>(items: &[T], key: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    items.iter().map(|i| (key(i), i.clone())).collect()
}

fn compare<T>(
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    same: impl Fn(&T, &T) -> bool,
    (added, removed, changed): (&mut Vec<String>, &mut Vec<String>, &mut Vec<String>),
) {
    for (key, new) in after {
        match before.get(key) {
            None => added.push(key.clone()),
            Some(old) if !same(old, new) => changed.push(key.clone()),
            Some(_) => {}
        }
    }
    removed.extend(before.keys().filter(|k| !after.contains_key(*k)).cloned());
}
