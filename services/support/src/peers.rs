//! The services support calls, with its signed identity: ordering (resolve
//! and cancel purchases) and licensing (revoke keys and links). Answers are
//! read into the domain's terms here; a peer's failure is read once, by
//! [`PeerError`].

use csp_kit::clock::Micros;
use csp_kit::ids::{PartnerId, SubscriptionId};
use csp_kit::peer::{Failure, PeerError, PeerResult as _, Signed};
use csp_kit::{ApiError, ApiResult};
use csp_proto::common::v1::Money;
use csp_proto::licensing::v1::RevokeSubscriptionRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_proto::ordering::v1::{
    CancelSubscriptionRequest, ResolveRefundTargetRequest, resolve_refund_target_request,
};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::domain::{CustomerNamed, TargetNamed};

/// INTERNAL: ordering's answer lacks a field (an older ordering: upgrade
/// ordering before support).
fn incomplete(field: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "ordering answered ResolveRefundTarget without {field}"
    ))
}

/// A subscription a refund may cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refundable {
    /// The subscription.
    pub id: SubscriptionId,
    /// Its customer's tenant id.
    pub customer_tenant_id: String,
    /// What was paid for it, minor units.
    pub paid_minor: i64,
    /// What cancelling it now refunds (its policy, the customer's cap).
    pub refundable_minor: i64,
}

/// What ordering found for a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The active subscriptions named, in order.
    pub subscriptions: Vec<Refundable>,
    /// What was paid for them, minor units.
    pub paid_minor: i64,
    /// What cancelling them now refunds, minor units.
    pub refundable_minor: i64,
    /// The first of their windows' ends.
    pub deadline: Micros,
    /// In what currency.
    pub currency_code: String,
    /// Its minor unit digits.
    pub minor_unit_digits: u32,
}

/// A refund step's cancellation, as ordering is asked for it.
#[derive(Clone, Debug)]
pub struct Cancel<'a> {
    /// The partner.
    pub partner_id: PartnerId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Its share of the refund.
    pub refund: Money,
    /// Why.
    pub reason: &'a str,
    /// The ticket.
    pub ticket_id: String,
    /// When the customer asked (the ticket's filing).
    pub requested_at: Micros,
}

/// Ordering and licensing, as support uses them.
#[derive(Clone, Debug)]
pub struct Peers {
    ordering: OrderingInternalServiceClient<Signed>,
    licensing: LicensingInternalServiceClient<Signed>,
}

impl Peers {
    /// Over the two channels.
    pub fn new(ordering: Signed, licensing: Signed) -> Self {
        Self {
            ordering: OrderingInternalServiceClient::new(ordering),
            licensing: LicensingInternalServiceClient::new(licensing),
        }
    }

    /// What a refund may cancel, as ordering checks it now: NOT_FOUND for
    /// an unknown (or another partner's) customer, order or subscription,
    /// FAILED_PRECONDITION when nothing can be cancelled.
    pub async fn resolve(
        &self,
        partner: PartnerId,
        customer: &CustomerNamed,
        target: &TargetNamed,
    ) -> ApiResult<Resolved> {
        use resolve_refund_target_request::{Customer, Target};
        let customer = match customer {
            CustomerNamed::Tenant(id) => Customer::CustomerTenantId(id.clone()),
            CustomerNamed::Domain(name) => Customer::CustomerDomainName(name.clone()),
        };
        let target = match target {
            TargetNamed::Order(id) => Target::OrderId(id.clone()),
            TargetNamed::Subscription(id) => Target::SubscriptionId(id.clone()),
        };
        let answer = self
            .ordering
            .clone()
            .resolve_refund_target(ResolveRefundTargetRequest {
                partner_id: partner.to_string(),
                customer: Some(customer),
                target: Some(target),
            })
            .await
            .peer("ordering")
            .map_err(refused)?;
        let paid = answer.amount_paid.clone().unwrap_or_default();
        if answer.refundable_amounts.len() != answer.subscriptions.len() {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "ordering sent {} refundable amounts for {} subscriptions",
                answer.refundable_amounts.len(),
                answer.subscriptions.len()
            )));
        }
        let subscriptions = answer
            .subscriptions
            .iter()
            .zip(&answer.refundable_amounts)
            .map(|(s, refundable)| {
                Ok(Refundable {
                    id: s.id.parse().map_err(|_| {
                        ApiError::Internal(anyhow::anyhow!(
                            "ordering named a subscription whose id is not a UUID"
                        ))
                    })?,
                    customer_tenant_id: s.customer_tenant_id.clone(),
                    paid_minor: s.amount_paid.as_ref().map_or(0, |m| m.minor_units),
                    refundable_minor: refundable.minor_units,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Resolved {
            subscriptions,
            paid_minor: paid.minor_units,
            refundable_minor: answer
                .amount_refundable
                .as_ref()
                .map(|m| m.minor_units)
                .ok_or_else(|| incomplete("amount_refundable"))?,
            deadline: answer
                .refund_deadline
                .as_ref()
                .and_then(csp_kit::clock::from_timestamp)
                .ok_or_else(|| incomplete("refund_deadline"))?,
            currency_code: paid.currency_code,
            minor_unit_digits: paid.minor_unit_digits,
        })
    }

    /// Cancels a subscription in ordering (idempotent).
    pub async fn cancel(&self, cancel: Cancel<'_>) -> Result<(), PeerError> {
        self.ordering
            .clone()
            .cancel_subscription(CancelSubscriptionRequest {
                partner_id: cancel.partner_id.to_string(),
                subscription_id: cancel.subscription_id.to_string(),
                refund: Some(cancel.refund),
                reason: cancel.reason.to_owned(),
                ticket_id: cancel.ticket_id,
                requested_time: Some(csp_kit::clock::to_timestamp(cancel.requested_at)),
            })
            .await
            .peer("ordering")
            .map(drop)
    }

    /// Revokes a subscription's keys and links in licensing (idempotent).
    pub async fn revoke(
        &self,
        partner: PartnerId,
        subscription: SubscriptionId,
    ) -> Result<(), PeerError> {
        self.licensing
            .clone()
            .revoke_subscription(RevokeSubscriptionRequest {
                partner_id: partner.to_string(),
                subscription_id: subscription.to_string(),
            })
            .await
            .peer("licensing")
            .map(drop)
    }
}

/// Ordering's refusal to resolve a refund, as the support API states it.
fn refused(error: PeerError) -> ApiError {
    if error.failure == Failure::Transient {
        return error.into();
    }
    let status = &error.status;
    match status.code() {
        Code::NotFound => {
            let what = status
                .get_error_details()
                .resource_info()
                .map(|r| r.resource_type.clone())
                .unwrap_or_else(|| "customer, order or subscription".to_owned());
            ApiError::not_found(
                "refund target",
                format!("{what} named by the refund ({})", status.message()),
            )
        }
        Code::FailedPrecondition => {
            let subject = status
                .get_error_details()
                .precondition_failure()
                .and_then(|p| p.violations.first().map(|v| v.subject.clone()))
                .unwrap_or_default();
            ApiError::failed_precondition(
                "CANCELLATION_NOT_POSSIBLE",
                subject,
                status.message().to_owned(),
            )
        }
        Code::InvalidArgument => ApiError::invalid("refund", status.message().to_owned()),
        _ => error.into(),
    }
}
