//! Price-list files: the CSV shape an operator imports (modelled on Partner
//! Center's price lists), read and checked completely without I/O. Every
//! error names its line and column; a file with any error yields nothing.
//!
//! One line prices one SKU in one market over one period. The first line
//! names the columns (any order, each once, no others):
//!
//! | column | what it holds |
//! |---|---|
//! | `ProductId` | product id: letters, digits, `.`, `_`, `-`; at most 64 |
//! | `ProductTitle` | display title, at most 200 characters |
//! | `ProductDescription` | one paragraph, at most 2000 characters (may be empty) |
//! | `ProductKind` | `server_subscription` or `azure_reservation` |
//! | `Publisher` | for example `Microsoft Corporation` |
//! | `SkuId` | SKU id, unique in the whole list; same characters as ids |
//! | `SkuTitle` | display title |
//! | `TermDuration` | `P1Y` or `P3Y` |
//! | `BillingPlan` | `Annual` (P1Y), `Triennial` (P3Y) or `OneTime`: the unit price is charged once, at purchase, for the whole term |
//! | `Market` | ISO 3166-1 alpha-2 code, for example `US` |
//! | `MarketName` | the market's English name |
//! | `Currency` | ISO 4217 code of the market's prices, for example `USD` |
//! | `UnitPrice` | decimal with at most the currency's minor digits, for example `400.00` (`JPY`: `60000`) |
//! | `TaxIncluded` | `true` where prices include tax (AU, BR), else `false` |
//! | `EffectiveStartDate` | first day (UTC) the price applies, `YYYY-MM-DD` |
//! | `EffectiveEndDate` | last day (UTC) it applies, inclusive; empty for no end |
//! | `DownloadOptions` | server subscriptions: `versions=2019\|2022;languages=en-US\|de-DE;file_types=iso-x64:ISO 64-bit`; empty for reservations |
//! | `CancellationPolicyId` | a cancellation policy the catalog knows, for example `csp-2019-60-days` |
//!
//! Lines of one product must agree on its columns, lines of one SKU on its
//! columns and lines of one market on its name, currency and tax flag. The
//! periods of one SKU in one market must not overlap. Which product kinds a
//! market sells is what the list prices there: a market without any Azure
//! reservation line does not offer reservations.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use csp_kit::clock::{self, DAY, Micros};

use crate::domain::{
    BillingPlan, CatalogData, DownloadOptions, FileType, Market, PricePeriod, Product, ProductKind,
    Sku, Term,
};

/// The columns, in the order the documentation and the demo list use.
pub const COLUMNS: [&str; 18] = [
    "ProductId",
    "ProductTitle",
    "ProductDescription",
    "ProductKind",
    "Publisher",
    "SkuId",
    "SkuTitle",
    "TermDuration",
    "BillingPlan",
    "Market",
    "MarketName",
    "Currency",
    "UnitPrice",
    "TaxIncluded",
    "EffectiveStartDate",
    "EffectiveEndDate",
    "DownloadOptions",
    "CancellationPolicyId",
];

/// The longest id (product, SKU, download option).
const MAX_ID: usize = 64;
/// The longest title or name.
const MAX_TITLE: usize = 200;
/// The longest description.
const MAX_DESCRIPTION: usize = 2000;
/// The most lines a list may have.
pub const MAX_LINES: usize = 1_000_000;

/// What is wrong with a price list, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// The 1-based line (the header is line 1; 0: the file as a whole).
    pub line: u64,
    /// The column, when one is at fault.
    pub column: Option<&'static str>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl LineError {
    /// Where, as a field path: `line 12, column UnitPrice`.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (0, _) => "file".to_owned(),
            (line, Some(column)) => format!("line {line}, column {column}"),
            (line, None) => format!("line {line}"),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// A cancellation policy a list may name: its id and window in whole days.
#[derive(Clone, Debug)]
pub struct KnownPolicy {
    /// Id.
    pub id: String,
    /// The window in days, rounded up.
    pub window_days: u32,
    /// The currency its refund cap counts in, if it has one.
    pub cap_currency: Option<String>,
}

/// Reads and checks a whole price list. `policies` are the cancellation
/// policies lines may name.
pub fn parse(bytes: &[u8], policies: &[KnownPolicy]) -> Result<CatalogData, Vec<LineError>> {
    parse_with(bytes, Some(policies))
}

/// Checks everything but the cancellation policy ids (which only the
/// catalog knows): what `csp catalog import` checks before sending a file.
/// Returns the lines read.
pub fn check(bytes: &[u8]) -> Result<usize, Vec<LineError>> {
    parse_with(bytes, None).map(|data| data.prices.len())
}

