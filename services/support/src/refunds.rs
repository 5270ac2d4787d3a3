//! The refund workflow: a durable process over `refund_steps`. Each step
//! cancels one subscription in ordering (no fee, the refund allotted to it),
//! then revokes its keys and links in licensing; both calls are idempotent,
//! so a step repeated after a crash or an outage changes nothing. A failure
//! that may pass (a service down) is retried with backoff; one that cannot
//! (the window closed meanwhile) fails the step. When no step is left to
//! run, the ticket is RESOLVED with what was refunded, or REJECTED with why.
//! On PostgreSQL one replica runs the steps at a time (advisory lock).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use csp_kit::activity::Activity;
use csp_kit::backoff::Backoff;
use csp_kit::clock::{Clock, Micros};
use csp_kit::ids::PartnerId;
use csp_kit::peer::{Failure, PeerError, PeerResult as _, Signed};
use csp_kit::shutdown::Shutdown;
use csp_kit::{ApiResult, clock};
use csp_proto::audit::v1::ActivityType;
use csp_proto::common::v1::Money;
use csp_proto::licensing::v1::RevokeSubscriptionRequest;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::ordering::v1::CancelSubscriptionRequest;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_store::outbox::Message;
use tokio::sync::Notify;

use crate::storage::{Step, SupportStore, Ticket};

