//! Ordering's domain, without I/O: the entities (customers, orders, their
//! lines, subscriptions) and their states, what a valid customer and order
//! look like, how an order is fingerprinted for idempotency, and when a
//! subscription can be cancelled.

use csp_kit::clock::{self, DAY, HOUR, Micros};
use csp_kit::ids::{OrderId, PartnerId, RequestId, SubscriptionId, TenantId};
pub use csp_kit::product::{ProductKind, RefundRule, Term, WindowUnit};
use csp_kit::{ApiError, FieldViolation};
use sha2::{Digest, Sha256};
use uuid::Uuid;

csp_kit::stored_enum! {
    /// Whether an order still has an active subscription.
    pub enum OrderStatus {
        /// Placed and paid; at least one subscription is active.
        Completed = "completed",
        /// Every subscription of the order was cancelled.
        Cancelled = "cancelled",
    }
}

csp_kit::stored_enum! {
    /// Whether a subscription is in use.
    pub enum SubscriptionStatus {
        /// In use.
        Active = "active",
        /// Cancelled (refunded, keys revoked).
        Cancelled = "cancelled",
    }
}

csp_kit::stored_enum! {
    /// What a billing line item bills.
    pub enum ChargeType {
        /// An order line, charged when the order is placed.
        Purchase = "purchase",
        /// A cancelled subscription's refund (a negative amount).
        Refund = "refund",
    }
}

/// One amount billed to the partner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingLineItem {
    /// `purchase-<subscription>` or `refund-<subscription>`.
    pub id: String,
    /// The partner billed.
    pub partner_id: PartnerId,
    /// Purchase or refund.
    pub charge_type: ChargeType,
    /// When.
    pub billed_at: Micros,
    /// The order.
    pub order_id: OrderId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The customer.
    pub customer_tenant_id: TenantId,
    /// The SKU.
    pub sku_id: String,
    /// The product.
    pub product_id: String,
    /// The customer's market.
    pub market: String,
    /// Currency.
    pub currency_code: String,
    /// Its minor unit digits.
    pub minor_unit_digits: i32,
    /// Units.
    pub quantity: i32,
    /// The unit price frozen in the order.
    pub unit_price_minor: i64,
    /// What was billed (negative for a refund).
    pub amount_minor: i64,
    /// Whether the amounts include tax.
    pub tax_included: bool,
    /// The catalog price list the order was priced from.
    pub price_list_version: i64,
    /// The cancellation policy the subscription was sold under.
    pub policy_id: String,
    /// Its version.
    pub policy_version: u32,
}

/// One currency's month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyStatement {
    /// ISO 4217.
    pub currency_code: String,
    /// Its minor unit digits.
    pub minor_unit_digits: i32,
    /// Billed before the month.
    pub opening_minor: i64,
    /// The month's purchases.
    pub charges_minor: i64,
    /// The month's refunds (zero or negative).
    pub credits_minor: i64,
    /// The month's line items.
    pub line_items: i64,
}

impl CurrencyStatement {
    /// The month's total: charges plus credits.
    pub fn total_minor(&self) -> i64 {
        self.charges_minor + self.credits_minor
    }

    /// The opening balance plus the month's total.
    pub fn closing_minor(&self) -> i64 {
        self.opening_minor + self.total_minor()
    }
}

/// A billing month, `YYYY-MM` (UTC): its first instant and the next
/// month's. INVALID_ARGUMENT naming `field` otherwise.
pub fn billing_month(field: &str, month: &str) -> Result<(Micros, Micros), ApiError> {
    let month = month.trim();
    let bad = || {
        ApiError::invalid(
            field,
            format!(
                "{} is not a month: YYYY-MM, such as 2026-12",
                csp_kit::error::quoted(month)
            ),
        )
    };
    if month.is_empty() {
        return Err(ApiError::invalid(
            field,
            "required: a month such as 2026-12",
        ));
    }
    if month.len() != 7 {
        return Err(bad());
    }
    let from = clock::parse_date(&format!("{month}-01")).ok_or_else(bad)?;
    let (year, number) = month.split_once('-').ok_or_else(bad)?;
    let (year, number): (u32, u32) = (
        year.parse().map_err(|_| bad())?,
        number.parse().map_err(|_| bad())?,
    );
    let next = if number == 12 {
        format!("{:04}-01-01", year + 1)
    } else {
        format!("{year:04}-{:02}-01", number + 1)
    };
    // 9999-12 ends where the calendar's dates do.
    let until = clock::parse_date(&next).unwrap_or(from + 31 * DAY);
    Ok((from, until))
}