fn parse_with(
    bytes: &[u8],
    policies: Option<&[KnownPolicy]>,
) -> Result<CatalogData, Vec<LineError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut errors = Vec::new();
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            return Err(vec![file_error(
                "the file is empty: its first line names the columns",
            )]);
        }
        Some(Err(error)) => return Err(vec![csv_error(&error)]),
        Some(Ok(header)) => header,
    };
    let columns = read_header(&header)?;
    let mut builder = Builder::new(policies);
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                errors.push(csv_error(&error));
                if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) {
                    continue;
                }
                break;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(<[u8]>::is_empty) {
            continue; // a blank line
        }
        if builder.lines >= MAX_LINES {
            errors.push(file_error(format!(
                "more than {MAX_LINES} lines: split the list"
            )));
            break;
        }
        if record.len() != COLUMNS.len() {
            errors.push(LineError {
                line,
                column: None,
                message: format!(
                    "{} fields where the header names {}",
                    record.len(),
                    COLUMNS.len()
                ),
            });
            continue;
        }
        let mut fields: [&str; COLUMNS.len()] = [""; COLUMNS.len()];
        let mut utf8 = true;
        for (i, &at) in columns.iter().enumerate() {
            match std::str::from_utf8(&record[at]) {
                Ok(text) => fields[i] = text,
                Err(_) => {
                    errors.push(LineError {
                        line,
                        column: Some(COLUMNS[i]),
                        message: "not UTF-8 text: save the file as UTF-8".to_owned(),
                    });
                    utf8 = false;
                }
            }
        }
        if utf8 {
            builder.line(line, &fields, &mut errors);
        }
    }
    if builder.lines == 0 && errors.is_empty() {
        errors.push(file_error(
            "no prices: a price list has at least one line after the header",
        ));
    }
    let data = builder.finish(&mut errors);
    if errors.is_empty() {
        Ok(data)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

fn file_error(message: impl Into<String>) -> LineError {
    LineError {
        line: 0,
        column: None,
        message: message.into(),
    }
}

fn csv_error(error: &csv::Error) -> LineError {
    let line = error.position().map_or(0, csv::Position::line);
    let message = match error.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text: save the file as UTF-8".to_owned(),
        _ => format!("not readable as CSV: {error}"),
    };
    LineError {
        line,
        column: None,
        message,
    }
}

/// Where each column is in the file's records (by [`COLUMNS`] order).
fn read_header(header: &csv::ByteRecord) -> Result<[usize; COLUMNS.len()], Vec<LineError>> {
    let mut at: [Option<usize>; COLUMNS.len()] = [None; COLUMNS.len()];
    let mut errors = Vec::new();
    let error = |message: String| LineError {
        line: 1,
        column: None,
        message,
    };
    for (i, name) in header.iter().enumerate() {
        let name = String::from_utf8_lossy(name);
        let name = name.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(c) if at[c].is_some() => {
                errors.push(error(format!("column {} is named twice", COLUMNS[c])));
            }
            Some(c) => at[c] = Some(i),
            None => errors.push(error(format!(
                "unknown column {}; the columns are {}",
                csp_kit::error::quoted(name),
                COLUMNS.join(", ")
            ))),
        }
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .zip(at)
        .filter(|(_, at)| at.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        errors.push(error(format!("missing columns: {}", missing.join(", "))));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(at.map(|at| at.unwrap_or_default()))
}

/// Column indexes into a line's fields.
mod col {
    pub const PRODUCT_ID: usize = 0;
    pub const PRODUCT_TITLE: usize = 1;
    pub const PRODUCT_DESCRIPTION: usize = 2;
    pub const PRODUCT_KIND: usize = 3;
    pub const PUBLISHER: usize = 4;
    pub const SKU_ID: usize = 5;
    pub const SKU_TITLE: usize = 6;
    pub const TERM: usize = 7;
    pub const BILLING_PLAN: usize = 8;
    pub const MARKET: usize = 9;
    pub const MARKET_NAME: usize = 10;
    pub const CURRENCY: usize = 11;
    pub const UNIT_PRICE: usize = 12;
    pub const TAX_INCLUDED: usize = 13;
    pub const START: usize = 14;
    pub const END: usize = 15;
    pub const DOWNLOAD_OPTIONS: usize = 16;
    pub const POLICY: usize = 17;
}

/// What the lines said so far, with the line each thing was first said on.
struct Builder<'p> {
    /// `None`: any policy id is taken (with a 0-day window).
    policies: Option<&'p [KnownPolicy]>,
    lines: usize,
    markets: BTreeMap<String, (u64, Market)>,
    products: BTreeMap<String, (u64, Product)>,
    skus: BTreeMap<String, (u64, Sku)>,
    /// (SKU, market) -> (line, period).
    prices: BTreeMap<(String, String), Vec<(u64, PricePeriod)>>,
}