/// Runs refund steps.
pub struct Refunds {
    store: SupportStore,
    ordering: OrderingInternalServiceClient<Signed>,
    licensing: LicensingInternalServiceClient<Signed>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl Refunds {
    /// A runner over `store`.
    pub fn new(
        store: SupportStore,
        ordering: Signed,
        licensing: Signed,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ordering: OrderingInternalServiceClient::new(ordering),
            licensing: LicensingInternalServiceClient::new(licensing),
            clock,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify this after a refund ticket was stored.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            if let Err(error) = self.pass_locked().await {
                tracing::warn!(error = %error, "refund workflow pass failed");
            }
            tokio::select! {
                _ = shutdown.clone().wait() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// One pass, by one replica at a time.
    async fn pass_locked(&self) -> anyhow::Result<()> {
        csp_store::lock::exclusively(self.store.db(), LOCK, self.pass())
            .await?
            .unwrap_or(Ok(()))?;
        Ok(())
    }

    /// Runs every due step once, then ends the tickets that are done.
    pub async fn pass(&self) -> ApiResult<()> {
        let steps = self.store.due_steps(clock::SystemClock.now(), 50).await?;
        let mut tickets = BTreeSet::new();
        let mut loaded: HashMap<String, Ticket> = HashMap::new();
        for step in steps {
            tickets.insert((step.partner_id.clone(), step.ticket_id.clone()));
            if !loaded.contains_key(&step.ticket_id) {
                match self.store.ticket(&step.partner_id, &step.ticket_id).await? {
                    Some(ticket) => {
                        loaded.insert(step.ticket_id.clone(), ticket);
                    }
                    None => continue,
                }
            }
            if let Some(ticket) = loaded.get(&step.ticket_id) {
                self.advance(ticket, step).await?;
            }
        }
        for (partner, ticket_id) in tickets {
            self.maybe_finish(&partner, &ticket_id).await?;
        }
        Ok(())
    }

    async fn advance(&self, ticket: &Ticket, mut step: Step) -> ApiResult<()> {
        if step.state == "pending" {
            let cancelled = self
                .ordering
                .clone()
                .cancel_subscription(CancelSubscriptionRequest {
                    partner_id: step.partner_id.clone(),
                    subscription_id: step.subscription_id.clone(),
                    refund: Some(Money {
                        currency_code: ticket.refund_currency_code.clone().unwrap_or_default(),
                        minor_units: step.refund_minor,
                        minor_unit_digits: u32::try_from(
                            ticket.refund_minor_unit_digits.unwrap_or(2),
                        )
                        .unwrap_or(2),
                    }),
                    reason: ticket.refund_reason.clone().unwrap_or_default(),
                    ticket_id: ticket.id.clone(),
                })
                .await
                .peer("ordering");
            match cancelled {
                Ok(_) => {
                    self.store.set_step(&step, "cancelled", None).await?;
                    step.state = "cancelled".to_owned();
                }
                Err(error) if !error.is_transient() => {
                    let reason = error.status.message();
                    tracing::warn!(ticket_id = %ticket.id, subscription_id = %step.subscription_id, reason, "refund step failed");
                    return Ok(self.store.set_step(&step, "failed", Some(reason)).await?);
                }
                Err(error) => return self.later(&step, &error).await,
            }
        }
        let revoked = self
            .licensing
            .clone()
            .revoke_subscription(RevokeSubscriptionRequest {
                partner_id: step.partner_id.clone(),
                subscription_id: step.subscription_id.clone(),
            })
            .await
            .peer("licensing");
        match revoked {
            // NOT_FOUND: nothing to revoke yet (an Azure reservation, or the
            // order's event has not reached licensing; the cancellation event
            // follows it in the same stream and revokes it there).
            Ok(_) => Ok(self.store.set_step(&step, "done", None).await?),
            Err(error) if error.failure == Failure::NotFound => {
                Ok(self.store.set_step(&step, "done", None).await?)
            }
            Err(error) => self.later(&step, &error).await,
        }
    }

    async fn later(&self, step: &Step, error: &PeerError) -> ApiResult<()> {
        let delay = RETRY.delay(step.attempts + 1);
        let error = error.describe();
        tracing::warn!(ticket_id = %step.ticket_id, subscription_id = %step.subscription_id, retry_in_ms = delay.as_millis() as u64, error, "refund step postponed");
        let next = clock::SystemClock.now() + delay.as_micros() as Micros;
        Ok(self.store.retry_step(step, next, &error).await?)
    }

    async fn maybe_finish(&self, partner: &str, ticket_id: &str) -> ApiResult<()> {
        let steps = self.store.steps_of(ticket_id).await?;
        if steps
            .iter()
            .any(|(state, ..)| state == "pending" || state == "cancelled")
        {
            return Ok(());
        }
        let refunded: i64 = steps.iter().filter(|s| s.0 == "done").map(|s| s.1).sum();
        let failures: Vec<String> = steps
            .iter()
            .filter(|s| s.0 == "failed")
            .filter_map(|s| s.2.clone())
            .collect();
        let (status, rejection) = if steps.iter().any(|s| s.0 == "done") {
            let note = (!failures.is_empty()).then(|| {
                format!(
                    "not every subscription could be cancelled: {}",
                    failures.join("; ")
                )
            });
            ("resolved", note)
        } else {
            ("rejected", Some(failures.join("; ")))
        };
        let now = self.clock.now();
        let Some(ticket) = self.store.ticket(partner, ticket_id).await? else {
            return Ok(());
        };
        let message = activity(
            &ticket,
            ActivityType::RefundTicketResolved,
            now,
            HashMap::from([
                ("status".to_owned(), status.to_owned()),
                ("refunded_minor".to_owned(), refunded.to_string()),
                (
                    "currency_code".to_owned(),
                    ticket.refund_currency_code.clone().unwrap_or_default(),
                ),
            ]),
        )?;
        if self
            .store
            .finish(
                ticket_id,
                status,
                refunded,
                rejection.as_deref(),
                &[message],
                now,
            )
            .await?
        {
            tracing::info!(ticket_id, status, refunded, "refund ticket finished");
        }
        Ok(())
    }
}

/// The advisory lock one replica holds while it runs refund steps (the key
/// every release has used, so replicas of two releases still take turns).
const LOCK: i64 = 0x00c5_705e_f00d;

/// How a step that met an unavailable service is retried.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// A ticket activity for the audit log, through the outbox, in the
/// ticket's stream.
pub fn activity(
    ticket: &Ticket,
    kind: ActivityType,
    at: Micros,
    details: HashMap<String, String>,
) -> ApiResult<Message> {
    let partner: PartnerId = csp_store::error::parse("tickets.partner_id", &ticket.partner_id)?;
    let mut activity = Activity::new(partner, kind, at)
        .by(&ticket.created_by_user_id, &ticket.contact_name)
        .customer(
            ticket
                .refund_customer_tenant_id
                .as_deref()
                .unwrap_or_default(),
        )
        .subscription(ticket.refund_subscription_id.as_deref().unwrap_or_default())
        .details(details)
        .detail("ticket_id", &ticket.id);
    if let Some(order) = &ticket.refund_order_id {
        activity = activity.detail("order_id", order);
    }
    Ok(Message::activity(&ticket.id, activity))
}
