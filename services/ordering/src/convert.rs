//! Stored rows to the contract's messages, and the events the outbox carries.

use csp_kit::clock::{Micros, to_timestamp};
use csp_kit::identity::UserCaller;
use csp_proto::catalog::v1::{ProductKind, Term};
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1 as pb;

use crate::storage::{Customer, Order, Subscription};

fn money(currency: &str, digits: i32, minor_units: i64) -> Money {
    Money {
        currency_code: currency.to_owned(),
        minor_units,
        minor_unit_digits: u32::try_from(digits).unwrap_or(2),
    }
}

/// The stored spelling of a product kind; `None` for a kind this version
/// does not know (never stored as a default: a default kind could get
/// software entitlements it should not).
pub fn kind_to_db(kind: i32) -> Option<&'static str> {
    match ProductKind::try_from(kind) {
        Ok(ProductKind::AzureReservation) => Some("azure_reservation"),
        Ok(ProductKind::ServerSubscription) => Some("server_subscription"),
        _ => None,
    }
}

fn kind_to_pb(kind: &str) -> i32 {
    match kind {
        "azure_reservation" => ProductKind::AzureReservation as i32,
        "server_subscription" => ProductKind::ServerSubscription as i32,
        _ => ProductKind::Unspecified as i32,
    }
}

/// The stored spelling of a term.
pub fn term_to_db(term: i32) -> &'static str {
    match Term::try_from(term) {
        Ok(Term::ThreeYears) => "P3Y",
        _ => "P1Y",
    }
}

fn term_to_pb(term: &str) -> i32 {
    match term {
        "P1Y" => Term::OneYear as i32,
        "P3Y" => Term::ThreeYears as i32,
        _ => Term::Unspecified as i32,
    }
}

/// A customer.
pub fn customer(c: &Customer) -> pb::Customer {
    pb::Customer {
        tenant_id: c.tenant_id.clone(),
        domain_name: c.domain_name.clone(),
        company_name: c.company_name.clone(),
        market: c.market.clone(),
        create_time: Some(to_timestamp(c.created_at)),
    }
}

/// An order.
pub fn order(o: &Order) -> pb::Order {
    pb::Order {
        id: o.id.clone(),
        customer_tenant_id: o.customer_tenant_id.clone(),
        status: match o.status.as_str() {
            "cancelled" => pb::OrderStatus::Cancelled,
            _ => pb::OrderStatus::Completed,
        } as i32,
        lines: o
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                line_number: l.line_number,
                sku_id: l.sku_id.clone(),
                product_id: l.product_id.clone(),
                product_title: l.product_title.clone(),
                product_kind: kind_to_pb(&l.product_kind),
                term: term_to_pb(&l.term),
                quantity: l.quantity,
                unit_price: Some(money(
                    &o.currency_code,
                    o.minor_unit_digits,
                    l.unit_price_minor,
                )),
                amount: Some(money(&o.currency_code, o.minor_unit_digits, l.amount_minor)),
                tax_included: o.tax_included,
                subscription_id: l.subscription_id.clone(),
            })
            .collect(),
        total: Some(money(&o.currency_code, o.minor_unit_digits, o.total_minor)),
        tax_included: o.tax_included,
        request_id: o.request_id.clone(),
        placed_by_user_id: o.placed_by_user_id.clone(),
        create_time: Some(to_timestamp(o.created_at)),
    }
}

/// A subscription.
pub fn subscription(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id.clone(),
        customer_tenant_id: s.customer_tenant_id.clone(),
        order_id: s.order_id.clone(),
        product_id: s.product_id.clone(),
        product_kind: kind_to_pb(&s.product_kind),
        sku_id: s.sku_id.clone(),
        status: match s.status.as_str() {
            "cancelled" => pb::SubscriptionStatus::Cancelled,
            _ => pb::SubscriptionStatus::Active,
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
    }
}

/// The "order placed" event for licensing.
pub fn order_placed(
    event_id: &str,
    user: &UserCaller,
    order_row: &Order,
    subscriptions: &[Subscription],
) -> pb::OrderingEvent {
    pb::OrderingEvent {
        event_id: event_id.to_owned(),
        occur_time: Some(to_timestamp(order_row.created_at)),
        partner_id: order_row.partner_id.clone(),
        user_id: user.user_id.clone(),
        payload: Some(pb::ordering_event::Payload::OrderPlaced(pb::OrderPlaced {
            order: Some(order(order_row)),
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
        partner_id: cancelled.partner_id.clone(),
        user_id: actor.to_owned(),
        payload: Some(pb::ordering_event::Payload::SubscriptionCancelled(
            pb::SubscriptionCancelled {
                subscription: Some(subscription(cancelled)),
                ticket_id: ticket_id.to_owned(),
            },
        )),
    }
}