/// One line's errors, by column.
struct LineErrors<'a> {
    line: u64,
    errors: &'a mut Vec<LineError>,
    count: usize,
}

impl LineErrors<'_> {
    fn push(&mut self, column: usize, message: impl Into<String>) {
        self.count += 1;
        self.errors.push(LineError {
            line: self.line,
            column: Some(COLUMNS[column]),
            message: message.into(),
        });
    }

    /// The value of a check, or its error recorded against `column`.
    fn check<T>(&mut self, column: usize, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.push(column, message);
                None
            }
        }
    }
}

impl<'p> Builder<'p> {
    fn new(policies: Option<&'p [KnownPolicy]>) -> Self {
        Self {
            policies,
            lines: 0,
            markets: BTreeMap::new(),
            products: BTreeMap::new(),
            skus: BTreeMap::new(),
            prices: BTreeMap::new(),
        }
    }

    fn line(&mut self, line: u64, f: &[&str; COLUMNS.len()], errors: &mut Vec<LineError>) {
        self.lines += 1;
        let mut e = LineErrors {
            line,
            errors,
            count: 0,
        };
        let product_id = e.check(col::PRODUCT_ID, id(f[col::PRODUCT_ID]));
        let product_title = e.check(col::PRODUCT_TITLE, text(f[col::PRODUCT_TITLE], MAX_TITLE));
        let description = e.check(
            col::PRODUCT_DESCRIPTION,
            optional_text(f[col::PRODUCT_DESCRIPTION], MAX_DESCRIPTION),
        );
        let kind = e.check(col::PRODUCT_KIND, product_kind(f[col::PRODUCT_KIND]));
        let publisher = e.check(col::PUBLISHER, text(f[col::PUBLISHER], MAX_TITLE));
        let sku_id = e.check(col::SKU_ID, id(f[col::SKU_ID]));
        let sku_title = e.check(col::SKU_TITLE, text(f[col::SKU_TITLE], MAX_TITLE));
        let term = e.check(col::TERM, term(f[col::TERM]));
        let plan = e.check(col::BILLING_PLAN, billing_plan(f[col::BILLING_PLAN], term));
        let market = e.check(col::MARKET, market_code(f[col::MARKET]));
        let market_name = e.check(col::MARKET_NAME, text(f[col::MARKET_NAME], MAX_TITLE));
        let currency = e.check(col::CURRENCY, currency(f[col::CURRENCY]));
        let digits = currency.as_deref().map(minor_unit_digits);
        let amount = digits.and_then(|digits| {
            e.check(
                col::UNIT_PRICE,
                unit_price(
                    f[col::UNIT_PRICE],
                    digits,
                    currency.as_deref().unwrap_or(""),
                ),
            )
        });
        let tax = e.check(col::TAX_INCLUDED, boolean(f[col::TAX_INCLUDED]));
        let from = e.check(col::START, date(f[col::START]));
        let until = e.check(col::END, end_date(f[col::END]));
        if let (Some(from), Some(Some(until))) = (from, until)
            && until <= from
        {
            e.push(
                col::END,
                format!(
                    "ends before it starts ({} is before {})",
                    f[col::END],
                    f[col::START]
                ),
            );
        }
        let options = kind.and_then(|kind| {
            e.check(
                col::DOWNLOAD_OPTIONS,
                download_options(f[col::DOWNLOAD_OPTIONS], kind),
            )
        });
        let policy = e.check(col::POLICY, self.policy(f[col::POLICY]));
        if e.count > 0 {
            return;
        }
        let (
            Some(product_id),
            Some(product_title),
            Some(description),
            Some(kind),
            Some(publisher),
            Some(sku_id),
            Some(sku_title),
            Some(term),
            Some(plan),
            Some(market),
            Some(market_name),
            Some(currency),
            Some(digits),
            Some(amount),
            Some(tax),
            Some(from),
            Some(until),
            Some(options),
            Some(policy),
        ) = (
            product_id,
            product_title,
            description,
            kind,
            publisher,
            sku_id,
            sku_title,
            term,
            plan,
            market,
            market_name,
            currency,
            digits,
            amount,
            tax,
            from,
            until,
            options,
            policy,
        )
        else {
            return;
        };

        let product = Product {
            id: product_id.to_owned(),
            title: product_title.to_owned(),
            description: description.to_owned(),
            kind,
            publisher: publisher.to_owned(),
            cancellation_policy_id: policy.id.clone(),
            cancellation_policy: None,
            cancellation_window_days: policy.window_days,
            skus: Vec::new(),
            download_options: options,
        };
        agree(
            &mut self.products,
            &mut e,
            &product.id.clone(),
            "product",
            product,
            &[
                (col::PRODUCT_TITLE, |p: &Product| p.title.clone()),
                (col::PRODUCT_DESCRIPTION, |p| p.description.clone()),
                (col::PRODUCT_KIND, |p| p.kind.as_db().to_owned()),
                (col::PUBLISHER, |p| p.publisher.clone()),
                (col::DOWNLOAD_OPTIONS, |p| {
                    format!("{:?}", p.download_options)
                }),
                (col::POLICY, |p| p.cancellation_policy_id.clone()),
            ],
        );
        let sku = Sku {
            id: sku_id.to_owned(),
            product_id: product_id.to_owned(),
            title: sku_title.to_owned(),
            term,
            billing_plan: plan,
            price_minor: None,
        };
        agree(
            &mut self.skus,
            &mut e,
            &sku.id.clone(),
            "SKU",
            sku,
            &[
                (col::PRODUCT_ID, |s: &Sku| s.product_id.clone()),
                (col::SKU_TITLE, |s| s.title.clone()),
                (col::TERM, |s| s.term.as_db().to_owned()),
                (col::BILLING_PLAN, |s| s.billing_plan.as_db().to_owned()),
            ],
        );
        let market_row = Market {
            code: market.clone(),
            display_name: market_name.to_owned(),
            currency_code: currency.clone(),
            minor_unit_digits: digits,
            tax_included: tax,
            azure_reservations_available: false,
        };
        agree(
            &mut self.markets,
            &mut e,
            &market,
            "market",
            market_row,
            &[
                (col::MARKET_NAME, |m: &Market| m.display_name.clone()),
                (col::CURRENCY, |m| m.currency_code.clone()),
                (col::TAX_INCLUDED, |m| m.tax_included.to_string()),
            ],
        );
        let period = PricePeriod {
            sku_id: sku_id.to_owned(),
            market: market.clone(),
            from,
            until,
            amount_minor: amount,
        };
        let periods = self
            .prices
            .entry((sku_id.to_owned(), market.clone()))
            .or_default();
        if let Some((other, _)) = periods.iter().find(|(_, p)| overlap(p, &period)) {
            e.push(
                col::START,
                format!(
                    "the period {} overlaps the price of SKU {sku_id} in market {market} on line {other}: \
                     each SKU has one price per market at a time",
                    describe_period(&period)
                ),
            );
            return;
        }
        periods.push((line, period));
    }