/// A partner's customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// Its Azure AD tenant id.
    pub tenant_id: TenantId,
    /// The partner.
    pub partner_id: PartnerId,
    /// Domain name, lower case.
    pub domain_name: String,
    /// Company name.
    pub company_name: String,
    /// Market code.
    pub market: String,
    /// Created at.
    pub created_at: Micros,
}

/// A line of a placed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// 1-based.
    pub line_number: i32,
    /// SKU.
    pub sku_id: String,
    /// Product.
    pub product_id: String,
    /// Product title at order time.
    pub product_title: String,
    /// What the product is.
    pub product_kind: ProductKind,
    /// The SKU's term.
    pub term: Term,
    /// Units.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_minor: i64,
    /// Line amount, minor units.
    pub amount_minor: i64,
    /// The subscription it became.
    pub subscription_id: SubscriptionId,
}

/// A placed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Id.
    pub id: OrderId,
    /// Partner.
    pub partner_id: PartnerId,
    /// Customer.
    pub customer_tenant_id: TenantId,
    /// The client's request id.
    pub request_id: RequestId,
    /// Fingerprint of the request body.
    pub request_fingerprint: String,
    /// Completed, or cancelled once no subscription is left active.
    pub status: OrderStatus,
    /// Currency.
    pub currency_code: String,
    /// Minor unit digits.
    pub minor_unit_digits: i32,
    /// Total, minor units.
    pub total_minor: i64,
    /// Whether prices include tax.
    pub tax_included: bool,
    /// The catalog's price list its prices were frozen from (0: from before
    /// price lists).
    pub price_list_version: i64,
    /// Who placed it.
    pub placed_by_user_id: String,
    /// When.
    pub created_at: Micros,
    /// Lines.
    pub lines: Vec<OrderLine>,
}

/// A subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Id.
    pub id: SubscriptionId,
    /// Partner.
    pub partner_id: PartnerId,
    /// Customer.
    pub customer_tenant_id: TenantId,
    /// Order.
    pub order_id: OrderId,
    /// Its order line.
    pub line_number: i32,
    /// Product.
    pub product_id: String,
    /// Product kind.
    pub product_kind: ProductKind,
    /// SKU.
    pub sku_id: String,
    /// Active or cancelled.
    pub status: SubscriptionStatus,
    /// Units.
    pub quantity: i32,
    /// Currency.
    pub currency_code: String,
    /// Minor unit digits.
    pub minor_unit_digits: i32,
    /// Paid, minor units.
    pub amount_paid_minor: i64,
    /// Bought at.
    pub purchased_at: Micros,
    /// The window in whole days (the policy's, rounded up; 0: the term).
    pub cancellation_window_days: i32,
    /// End (exclusive) of the window.
    pub cancellable_until: Micros,
    /// When the term ends (exclusive).
    pub term_ends_at: Micros,
    /// The cancellation policy it was sold under.
    pub policy: SoldPolicy,
    /// When the policy caps refunds: what was paid, in the cap's currency
    /// (the price list's own rate: the SKU's price in a market of that
    /// currency; `None` without a cap, or when no such price was known).
    pub cap_value_minor: Option<i64>,
    /// What its refund counted toward the cap, in the cap's currency.
    pub refunded_cap_minor: Option<i64>,
    /// Cancelled at.
    pub cancelled_at: Option<Micros>,
    /// Refunded, minor units.
    pub refunded_minor: Option<i64>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// The ticket that cancelled it.
    pub cancel_ticket_id: Option<String>,
}

impl Subscription {
    /// The terms its cancellation is judged by.
    pub fn terms(&self) -> CancellationTerms {
        CancellationTerms {
            subscription_id: self.id.to_string(),
            purchased_at: self.purchased_at,
            cancellable_until: self.cancellable_until,
            term_ends_at: self.term_ends_at,
            amount_paid_minor: self.amount_paid_minor,
            currency_code: self.currency_code.clone(),
            policy: self.policy.clone(),
            cap_value_minor: self.cap_value_minor,
        }
    }
}

/// A cancellation to record.
#[derive(Clone, Debug)]
pub struct Cancellation {
    /// Partner.
    pub partner_id: PartnerId,
    /// Subscription.
    pub subscription_id: SubscriptionId,
    /// Its customer.
    pub customer_tenant_id: TenantId,
    /// When.
    pub at: Micros,
    /// When the window is judged (the customer's request).
    pub judged_at: Micros,
    /// Refund, minor units.
    pub refund_minor: i64,
    /// Why.
    pub reason: String,
    /// The ticket.
    pub ticket_id: String,
    /// The customer's refund cap, when one applies: (amount, currency, the
    /// start of its rolling period), checked in the cancelling transaction.
    pub cap: Option<(i64, String, Micros)>,
    /// What the refund counts toward the cap, in its currency.
    pub refund_cap_minor: i64,
}

