//! The catalog's use cases: each read as one flow over the in-memory
//! snapshot of the catalog and the domain's rules (where reservations are
//! offered, what has a price, the Azure Hybrid Benefit arithmetic). Handlers
//! call exactly one of these.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use csp_kit::clock::{Clock, Micros};
use csp_kit::error::FieldViolation;
use csp_kit::market::MarketCode;
use csp_kit::shutdown::Shutdown;
use csp_kit::{ApiError, ApiResult, paging};
use serde::{Deserialize, Serialize};

use crate::changes::Changes;
use crate::domain::{self, Market, Product, ProductKind, Sku};
use crate::hybrid::{self, Estimate, Rates, Situation};
use crate::price_list::{self, KnownPolicy, LineError};
use crate::snapshot::Snapshot;
use crate::storage::{CatalogStore, ImportMeta, ImportOutcome, PriceListRecord};

/// The largest price-list file an import takes.
pub const MAX_IMPORT_BYTES: usize = 64 << 20;
/// The most line errors an INVALID_ARGUMENT names (a last violation counts
/// them all): the status travels in trailers, which clients cap at a few
/// KiB. `csp catalog import` checks the file itself first and prints every
/// error.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// How often a replica asks whether the catalog changed (one single-row
/// read), so any change reaches every replica's snapshot within this time.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where the next page of ListProducts starts, and the query it belongs to.
#[derive(Serialize, Deserialize)]
struct ProductCursor {
    after: String,
    market: String,
    kind: i32,
    #[serde(default)]
    as_of: Option<Micros>,
}

/// Where the next page of ListPriceLists starts.
#[derive(Serialize, Deserialize)]
struct PriceListCursor {
    before: i64,
}

/// An import to run.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    /// The file.
    pub content: Vec<u8>,
    /// Its name.
    pub file_name: String,
    /// Who runs it.
    pub imported_by: String,
    /// Only report what it would change.
    pub dry_run: bool,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// The version the catalog holds afterwards (`None` for a dry run).
    pub price_list: Option<PriceListRecord>,
    /// Whether the catalog changed.
    pub changed: bool,
    /// What the list changes (would change, for a dry run).
    pub changes: Changes,
    /// One sentence for a person.
    pub summary: String,
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
    /// When its policy caps refunds in another currency than the market's:
    /// its unit price in that currency and the currency's digits.
    pub cap_unit_price: Option<(String, i64, u32)>,
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
    clock: Arc<dyn Clock>,
}