    fn policy(&self, id: &str) -> Result<KnownPolicy, String> {
        if id.is_empty() {
            return Err("required: a cancellation policy id".to_owned());
        }
        let Some(policies) = self.policies else {
            return self::id(id).map(|id| KnownPolicy {
                id: id.to_owned(),
                window_days: 0,
                cap_currency: None,
            });
        };
        policies
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
                format!(
                    "unknown cancellation policy {}; the catalog knows {}",
                    csp_kit::error::quoted(id),
                    known.join(", ")
                )
            })
    }

    fn finish(self, errors: &mut Vec<LineError>) -> CatalogData {
        // A SKU sold under a capped policy needs a price in the cap's
        // currency: its refunds count toward the cap at that price.
        let caps: HashMap<&str, &str> = self
            .policies
            .unwrap_or_default()
            .iter()
            .filter_map(|p| Some((p.id.as_str(), p.cap_currency.as_deref()?)))
            .collect();
        for (line, sku) in self.skus.values() {
            let Some((_, product)) = self.products.get(&sku.product_id) else {
                continue;
            };
            let Some(currency) = caps.get(product.cancellation_policy_id.as_str()) else {
                continue;
            };
            let priced = self.prices.keys().any(|(s, m)| {
                *s == sku.id
                    && self
                        .markets
                        .get(m)
                        .is_some_and(|(_, market)| market.currency_code == *currency)
            });
            if !priced {
                errors.push(LineError {
                    line: *line,
                    column: Some(COLUMNS[col::POLICY]),
                    message: format!(
                        "policy {} caps refunds in {currency}: price SKU {} in at least one {currency} market, \
                         the rate its refunds count toward the cap at",
                        product.cancellation_policy_id, sku.id
                    ),
                });
            }
        }
        let mut products: BTreeMap<String, Product> = self
            .products
            .into_iter()
            .map(|(id, (_, p))| (id, p))
            .collect();
        for (_, (_, sku)) in self.skus {
            if let Some(product) = products.get_mut(&sku.product_id) {
                product.skus.push(sku);
            }
        }
        let kinds: HashMap<&str, ProductKind> = products
            .values()
            .flat_map(|p| p.skus.iter().map(move |s| (s.id.as_str(), p.kind)))
            .collect();
        let mut markets: BTreeMap<String, Market> = self
            .markets
            .into_iter()
            .map(|(code, (_, m))| (code, m))
            .collect();
        let mut prices = Vec::new();
        for ((sku, market), mut periods) in self.prices {
            if kinds.get(sku.as_str()) == Some(&ProductKind::AzureReservation)
                && let Some(market) = markets.get_mut(&market)
            {
                market.azure_reservations_available = true;
            }
            periods.sort_by_key(|(_, p)| p.from);
            prices.extend(periods.into_iter().map(|(_, p)| p));
        }
        if !errors.is_empty() {
            return CatalogData::default();
        }
        CatalogData {
            markets: markets.into_values().collect(),
            products: products.into_values().collect(),
            prices,
        }
    }
}