/// The most units of one SKU in one line.
pub const MAX_QUANTITY: i32 = 1000;
/// The most lines in one order.
pub const MAX_LINES: usize = 100;
/// The longest company name.
pub const MAX_COMPANY_NAME: usize = 200;

/// Checks and normalizes a domain name (lower case, no trailing dot):
/// labels of 1 to 63 letters, digits and hyphens, not starting or ending with
/// a hyphen, at least two labels, a top-level label that is not all digits,
/// 253 characters at most.
pub fn parse_domain_name(field: &str, value: &str) -> Result<String, ApiError> {
    let name = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let invalid = |why: &str| {
        ApiError::invalid(
            field,
            format!(
                "{} is not a domain name: {why}",
                csp_kit::error::quoted(value)
            ),
        )
    };
    if name.is_empty() {
        return Err(ApiError::invalid(
            field,
            "required: a domain name such as contoso.onmicrosoft.com",
        ));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("it needs at least two labels, such as contoso.com"));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each label must be 1 to 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid(
                "only letters, digits, hyphens and dots are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with a hyphen"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(invalid("the top-level label cannot be all digits"));
    }
    Ok(name)
}

/// Checks a company name: 1 to 200 characters after trimming, no control
/// characters.
pub fn parse_company_name(field: &str, value: &str) -> Result<String, ApiError> {
    let name = value.trim();
    if name.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    if name.chars().count() > MAX_COMPANY_NAME {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_COMPANY_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(name.to_owned())
}

/// A line of an order to place, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRequest {
    /// The SKU.
    pub sku_id: String,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: i32,
}