impl Catalog {
    /// Over `store`, with its catalog loaded; prices are those in effect
    /// at `clock`'s time.
    pub async fn load(store: CatalogStore, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let catalog = Self {
            store,
            snapshot: Arc::default(),
            version: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            clock,
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
        let fresh = Arc::new(Snapshot::new(self.store.load().await?, self.clock.now()));
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

    /// The snapshot reads are served from, priced now: when the clock has
    /// passed a price period's start or end, the snapshot is re-priced (in
    /// memory) first.
    fn now(&self) -> Arc<Snapshot> {
        let now = self.clock.now();
        let current = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if current.prices_hold_at(now) {
            return current;
        }
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slot.prices_hold_at(now) {
            *slot = Arc::new(slot.at(now));
        }
        slot.clone()
    }

    /// Makes a price list the catalog (or, for a dry run, reports what it
    /// would change): checked completely first, then applied in one
    /// transaction, then served at once by this replica (others within
    /// [`REFRESH`]).
    pub async fn import(&self, request: ImportRequest) -> ApiResult<ImportReport> {
        let mut violations = csp_kit::error::Violations::new();
        if request.content.is_empty() {
            violations.push("content", "required: the price-list file's bytes");
        } else if request.content.len() > MAX_IMPORT_BYTES {
            violations.push(
                "content",
                format!(
                    "{} bytes; a price list is at most {MAX_IMPORT_BYTES} bytes: split it",
                    request.content.len()
                ),
            );
        }
        let file_name = bounded(&mut violations, "file_name", &request.file_name, false);
        let imported_by = bounded(&mut violations, "imported_by", &request.imported_by, true);
        let (Some(file_name), Some(imported_by)) = (file_name, imported_by) else {
            return Err(violations.into_error());
        };
        let file_name = if file_name.is_empty() {
            "price-list.csv".to_owned()
        } else {
            file_name
        };
        if request.content.is_empty() || request.content.len() > MAX_IMPORT_BYTES {
            return Err(violations.into_error());
        }
        let policies = known_policies(&self.store.policies().await.map_err(ApiError::from)?);
        let content = Arc::new(request.content);
        let parsed = {
            let content = content.clone();
            tokio::task::spawn_blocking(move || price_list::parse(&content, &policies))
                .await
                .map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("the price-list check failed: {e}"))
                })?
        };
        let data = parsed.map_err(|errors| line_errors(&errors))?;
        let meta = ImportMeta {
            checksum: csp_kit::sha256_hex(&content),
            file_name,
            imported_by,
            line_count: line_count(&content),
            at: self.clock.now(),
            dry_run: request.dry_run,
        };
        let outcome = self.store.import(&data, &meta).await?;
        let report = match outcome {
            ImportOutcome::Imported(record) => {
                if let Err(error) = self.reload().await {
                    tracing::warn!(%error, "imported, but cannot reload the catalog yet; the next refresh will");
                }
                tracing::info!(
                    version = record.version,
                    imported_by = %record.imported_by,
                    changes = %record.changes.summary(),
                    "price list imported"
                );
                ImportReport {
                    summary: format!(
                        "imported as price list version {}: {}",
                        record.version,
                        record.changes.summary()
                    ),
                    changes: record.changes.clone(),
                    price_list: Some(record),
                    changed: true,
                }
            }
            ImportOutcome::Planned(changes) => ImportReport {
                summary: format!("dry run, nothing written: {}", changes.summary()),
                changes,
                price_list: None,
                changed: false,
            },
            ImportOutcome::Unchanged { current, same_file } => ImportReport {
                summary: if same_file {
                    format!(
                        "unchanged: this file is price list version {} (imported {} by {}); nothing was written",
                        current.version,
                        csp_kit::clock::to_rfc3339(current.imported_at),
                        current.imported_by
                    )
                } else {
                    format!(
                        "unchanged: the list says what price list version {} says; nothing was written",
                        current.version
                    )
                },
                price_list: Some(current),
                changed: false,
                changes: Changes::default(),
            },
        };
        Ok(report)
    }

    /// Whether any price list was ever imported.
    pub async fn ever_imported(&self) -> anyhow::Result<bool> {
        Ok(!self.store.price_lists(0, 1).await?.is_empty())
    }

    /// A page of imported price lists, newest first.
    pub async fn price_lists(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<PriceListRecord>, String)> {
        let page_size =
            paging::page_size(page_size, paging::DEFAULT_PAGE_SIZE, paging::MAX_PAGE_SIZE)?;
        let before = paging::decode::<PriceListCursor>(page_token)?.map_or(0, |c| c.before);
        let mut lists = self.store.price_lists(before, page_size + 1).await?;
        let next = paging::finish_page(&mut lists, page_size, |last| PriceListCursor {
            before: last.version,
        });
        Ok((lists, next))
    }

    /// One imported price list.
    pub async fn price_list(&self, version: i64) -> ApiResult<PriceListRecord> {
        if version < 1 {
            return Err(ApiError::invalid("version", "required: a version from 1"));
        }
        self.store
            .price_list(version)
            .await?
            .ok_or_else(|| ApiError::not_found("price list", version.to_string()))
    }

    /// The markets (and their currencies) of the catalog, for rendering
    /// changes.
    pub fn market_of(&self, code: &str) -> Option<Market> {
        self.now().market(code).cloned()
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
        as_of: Option<Micros>,
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
            Some(cursor)
                if cursor.market == market.code
                    && cursor.kind == kind_filter
                    && cursor.as_of == as_of =>
            {
                cursor.after
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "page_token",
                    "this page token belongs to a query with another market, kind or as_of; start again from an empty page_token",
                ));
            }
        };
        let include_reservations = domain::is_offered(&market, ProductKind::AzureReservation);
        let at_other_time;
        let in_market = match as_of {
            Some(at) if !snapshot.prices_hold_at(at) => {
                at_other_time = snapshot.products_at(&market.code, at);
                at_other_time.as_slice()
            }
            _ => snapshot.products(Some(&market.code)),
        };
        let mut products: Vec<Product> = in_market
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
            as_of,
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

    /// A SKU's price in a market now (or at `as_of`): the SKU's product
    /// must be offered there, and the SKU priced then.
    pub async fn sku_price(
        &self,
        sku_id: &str,
        market: &Market,
        as_of: Option<Micros>,
    ) -> ApiResult<Priced> {
        let snapshot = self.now();
        match as_of {
            Some(at) if !snapshot.prices_hold_at(at) => {
                sku_price_in(&snapshot.at(at), sku_id, market)
            }
            _ => sku_price_in(&snapshot, sku_id, market),
        }
    }

    /// Prices SKUs for an order in one market, each distinct SKU once, in
    /// the order first named, all from one snapshot (one price list, whose
    /// version is returned), at the prices in effect now.
    pub async fn quote(
        &self,
        market: &str,
        sku_ids: &[String],
    ) -> ApiResult<(Market, Vec<Priced>, i64)> {
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
        Ok((market, quotes, snapshot.price_list_version()))
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
    let cap_unit_price = product
        .cancellation_policy
        .as_ref()
        .and_then(|p| p.cap.as_ref())
        .filter(|cap| cap.currency != market.currency_code)
        .and_then(|cap| {
            snapshot
                .sku_price_in_currency(sku_id, &cap.currency)
                .map(|(price, digits)| (cap.currency.clone(), price, digits))
        });
    Ok(Priced {
        product,
        sku,
        cap_unit_price,
    })
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

/// The latest version of each policy, as a price list may name them.
fn known_policies(policies: &[domain::CancellationPolicy]) -> Vec<KnownPolicy> {
    let mut known: Vec<KnownPolicy> = Vec::new();
    for policy in policies {
        let entry = KnownPolicy {
            id: policy.id.clone(),
            window_days: policy.window_days(),
            cap_currency: policy.cap.as_ref().map(|cap| cap.currency.clone()),
        };
        match known.iter_mut().find(|k| k.id == policy.id) {
            Some(k) => *k = entry, // policies come by id, then version
            None => known.push(entry),
        }
    }
    known
}

/// INVALID_ARGUMENT for a price list's errors: each a field violation named
/// by line and column, at most [`MAX_REPORTED_ERRORS`].
fn line_errors(errors: &[LineError]) -> ApiError {
    let mut violations: Vec<FieldViolation> = errors
        .iter()
        .take(MAX_REPORTED_ERRORS)
        .map(|e| FieldViolation::new(e.location(), e.message.clone()))
        .collect();
    if errors.len() > MAX_REPORTED_ERRORS {
        violations.push(FieldViolation::new(
            "file",
            format!(
                "{} errors in all; nothing was imported; `csp catalog import --dry-run FILE` lists every one",
                errors.len()
            ),
        ));
    }
    ApiError::InvalidArgument(violations)
}

/// Lines in a file (a last line without a line break counts).
fn line_count(content: &[u8]) -> i64 {
    let breaks = content.iter().filter(|&&b| b == b'\n').count();
    let last = usize::from(!content.is_empty() && !content.ends_with(b"\n"));
    (breaks + last) as i64
}

/// A text field of at most 200 characters, trimmed; `required` when it may
/// not be empty.
fn bounded(
    violations: &mut csp_kit::error::Violations,
    field: &str,
    value: &str,
    required: bool,
) -> Option<String> {
    let value = value.trim();
    if required && value.is_empty() {
        violations.push(field, "required");
        return None;
    }
    if value.chars().count() > 200 || value.chars().any(char::is_control) {
        violations.push(field, "at most 200 characters, no control characters");
        return None;
    }
    Some(value.to_owned())
}

/// A required text field, trimmed.
pub fn required<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    Ok(value)
}