/// A column of a thing (product, SKU, market) and how to read it from one.
type Column<T> = (usize, fn(&T) -> String);

/// Checks that what a line says about a thing (product, SKU, market) agrees
/// with what its first line said, column by column.
fn agree<T>(
    seen: &mut BTreeMap<String, (u64, T)>,
    e: &mut LineErrors<'_>,
    key: &str,
    what: &str,
    value: T,
    columns: &[Column<T>],
) {
    match seen.get(key) {
        None => {
            seen.insert(key.to_owned(), (e.line, value));
        }
        Some((first, earlier)) => {
            for (column, read) in columns {
                if read(earlier) != read(&value) {
                    e.push(
                        *column,
                        format!(
                            "differs from line {first} for {what} {key}: every line of a {what} must agree on {}",
                            COLUMNS[*column]
                        ),
                    );
                }
            }
        }
    }
}

fn overlap(a: &PricePeriod, b: &PricePeriod) -> bool {
    let a_until = a.until.unwrap_or(Micros::MAX);
    let b_until = b.until.unwrap_or(Micros::MAX);
    a.from < b_until && b.from < a_until
}

/// A period in the file's terms: `2026-12-01 to 2026-12-31`.
pub fn describe_period(period: &PricePeriod) -> String {
    match period.until {
        Some(until) => format!(
            "{} to {}",
            clock::to_date(period.from),
            clock::to_date(until - DAY)
        ),
        None => format!("{} on", clock::to_date(period.from)),
    }
}

fn id(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        return Err("required".to_owned());
    }
    if value.len() > MAX_ID
        || value.starts_with('.')
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{} is not an id: at most {MAX_ID} letters, digits, '.', '_' or '-', not starting with '.'",
            csp_kit::error::quoted(value)
        ));
    }
    Ok(value)
}

fn text(value: &str, max: usize) -> Result<&str, String> {
    if value.is_empty() {
        return Err("required".to_owned());
    }
    optional_text(value, max)
}

fn optional_text(value: &str, max: usize) -> Result<&str, String> {
    if value.chars().count() > max {
        return Err(format!("longer than {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("holds a control character (a line break or tab)".to_owned());
    }
    Ok(value)
}

fn product_kind(value: &str) -> Result<ProductKind, String> {
    value.parse().map_err(|_| {
        format!(
            "{} is not a product kind: server_subscription or azure_reservation",
            csp_kit::error::quoted(value)
        )
    })
}

fn term(value: &str) -> Result<Term, String> {
    value.parse().map_err(|_| {
        format!(
            "{} is not a term: P1Y or P3Y",
            csp_kit::error::quoted(value)
        )
    })
}

fn billing_plan(value: &str, term: Option<Term>) -> Result<BillingPlan, String> {
    if value.eq_ignore_ascii_case("Monthly") {
        return Err(
            "monthly billing is not supported: the unit price is charged once, at purchase, \
             for the whole term; use Annual (P1Y), Triennial (P3Y) or OneTime"
                .to_owned(),
        );
    }
    let plan: BillingPlan = value.parse().map_err(|_| {
        format!(
            "{} is not a billing plan: Annual (P1Y), Triennial (P3Y) or OneTime",
            csp_kit::error::quoted(value)
        )
    })?;
    match (plan, term) {
        (BillingPlan::Annual, Some(Term::ThreeYears)) => {
            Err("Annual is for P1Y terms; a P3Y term paid up front is Triennial".to_owned())
        }
        (BillingPlan::Triennial, Some(Term::OneYear)) => {
            Err("Triennial is for P3Y terms; a P1Y term paid up front is Annual".to_owned())
        }
        _ => Ok(plan),
    }
}

fn market_code(value: &str) -> Result<String, String> {
    if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{} is not an ISO 3166-1 alpha-2 code in capitals, such as US",
            csp_kit::error::quoted(value)
        ));
    }
    Ok(value.to_owned())
}