/// Checks an order's lines, naming every bad field.
pub fn check_lines(lines: &[(String, i32)]) -> Result<Vec<LineRequest>, ApiError> {
    if lines.is_empty() {
        return Err(ApiError::invalid(
            "lines",
            "an order needs at least one line",
        ));
    }
    if lines.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("at most {MAX_LINES} lines per order"),
        ));
    }
    let mut violations = Vec::new();
    let mut checked = Vec::with_capacity(lines.len());
    for (i, (sku_id, quantity)) in lines.iter().enumerate() {
        let sku_id = sku_id.trim();
        if sku_id.is_empty() {
            violations.push(FieldViolation::new(
                format!("lines[{i}].sku_id"),
                "required",
            ));
        }
        if !(1..=MAX_QUANTITY).contains(quantity) {
            violations.push(FieldViolation::new(
                format!("lines[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}, not {quantity}"),
            ));
        }
        checked.push(LineRequest {
            sku_id: sku_id.to_owned(),
            quantity: *quantity,
        });
    }
    if violations.is_empty() {
        Ok(checked)
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

/// A fingerprint of what an order asks for, so a retry can be told from a
/// different order sent with the same request id.
pub fn fingerprint(customer: Uuid, lines: &[LineRequest]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(customer.as_bytes());
    for line in lines {
        hasher.update((line.sku_id.len() as u64).to_be_bytes());
        hasher.update(line.sku_id.as_bytes());
        hasher.update(line.quantity.to_be_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `unit` times `quantity`, refusing overflow.
pub fn line_amount(unit_minor: i64, quantity: i32, line: usize) -> Result<i64, ApiError> {
    unit_minor.checked_mul(i64::from(quantity)).ok_or_else(|| {
        ApiError::invalid(format!("lines[{line}].quantity"), "the amount is too large")
    })
}

/// A limit on refunds, frozen with the policy: at most `amount_minor` of
/// `currency` per customer over a rolling `period_days`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundCap {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The rolling period.
    pub period_days: u32,
}

/// The cancellation policy a subscription was sold under: one version of
/// the catalog's policy, frozen into the subscription so a later version
/// never changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoldPolicy {
    /// Id, for example `new-commerce-168-hours`.
    pub id: String,
    /// Version, from 1.
    pub version: u32,
    /// How the window is counted.
    pub window_unit: WindowUnit,
    /// Hours or days (`None` for [`WindowUnit::Term`]).
    pub window_amount: Option<u32>,
    /// What a cancellation refunds.
    pub refund_rule: RefundRule,
    /// A cap on a customer's refunds, if any.
    pub cap: Option<RefundCap>,
}

impl SoldPolicy {
    /// The article's rule (`days` days, full refund, no cap): the demo's
    /// policy, and what subscriptions sold before policies read as.
    pub fn article(days: u32) -> Self {
        Self {
            id: "csp-2019-60-days".to_owned(),
            version: 1,
            window_unit: WindowUnit::Days,
            window_amount: Some(days),
            refund_rule: RefundRule::Full,
            cap: None,
        }
    }

    /// The end (exclusive) of the window of a subscription bought at
    /// `purchased_at` whose term ends at `term_ends_at`.
    pub fn window_end(&self, purchased_at: Micros, term_ends_at: Micros) -> Micros {
        let amount = i64::from(self.window_amount.unwrap_or(0));
        let end = match self.window_unit {
            WindowUnit::Hours => purchased_at + amount * HOUR,
            WindowUnit::Days => purchased_at + amount * DAY,
            WindowUnit::Term => term_ends_at,
        };
        end.min(term_ends_at)
    }

    /// The window in whole days, rounded up (0: the term).
    pub fn window_days(&self) -> u32 {
        let amount = self.window_amount.unwrap_or(0);
        match self.window_unit {
            WindowUnit::Hours => amount.div_ceil(24),
            WindowUnit::Days => amount,
            WindowUnit::Term => 0,
        }
    }

    /// The window as a person reads it: `60-day`, `168-hour`.
    pub fn describe_window(&self) -> String {
        let amount = self.window_amount.unwrap_or(0);
        match self.window_unit {
            WindowUnit::Hours => format!("{amount}-hour cancellation window"),
            WindowUnit::Days => format!("{amount}-day cancellation window"),
            WindowUnit::Term => "cancellation window (the subscription's term)".to_owned(),
        }
    }
}

/// What a line paid in its policy's cap currency: the amount itself in
/// that currency, else the quantity at the quote's unit price there (`None`
/// without a cap or such a price).
fn cap_value(quote: &Quote, quantity: i32, amount: i64) -> Option<i64> {
    let cap = quote.policy.cap.as_ref()?;
    if cap.currency == quote.currency_code {
        return Some(amount);
    }
    quote.cap_unit_minor?.checked_mul(i64::from(quantity))
}

/// When a term bought at `purchased_at` ends: one or three calendar years.
pub fn term_end(purchased_at: Micros, term: Term) -> Micros {
    clock::add_years(
        purchased_at,
        match term {
            Term::OneYear => 1,
            Term::ThreeYears => 3,
        },
    )
}

/// What the policy's rule refunds of `paid` for a cancellation at `at`,
/// before any cap: all of it, or the share of the term left counted in
/// whole hours or days (a started hour or day is used), rounded down to the
/// minor unit.
pub fn policy_refund(
    rule: RefundRule,
    paid: i64,
    purchased_at: Micros,
    term_ends_at: Micros,
    at: Micros,
) -> i64 {
    let unit = match rule {
        RefundRule::Full => return paid,
        RefundRule::ProratedByHour => HOUR,
        RefundRule::ProratedByDay => DAY,
    };
    let total = ((term_ends_at - purchased_at) / unit).max(1);
    let left = ((term_ends_at - at.max(purchased_at)) / unit).clamp(0, total);
    let share = i128::from(paid) * i128::from(left) / i128::from(total);
    i64::try_from(share).unwrap_or(paid)
}

/// The price the catalog quoted for one SKU in a customer's market, with
/// what ordering records of its product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The SKU.
    pub sku_id: String,
    /// Its product.
    pub product_id: String,
    /// The product's title now.
    pub product_title: String,
    /// What the product is.
    pub product_kind: ProductKind,
    /// The SKU's term.
    pub term: Term,
    /// The unit price, minor units.
    pub unit_minor: i64,
    /// Its currency.
    pub currency_code: String,
    /// Minor unit digits of the currency.
    pub minor_unit_digits: i32,
    /// Whether the price includes tax.
    pub tax_included: bool,
    /// The cancellation policy it is sold under (the catalog's current
    /// version).
    pub policy: SoldPolicy,
    /// The unit price in the policy's cap currency, when that is another
    /// currency than the market's.
    pub cap_unit_minor: Option<i64>,
    /// The catalog's price list the price comes from (0: none).
    pub price_list_version: i64,
}

/// Who places which order, when.
#[derive(Clone, Debug)]
pub struct OrderHeader {
    /// The new order's id.
    pub id: OrderId,
    /// The partner.
    pub partner_id: PartnerId,
    /// The customer.
    pub customer_tenant_id: TenantId,
    /// The client's request id.
    pub request_id: RequestId,
    /// The fingerprint of what was asked.
    pub request_fingerprint: String,
    /// The user placing it.
    pub placed_by_user_id: String,
    /// When.
    pub at: Micros,
}

/// Prices each line with its quote (same order, one quote per line) and
/// builds the order, its lines with prices frozen, and one active
/// subscription per line, cancellable until the product's window ends. An
/// order priced in two currencies is the catalog's fault (INTERNAL); a
/// total that overflows is the request's (INVALID_ARGUMENT).
pub fn price_order(
    header: OrderHeader,
    lines: &[LineRequest],
    quotes: &[Quote],
) -> Result<(Order, Vec<Subscription>), ApiError> {
    let Some(first) = quotes.first() else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the catalog quoted no line"
        )));
    };
    if quotes.len() != lines.len() {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the catalog quoted {} lines of {}",
            quotes.len(),
            lines.len()
        )));
    }
    let mut order_lines = Vec::with_capacity(lines.len());
    let mut subscriptions = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for (i, (line, quote)) in lines.iter().zip(quotes).enumerate() {
        if quote.currency_code != first.currency_code {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the catalog priced one order in two currencies"
            )));
        }
        let amount = line_amount(quote.unit_minor, line.quantity, i)?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| ApiError::invalid("lines", "the order total is too large"))?;
        let subscription_id = SubscriptionId::new();
        let line_number = i32::try_from(i + 1).unwrap_or(i32::MAX);
        order_lines.push(OrderLine {
            line_number,
            sku_id: quote.sku_id.clone(),
            product_id: quote.product_id.clone(),
            product_title: quote.product_title.clone(),
            product_kind: quote.product_kind,
            term: quote.term,
            quantity: line.quantity,
            unit_price_minor: quote.unit_minor,
            amount_minor: amount,
            subscription_id,
        });
        subscriptions.push(Subscription {
            id: subscription_id,
            partner_id: header.partner_id,
            customer_tenant_id: header.customer_tenant_id,
            order_id: header.id,
            line_number,
            product_id: quote.product_id.clone(),
            product_kind: quote.product_kind,
            sku_id: quote.sku_id.clone(),
            status: SubscriptionStatus::Active,
            quantity: line.quantity,
            currency_code: quote.currency_code.clone(),
            minor_unit_digits: first.minor_unit_digits,
            amount_paid_minor: amount,
            purchased_at: header.at,
            cancellation_window_days: i32::try_from(quote.policy.window_days()).unwrap_or(i32::MAX),
            cancellable_until: quote
                .policy
                .window_end(header.at, term_end(header.at, quote.term)),
            term_ends_at: term_end(header.at, quote.term),
            policy: quote.policy.clone(),
            cap_value_minor: cap_value(quote, line.quantity, amount),
            refunded_cap_minor: None,
            cancelled_at: None,
            refunded_minor: None,
            cancel_reason: None,
            cancel_ticket_id: None,
        });
    }
    let order = Order {
        id: header.id,
        partner_id: header.partner_id,
        customer_tenant_id: header.customer_tenant_id,
        request_id: header.request_id,
        request_fingerprint: header.request_fingerprint,
        status: OrderStatus::Completed,
        currency_code: first.currency_code.clone(),
        minor_unit_digits: first.minor_unit_digits,
        total_minor: total,
        tax_included: first.tax_included,
        price_list_version: first.price_list_version,
        placed_by_user_id: header.placed_by_user_id,
        created_at: header.at,
        lines: order_lines,
    };
    Ok((order, subscriptions))
}

