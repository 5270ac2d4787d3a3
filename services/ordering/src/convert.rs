//! The domain's entities in the contract's messages, and the events the
//! outbox carries.

use csp_kit::clock::{Micros, to_timestamp};
use csp_kit::identity::UserCaller;
use csp_proto::catalog::v1 as catalog;
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1 as pb;

use crate::domain::{
    Customer, Order, OrderStatus, ProductKind, Subscription, SubscriptionStatus, Term,
};

fn money(currency: &str, digits: i32, minor_units: i64) -> Money {
    Money {
        currency_code: currency.to_owned(),
        minor_units,
        minor_unit_digits: u32::try_from(digits).unwrap_or(2),
    }
}

fn kind(kind: ProductKind) -> i32 {
    let kind = match kind {
        ProductKind::ServerSubscription => catalog::ProductKind::ServerSubscription,
        ProductKind::AzureReservation => catalog::ProductKind::AzureReservation,
    };
    kind as i32
}

fn term(term: Term) -> i32 {
    let term = match term {
        Term::OneYear => catalog::Term::OneYear,
        Term::ThreeYears => catalog::Term::ThreeYears,
    };
    term as i32
}

/// A customer.
pub fn customer(c: &Customer) -> pb::Customer {
    pb::Customer {
        tenant_id: c.tenant_id.to_string(),
        domain_name: c.domain_name.clone(),
        company_name: c.company_name.clone(),
        market: c.market.clone(),
        create_time: Some(to_timestamp(c.created_at)),
    }
}

/// An order.
pub fn order(o: &Order) -> pb::Order {
    pb::Order {
        id: o.id.to_string(),
        customer_tenant_id: o.customer_tenant_id.to_string(),
        status: match o.status {
            OrderStatus::Completed => pb::OrderStatus::Completed,
            OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        } as i32,
        lines: o
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                line_number: l.line_number,
                sku_id: l.sku_id.clone(),
                product_id: l.product_id.clone(),
                product_title: l.product_title.clone(),
                product_kind: kind(l.product_kind),
                term: term(l.term),
                quantity: l.quantity,
                unit_price: Some(money(
                    &o.currency_code,
                    o.minor_unit_digits,
                    l.unit_price_minor,
                )),
                amount: Some(money(&o.currency_code, o.minor_unit_digits, l.amount_minor)),
                tax_included: o.tax_included,
                subscription_id: l.subscription_id.to_string(),
            })
            .collect(),
        total: Some(money(&o.currency_code, o.minor_unit_digits, o.total_minor)),
        tax_included: o.tax_included,
        request_id: o.request_id.to_string(),
        placed_by_user_id: o.placed_by_user_id.clone(),
        create_time: Some(to_timestamp(o.created_at)),
        price_list_version: o.price_list_version,
    }
}

/// A subscription.
pub fn subscription(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id.to_string(),
        customer_tenant_id: s.customer_tenant_id.to_string(),
        order_id: s.order_id.to_string(),
        product_id: s.product_id.clone(),
        product_kind: kind(s.product_kind),
        sku_id: s.sku_id.clone(),
        status: match s.status {
            SubscriptionStatus::Active => pb::SubscriptionStatus::Active,
            SubscriptionStatus::Cancelled => pb::SubscriptionStatus::Cancelled,
        } as i32,
        quantity: s.quantity,
        amount_paid: Some(money(
            &s.currency_code,
            s.minor_unit_digits,
            s.amount_paid_minor,
        )),
        purchase_time: Some(to_timestamp(s.purchased_at)),
        cancellable_until: Some(to_timestamp(s.cancellable_until)),
        cancel_time: s.cancelled_at.map(to_timestamp),
        refunded: s
            .refunded_minor
            .map(|r| money(&s.currency_code, s.minor_unit_digits, r)),
        cancellation_policy_id: s.policy.id.clone(),
        cancellation_policy_version: s.policy.version,
        term_end_time: Some(to_timestamp(s.term_ends_at)),
    }
}

/// The "order placed" event for licensing.
pub fn order_placed(
    event_id: &str,
    user: &UserCaller,
    placed: &Order,
    subscriptions: &[Subscription],
) -> pb::OrderingEvent {
    pb::OrderingEvent {
        event_id: event_id.to_owned(),
        occur_time: Some(to_timestamp(placed.created_at)),
        partner_id: placed.partner_id.to_string(),
        user_id: user.user_id.clone(),
        payload: Some(pb::ordering_event::Payload::OrderPlaced(pb::OrderPlaced {
            order: Some(order(placed)),
            subscriptions: subscriptions.iter().map(subscription).collect(),
        })),
    }
}

/// The "subscription cancelled" event for licensing.
pub fn subscription_cancelled(
    event_id: &str,
    actor: &str,
    at: Micros,
    cancelled: &Subscription,
    ticket_id: &str,
) -> pb::OrderingEvent {
    pb::OrderingEvent {
        event_id: event_id.to_owned(),
        occur_time: Some(to_timestamp(at)),
        partner_id: cancelled.partner_id.to_string(),
        user_id: actor.to_owned(),
        payload: Some(pb::ordering_event::Payload::SubscriptionCancelled(
            pb::SubscriptionCancelled {
                subscription: Some(subscription(cancelled)),
                ticket_id: ticket_id.to_owned(),
            },
        )),
    }
}

/// A billing line item.
pub fn line_item(item: &crate::domain::BillingLineItem) -> pb::BillingLineItem {
    let m = |minor| money(&item.currency_code, item.minor_unit_digits, minor);
    pb::BillingLineItem {
        id: item.id.clone(),
        charge_type: match item.charge_type {
            crate::domain::ChargeType::Purchase => pb::ChargeType::Purchase,
            crate::domain::ChargeType::Refund => pb::ChargeType::Refund,
        } as i32,
        billed_time: Some(to_timestamp(item.billed_at)),
        order_id: item.order_id.to_string(),
        subscription_id: item.subscription_id.to_string(),
        customer_tenant_id: item.customer_tenant_id.to_string(),
        sku_id: item.sku_id.clone(),
        product_id: item.product_id.clone(),
        market: item.market.clone(),
        quantity: item.quantity,
        unit_price: Some(m(item.unit_price_minor)),
        amount: Some(m(item.amount_minor)),
        price_list_version: item.price_list_version,
        cancellation_policy_id: item.policy_id.clone(),
        cancellation_policy_version: item.policy_version,
        tax_included: item.tax_included,
    }
}

/// One currency's statement of a month.
pub fn statement(s: &crate::domain::CurrencyStatement) -> pb::CurrencyStatement {
    let m = |minor| money(&s.currency_code, s.minor_unit_digits, minor);
    pb::CurrencyStatement {
        currency_code: s.currency_code.clone(),
        opening_balance: Some(m(s.opening_minor)),
        charges: Some(m(s.charges_minor)),
        credits: Some(m(s.credits_minor)),
        total: Some(m(s.total_minor())),
        closing_balance: Some(m(s.closing_minor())),
        line_item_count: s.line_items,
    }
}