fn currency(value: &str) -> Result<String, String> {
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{} is not an ISO 4217 currency code in capitals, such as USD",
            csp_kit::error::quoted(value)
        ));
    }
    Ok(value.to_owned())
}

/// Decimal digits of a currency's minor unit (ISO 4217; 2 unless listed).
pub fn minor_unit_digits(currency: &str) -> u32 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const FOUR: &[&str] = &["CLF", "UYW"];
    if ZERO.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else if FOUR.contains(&currency) {
        4
    } else {
        2
    }
}

/// A unit price in minor units: digits, optionally `.` and at most
/// `digits` more.
pub fn unit_price(value: &str, digits: u32, currency: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{} is not a price: digits with at most {digits} after a '.' ({currency}), no sign, no thousands separators",
            csp_kit::error::quoted(value)
        )
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (value.contains('.') && fraction.is_empty())
    {
        return Err(bad());
    }
    if fraction.len() > digits as usize {
        return Err(format!(
            "{} has more decimals than {currency} has ({digits})",
            csp_kit::error::quoted(value)
        ));
    }
    let scale = 10_i64.pow(digits);
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        let parsed: i64 = fraction.parse().map_err(|_| bad())?;
        parsed * 10_i64.pow(digits - fraction.len() as u32)
    };
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(|| format!("{} is too large", csp_kit::error::quoted(value)))
}

/// A price in minor units, as the file writes it.
pub fn format_price(minor: i64, digits: u32) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10_i64.pow(digits);
    format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = digits as usize
    )
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "{} is not true or false",
            csp_kit::error::quoted(value)
        )),
    }
}

fn date(value: &str) -> Result<Micros, String> {
    if value.is_empty() {
        return Err("required: the first day the price applies, YYYY-MM-DD".to_owned());
    }
    clock::parse_date(value).ok_or_else(|| {
        format!(
            "{} is not a date: YYYY-MM-DD, such as 2026-12-01",
            csp_kit::error::quoted(value)
        )
    })
}

/// The end date (inclusive) as the first instant after it.
fn end_date(value: &str) -> Result<Option<Micros>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    clock::parse_date(value)
        .map(|day| Some(day + DAY))
        .ok_or_else(|| {
            format!(
                "{} is not a date: YYYY-MM-DD (the last day the price applies), or empty for no end",
                csp_kit::error::quoted(value)
            )
        })
}

fn download_options(value: &str, kind: ProductKind) -> Result<DownloadOptions, String> {
    if kind == ProductKind::AzureReservation {
        if value.is_empty() {
            return Ok(DownloadOptions::default());
        }
        return Err("an Azure reservation has no downloads: leave it empty".to_owned());
    }
    let shape = "versions=2019|2022;languages=en-US|de-DE;file_types=iso-x64:ISO 64-bit";
    let mut options = DownloadOptions::default();
    let mut seen = [false; 3];
    for part in value.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((name, list)) = part.split_once('=') else {
            return Err(format!(
                "{} is not NAME=VALUES; write {shape}",
                csp_kit::error::quoted(part)
            ));
        };
        let values: Vec<&str> = list.split('|').map(str::trim).collect();
        let slot = match name.trim() {
            "versions" => 0,
            "languages" => 1,
            "file_types" => 2,
            other => {
                return Err(format!(
                    "unknown option {}; the options are versions, languages and file_types",
                    csp_kit::error::quoted(other)
                ));
            }
        };
        if seen[slot] {
            return Err(format!("{} is given twice", name.trim()));
        }
        seen[slot] = true;
        for value in values {
            let (value, display) = match (slot, value.split_once(':')) {
                (2, Some((id, display))) => (id.trim(), display.trim()),
                (2, None) => (value, value),
                (_, _) => (value, value),
            };
            let value = self::id(value).map_err(|e| format!("{}: {e}", name.trim()))?;
            optional_text(display, MAX_TITLE)?;
            let list = match slot {
                0 => &mut options.versions,
                1 => &mut options.languages,
                _ => {
                    if options.file_types.iter().any(|f| f.id == value) {
                        return Err(format!("file type {value} is listed twice"));
                    }
                    options.file_types.push(FileType {
                        id: value.to_owned(),
                        display_name: if display.is_empty() { value } else { display }.to_owned(),
                    });
                    continue;
                }
            };
            if list.iter().any(|v| v == value) {
                return Err(format!("{value} is listed twice"));
            }
            list.push(value.to_owned());
        }
    }
    if options.versions.is_empty() || options.languages.is_empty() || options.file_types.is_empty()
    {
        return Err(format!(
            "a server subscription needs at least one version, language and file type: {shape}"
        ));
    }
    Ok(options)
}