/// What a refund ticket may cancel, and what it refunds.
#[derive(Clone, Debug)]
pub struct Refundable {
    /// The active subscriptions named, each with what cancelling it now
    /// refunds (its policy's rule, then the customer's cap).
    pub subscriptions: Vec<(Subscription, i64)>,
    /// What was paid for them, minor units.
    pub paid_minor: i64,
    /// What cancelling them all now refunds, minor units.
    pub refundable_minor: i64,
    /// The first of their windows' ends: cancel before it.
    pub deadline: Micros,
    /// In what currency.
    pub currency_code: String,
    /// Its minor unit digits.
    pub minor_unit_digits: i32,
}

/// What a refund may cancel of `subscriptions` (all of one order, or one)
/// at `at`: the active ones, each still inside its window, what was paid
/// and what their policies refund. `cap_used` is what the customer was
/// refunded within the cap's period (of the first capped subscription).
/// Nothing active is FAILED_PRECONDITION `ALREADY_CANCELLED`; one past its
/// window is `CANCELLATION_WINDOW_CLOSED`, naming the window.
pub fn refundable(
    subscriptions: Vec<Subscription>,
    at: Micros,
    cap_used: i64,
) -> Result<Refundable, ApiError> {
    let Some(first_named) = subscriptions.first().map(|s| s.id) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a refund target without subscriptions"
        )));
    };
    let active: Vec<Subscription> = subscriptions
        .into_iter()
        .filter(|s| s.status == SubscriptionStatus::Active)
        .collect();
    let Some(first) = active.first() else {
        return Err(ApiError::failed_precondition(
            "ALREADY_CANCELLED",
            format!("subscription/{first_named}"),
            "every subscription named is already cancelled",
        ));
    };
    if let Some(closed) = active.iter().find(|s| at >= s.cancellable_until) {
        return Err(window_closed(&closed.terms()));
    }
    let (currency_code, minor_unit_digits) = (first.currency_code.clone(), first.minor_unit_digits);
    let mut cap_left: Option<i64> = None;
    let mut with_refunds = Vec::with_capacity(active.len());
    for s in active {
        let terms = s.terms();
        let mut refund = terms.policy_refund(at);
        if let Some(cap) = terms.cap() {
            let left = cap_left.get_or_insert((cap.amount_minor - cap_used).max(0));
            refund = refund.min(terms.most_within(*left));
            *left -= terms.in_cap_currency(refund);
        }
        with_refunds.push((s, refund));
    }
    Ok(Refundable {
        paid_minor: with_refunds.iter().map(|(s, _)| s.amount_paid_minor).sum(),
        refundable_minor: with_refunds.iter().map(|(_, r)| r).sum(),
        deadline: with_refunds
            .iter()
            .map(|(s, _)| s.cancellable_until)
            .min()
            .unwrap_or(at),
        currency_code,
        minor_unit_digits,
        subscriptions: with_refunds,
    })
}

/// A subscription as the cancellation rule sees it.
#[derive(Clone, Debug)]
pub struct CancellationTerms {
    /// The subscription id.
    pub subscription_id: String,
    /// When it was bought.
    pub purchased_at: Micros,
    /// The end (exclusive) of the window.
    pub cancellable_until: Micros,
    /// The end (exclusive) of the term.
    pub term_ends_at: Micros,
    /// What was paid.
    pub amount_paid_minor: i64,
    /// In what currency.
    pub currency_code: String,
    /// The policy it was sold under.
    pub policy: SoldPolicy,
    /// What was paid in the cap's currency, when the policy caps refunds.
    pub cap_value_minor: Option<i64>,
}

impl CancellationTerms {
    /// What the policy's rule refunds for a cancellation at `at`, before
    /// any cap.
    pub fn policy_refund(&self, at: Micros) -> i64 {
        policy_refund(
            self.policy.refund_rule,
            self.amount_paid_minor,
            self.purchased_at,
            self.term_ends_at,
            at,
        )
    }

    /// The policy's cap, when it applies (what was paid in the cap's
    /// currency is known).
    pub fn cap(&self) -> Option<&RefundCap> {
        self.policy
            .cap
            .as_ref()
            .filter(|_| self.cap_value_minor.is_some())
    }

    /// What a refund of `refund_minor` counts toward the cap, in its
    /// currency: the same share of what was paid, rounded up.
    pub fn in_cap_currency(&self, refund_minor: i64) -> i64 {
        let (Some(value), paid) = (self.cap_value_minor, self.amount_paid_minor) else {
            return 0;
        };
        if paid <= 0 {
            return 0;
        }
        let share = (i128::from(refund_minor) * i128::from(value) + i128::from(paid) - 1)
            / i128::from(paid);
        i64::try_from(share).unwrap_or(i64::MAX)
    }

    /// The largest refund that counts at most `cap_left` toward the cap.
    pub fn most_within(&self, cap_left: i64) -> i64 {
        let value = self.cap_value_minor.unwrap_or(0);
        if value <= 0 {
            return self.amount_paid_minor;
        }
        let most =
            i128::from(cap_left.max(0)) * i128::from(self.amount_paid_minor) / i128::from(value);
        i64::try_from(most)
            .unwrap_or(i64::MAX)
            .min(self.amount_paid_minor)
    }
}

/// Whether a subscription can be cancelled at `at` with a refund of
/// `refund_minor` in `currency`: inside the window (at < cancellable_until),
/// the refund between 0 and what the policy gives then, and within
/// `cap_left` (what the customer's cap leaves, when one applies).
pub fn check_cancellation(
    terms: &CancellationTerms,
    at: Micros,
    refund_minor: i64,
    currency: &str,
    cap_left: Option<i64>,
) -> Result<(), ApiError> {
    if at >= terms.cancellable_until {
        return Err(window_closed(terms));
    }
    if currency != terms.currency_code {
        return Err(ApiError::invalid(
            "refund.currency_code",
            format!(
                "the order was paid in {}, not {currency}",
                terms.currency_code
            ),
        ));
    }
    let by_policy = terms.policy_refund(at);
    if refund_minor < 0 || refund_minor > by_policy {
        return Err(ApiError::invalid(
            "refund.minor_units",
            format!(
                "the refund must be from 0 to the {by_policy} {} that policy {} (version {}) refunds of the {} paid, not {refund_minor}",
                terms.currency_code, terms.policy.id, terms.policy.version, terms.amount_paid_minor
            ),
        ));
    }
    if let (Some(left), Some(cap)) = (cap_left, terms.cap())
        && terms.in_cap_currency(refund_minor) > left
    {
        return Err(cap_exceeded(terms, cap, left));
    }
    Ok(())
}