/// The download options as the file writes them.
pub fn format_download_options(options: &DownloadOptions) -> String {
    if options.versions.is_empty() {
        return String::new();
    }
    let file_types: Vec<String> = options
        .file_types
        .iter()
        .map(|f| format!("{}:{}", f.id, f.display_name))
        .collect();
    format!(
        "versions={};languages={};file_types={}",
        options.versions.join("|"),
        options.languages.join("|"),
        file_types.join("|")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Vec<KnownPolicy> {
        vec![
            KnownPolicy {
                id: "csp-2019-60-days".to_owned(),
                window_days: 60,
                cap_currency: None,
            },
            KnownPolicy {
                id: "capped".to_owned(),
                window_days: 0,
                cap_currency: Some("USD".to_owned()),
            },
        ]
    }

    const HEADER: &str = "ProductId,ProductTitle,ProductDescription,ProductKind,Publisher,SkuId,SkuTitle,TermDuration,BillingPlan,Market,MarketName,Currency,UnitPrice,TaxIncluded,EffectiveStartDate,EffectiveEndDate,DownloadOptions,CancellationPolicyId";
    const WS: &str = "ws,Windows Server,Desc,server_subscription,Microsoft Corporation,ws-p1y,\"Windows Server, 1 year\",P1Y,Annual";
    const OPTIONS: &str = "versions=2019|2022;languages=en-US;file_types=iso-x64:ISO 64-bit";
    const RES: &str =
        "vm,Reserved VM,,azure_reservation,Microsoft Corporation,vm-p1y,VM 1 year,P1Y,OneTime";

    fn file(lines: &[String]) -> Vec<u8> {
        let mut text = String::from(HEADER);
        for line in lines {
            text.push('\n');
            text.push_str(line);
        }
        text.into_bytes()
    }

    fn ws(market: &str, price: &str, start: &str, end: &str) -> String {
        format!(
            "{WS},{market},Name {market},USD,{price},false,{start},{end},{OPTIONS},csp-2019-60-days"
        )
    }

    #[test]
    fn a_good_list_reads_into_markets_products_skus_and_periods() {
        let data = parse(
            &file(&[
                ws("US", "400.00", "2026-11-01", "2026-11-30"),
                ws("US", "410.5", "2026-12-01", ""),
                format!("{RES},US,Name US,USD,600,false,2026-11-01,,,csp-2019-60-days"),
                ws("BR", "400", "2026-11-01", ""),
            ]),
            &policies(),
        )
        .unwrap();
        let codes: Vec<(&str, bool)> = data
            .markets
            .iter()
            .map(|m| (m.code.as_str(), m.azure_reservations_available))
            .collect();
        assert_eq!(codes, [("BR", false), ("US", true)]);
        assert_eq!(data.products.len(), 2);
        let ws = &data.products[1];
        assert_eq!((ws.id.as_str(), ws.skus.len()), ("ws", 1));
        assert_eq!(ws.skus[0].title, "Windows Server, 1 year");
        assert_eq!(ws.download_options.versions, ["2019", "2022"]);
        assert_eq!(ws.cancellation_window_days, 60);
        let us: Vec<(i64, Option<String>, i64)> = data
            .prices
            .iter()
            .filter(|p| p.sku_id == "ws-p1y" && p.market == "US")
            .map(|p| (p.from, p.until.map(clock::to_date), p.amount_minor))
            .collect();
        let nov = clock::parse_date("2026-11-01").unwrap();
        let dec = clock::parse_date("2026-12-01").unwrap();
        assert_eq!(
            us,
            [
                (nov, Some("2026-12-01".to_owned()), 40_000),
                (dec, None, 41_050)
            ]
        );
    }

    #[test]
    fn every_error_is_named_with_its_line_and_column() {
        let errors = parse(
            &file(&[
                ws("US", "400.00", "2026-11-01", ""),
                ws("usa", "abc", "2026-02-30", "2026-01-01"),
                format!("{RES},US,Name US,USD,600,false,2026-11-01,,{OPTIONS},no-such-policy"),
                "too,few".to_owned(),
                ws("US", "1.00", "2026-12-01", ""),
                ws("DE", "400.001", "2026-11-01", ""),
            ]),
            &policies(),
        )
        .unwrap_err();
        let found: Vec<String> = errors.iter().map(LineError::location).collect();
        assert_eq!(
            found,
            [
                "line 3, column Market",
                "line 3, column UnitPrice",
                "line 3, column EffectiveStartDate",
                "line 4, column DownloadOptions",
                "line 4, column CancellationPolicyId",
                "line 5",
                "line 6, column EffectiveStartDate",
                "line 7, column UnitPrice",
            ],
            "{errors:#?}"
        );
        assert!(errors[6].message.contains("line 2"), "{}", errors[6]);
    }

    #[test]
    fn lines_of_one_product_sku_or_market_must_agree() {
        let changed_title =
            ws("DE", "1", "2026-11-01", "").replace("Windows Server,Desc", "Other,Desc");
        let changed_currency = ws("US", "1", "2026-11-01", "").replace(",USD,", ",EUR,");
        let errors = parse(
            &file(&[
                ws("US", "1", "2026-10-01", "2026-10-31"),
                changed_title,
                changed_currency,
            ]),
            &policies(),
        )
        .unwrap_err();
        let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("line 3, column ProductTitle: differs from line 2"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("line 4, column Currency: differs from line 2"),
            "{found:#?}"
        );
    }

    #[test]
    fn the_header_must_name_every_column_once() {
        let errors = parse(b"ProductId,ProductId,Colour\n", &policies()).unwrap_err();
        let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{found:#?}");
        assert!(found[0].contains("named twice"));
        assert!(found[1].contains("unknown column \"Colour\""));
        assert!(found[2].contains("missing columns: ProductTitle"));
        assert!(parse(b"", &policies()).is_err());
        assert!(
            parse(HEADER.as_bytes(), &policies()).unwrap_err()[0]
                .message
                .contains("no prices")
        );
    }

    #[test]
    fn prices_read_in_the_currency_minor_unit() {
        assert_eq!(unit_price("400", 2, "USD"), Ok(40_000));
        assert_eq!(unit_price("400.5", 2, "USD"), Ok(40_050));
        assert_eq!(unit_price("0.07", 2, "USD"), Ok(7));
        assert_eq!(unit_price("60000", 0, "JPY"), Ok(60_000));
        assert_eq!(unit_price("1.234", 3, "KWD"), Ok(1_234));
        for bad in [
            "",
            "-1",
            "1,000",
            "1.",
            ".5",
            "1e3",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert!(unit_price(bad, 2, "USD").is_err(), "{bad}");
        }
        assert!(
            unit_price("1.5", 0, "JPY")
                .unwrap_err()
                .contains("more decimals")
        );
        assert_eq!(format_price(41_050, 2), "410.50");
        assert_eq!(format_price(7, 2), "0.07");
        assert_eq!(format_price(60_000, 0), "60000");
    }

    #[test]
    fn a_sku_under_a_capped_policy_needs_a_price_in_the_caps_currency() {
        let capped = |market: &str, currency: &str| {
            format!("{RES},{market},Name {market},{currency},600,false,2026-11-01,,,capped")
        };
        let errors = parse(&file(&[capped("DE", "EUR")]), &policies()).unwrap_err();
        assert_eq!(errors[0].location(), "line 2, column CancellationPolicyId");
        assert!(
            errors[0].message.contains("caps refunds in USD"),
            "{}",
            errors[0]
        );
        assert!(
            parse(
                &file(&[capped("DE", "EUR"), capped("US", "USD")]),
                &policies()
            )
            .is_ok()
        );
    }

    #[test]
    fn billing_plans_must_fit_the_term() {
        assert_eq!(
            billing_plan("Annual", Some(Term::OneYear)),
            Ok(BillingPlan::Annual)
        );
        assert!(billing_plan("Annual", Some(Term::ThreeYears)).is_err());
        assert!(billing_plan("Triennial", Some(Term::OneYear)).is_err());
        assert!(
            billing_plan("Monthly", Some(Term::OneYear))
                .unwrap_err()
                .contains("not supported")
        );
        assert_eq!(
            billing_plan("OneTime", Some(Term::ThreeYears)),
            Ok(BillingPlan::OneTime)
        );
    }

    #[test]
    fn download_options_round_trip_through_their_text() {
        let options = download_options(OPTIONS, ProductKind::ServerSubscription).unwrap();
        assert_eq!(format_download_options(&options), OPTIONS);
        assert!(download_options("", ProductKind::ServerSubscription).is_err());
        assert!(
            download_options(
                "versions=1;languages=x;file_types=../etc",
                ProductKind::ServerSubscription
            )
            .is_err()
        );
        assert!(download_options(OPTIONS, ProductKind::AzureReservation).is_err());
    }
}