/// FAILED_PRECONDITION `REFUND_CAP_EXCEEDED`: the customer's refunds would
/// pass the policy's cap.
pub fn cap_exceeded(terms: &CancellationTerms, cap: &RefundCap, left: i64) -> ApiError {
    ApiError::failed_precondition(
        "REFUND_CAP_EXCEEDED",
        format!("subscription/{}", terms.subscription_id),
        format!(
            "policy {} caps a customer's refunds at {} {} per {} days; {left} {} is left of it",
            terms.policy.id, cap.amount_minor, cap.currency, cap.period_days, cap.currency
        ),
    )
}

/// FAILED_PRECONDITION for a closed window, naming the window, the purchase
/// date and the deadline.
pub fn window_closed(terms: &CancellationTerms) -> ApiError {
    ApiError::failed_precondition(
        "CANCELLATION_WINDOW_CLOSED",
        format!("subscription/{}", terms.subscription_id),
        format!(
            "You have passed the {}: subscription {} was purchased on {} and could be cancelled until {} \
             (policy {}, version {})",
            terms.policy.describe_window(),
            terms.subscription_id,
            clock::to_rfc3339(terms.purchased_at),
            clock::to_rfc3339(terms.cancellable_until),
            terms.policy.id,
            terms.policy.version
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use csp_kit::clock::SECOND;

    #[test]
    fn domain_names_are_normalized_or_refused() {
        assert_eq!(
            parse_domain_name("d", " Contoso.OnMicrosoft.com. ").unwrap(),
            "contoso.onmicrosoft.com"
        );
        assert_eq!(parse_domain_name("d", "a-b.co").unwrap(), "a-b.co");
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "a b.com",
            "a_b.com",
            "1.2.3.4",
            "ü.com",
        ] {
            assert!(parse_domain_name("d", bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_domain_name("d", &format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn lines_are_checked_field_by_field() {
        assert!(check_lines(&[]).is_err());
        let Err(ApiError::InvalidArgument(v)) = check_lines(&[
            ("sku".into(), 1),
            ("".into(), 0),
            ("sku".into(), MAX_QUANTITY + 1),
        ]) else {
            panic!("expected INVALID_ARGUMENT")
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["lines[1].sku_id", "lines[1].quantity", "lines[2].quantity"]
        );
        assert!(check_lines(&[("a".into(), MAX_QUANTITY)]).is_ok());
    }

    #[test]
    fn fingerprints_tell_orders_apart() {
        let c = Uuid::new_v4();
        let line = |sku: &str, q| LineRequest {
            sku_id: sku.into(),
            quantity: q,
        };
        let a = fingerprint(c, &[line("x", 1)]);
        assert_eq!(a, fingerprint(c, &[line("x", 1)]));
        assert_ne!(a, fingerprint(c, &[line("x", 2)]));
        assert_ne!(a, fingerprint(Uuid::new_v4(), &[line("x", 1)]));
        assert_ne!(
            fingerprint(c, &[line("ab", 1)]),
            fingerprint(c, &[line("a", 1), line("b", 1)])
        );
    }

    fn terms(purchased_at: Micros) -> CancellationTerms {
        let policy = SoldPolicy::article(60);
        let term_ends_at = term_end(purchased_at, Term::OneYear);
        CancellationTerms {
            subscription_id: "s".into(),
            purchased_at,
            cancellable_until: policy.window_end(purchased_at, term_ends_at),
            term_ends_at,
            amount_paid_minor: 1000,
            currency_code: "USD".into(),
            policy,
            cap_value_minor: None,
        }
    }

    #[test]
    fn cancellable_one_second_before_sixty_days_but_not_at() {
        let t = terms(1_700_000_000 * SECOND);
        let deadline = t.purchased_at + 60 * DAY;
        assert!(check_cancellation(&t, deadline - SECOND, 1000, "USD", None).is_ok());
        let closed = check_cancellation(&t, deadline, 1000, "USD", None).unwrap_err();
        let text = closed.to_string();
        assert!(text.contains("60-day cancellation window"), "{text}");
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("2024-01-13T22:13:20Z"), "{text}");
    }

    #[test]
    fn refunds_are_at_most_what_was_paid_in_its_currency() {
        let t = terms(0);
        assert!(check_cancellation(&t, 0, 0, "USD", None).is_ok());
        assert!(check_cancellation(&t, 0, 1001, "USD", None).is_err());
        assert!(check_cancellation(&t, 0, -1, "USD", None).is_err());
        assert!(check_cancellation(&t, 0, 10, "EUR", None).is_err());
    }

    #[test]
    fn billing_months_are_utc_calendar_months() {
        let (from, until) = billing_month("month", "2026-12").unwrap();
        assert_eq!(clock::to_date(from), "2026-12-01");
        assert_eq!(clock::to_date(until), "2027-01-01");
        let (from, until) = billing_month("month", "2028-02").unwrap();
        assert_eq!((until - from) / DAY, 29);
        assert!(billing_month("month", "9999-12").is_ok());
        for bad in ["", "2026-13", "2026-1", "26-12", "2026-12-01", "december"] {
            assert!(billing_month("month", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prorated_refunds_count_whole_units_left_and_round_down() {
        let start = clock::parse_date("2026-12-01").unwrap();
        let end = term_end(start, Term::OneYear);
        assert_eq!((end - start) / DAY, 365);
        let refund = |rule, at| policy_refund(rule, 876_000, start, end, at);
        assert_eq!(refund(RefundRule::Full, end - 1), 876_000);
        assert_eq!(refund(RefundRule::ProratedByHour, start), 876_000);
        // A started hour is used.
        assert_eq!(refund(RefundRule::ProratedByHour, start + 1), 875_900);
        assert_eq!(refund(RefundRule::ProratedByHour, start + HOUR), 875_900);
        // One day and a moment gone: two days used, 363 of 365 left.
        assert_eq!(refund(RefundRule::ProratedByDay, start + DAY + 1), 871_200);
        assert_eq!(refund(RefundRule::ProratedByDay, end), 0);
        // 1,000 over 365 days, 100 days left: 273.97... rounds down.
        assert_eq!(
            policy_refund(
                RefundRule::ProratedByDay,
                1_000,
                start,
                end,
                end - 100 * DAY
            ),
            273
        );
    }

    #[test]
    fn windows_end_by_their_unit_and_never_after_the_term() {
        let start = clock::parse_date("2026-12-01").unwrap();
        let end = term_end(start, Term::OneYear);
        let hours = SoldPolicy {
            window_unit: WindowUnit::Hours,
            window_amount: Some(168),
            ..SoldPolicy::article(0)
        };
        assert_eq!(hours.window_end(start, end), start + 168 * HOUR);
        assert_eq!(hours.window_days(), 7);
        assert!(hours.describe_window().starts_with("168-hour"));
        let term = SoldPolicy {
            window_unit: WindowUnit::Term,
            window_amount: None,
            ..SoldPolicy::article(0)
        };
        assert_eq!(term.window_end(start, end), end);
        assert_eq!(SoldPolicy::article(400).window_end(start, end), end);
    }

    #[test]
    fn refunds_count_toward_a_cap_in_its_currency_at_the_price_lists_rate() {
        // 33,580.00 EUR paid, worth 36,500.00 USD in the same price list.
        let terms = CancellationTerms {
            subscription_id: "s".into(),
            purchased_at: 0,
            cancellable_until: DAY,
            term_ends_at: DAY,
            amount_paid_minor: 3_358_000,
            currency_code: "EUR".into(),
            policy: SoldPolicy {
                cap: Some(RefundCap {
                    amount_minor: 5_000_000,
                    currency: "USD".into(),
                    period_days: 365,
                }),
                ..SoldPolicy::article(1)
            },
            cap_value_minor: Some(3_650_000),
        };
        assert_eq!(terms.in_cap_currency(3_358_000), 3_650_000);
        assert_eq!(terms.in_cap_currency(1), 2); // rounded up
        // 13,500.00 USD left of the cap: at most 12,420.00 EUR.
        assert_eq!(terms.most_within(1_350_000), 1_242_000);
        assert_eq!(terms.in_cap_currency(1_242_000), 1_350_000);
        assert!(check_cancellation(&terms, 0, 1_242_000, "EUR", Some(1_350_000)).is_ok());
        assert!(check_cancellation(&terms, 0, 1_242_001, "EUR", Some(1_350_000)).is_err());
    }

    #[test]
    fn amounts_refuse_overflow() {
        assert_eq!(line_amount(250, 4, 0).unwrap(), 1000);
        assert!(line_amount(i64::MAX, 2, 3).is_err());
    }
}
