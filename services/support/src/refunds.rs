//! The refund workflow: a durable process over `refund_steps`. Each step
//! cancels one subscription in ordering (no fee, the refund allotted to it),
//! then revokes its keys and links in licensing; both calls are idempotent,
//! so a step repeated after a crash or an outage changes nothing. A failure
//! that may pass (a service down) is retried with backoff; one that cannot
//! (the window closed meanwhile) fails the step. When no step is left to
//! run, the ticket is RESOLVED with what was refunded, or REJECTED with why
//! ([`domain::refund_outcome`]). On PostgreSQL one replica runs the steps at
//! a time (advisory lock).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use csp_kit::backoff::Backoff;
use csp_kit::clock::{Clock, Micros};
use csp_kit::ids::{PartnerId, TicketId};
use csp_kit::peer::PeerError;
use csp_kit::shutdown::Shutdown;
use csp_kit::{ApiResult, clock};
use csp_proto::audit::v1::ActivityType;
use csp_proto::common::v1::Money;
use csp_store::outbox::Message;
use tokio::sync::Notify;

use crate::domain::{self, Step, StepState, Ticket};
use crate::peers::{Cancel, Peers};
use crate::storage::SupportStore;
use crate::use_cases::ticket_activity;

/// The advisory lock one replica holds while it runs refund steps (the key
/// every release has used, so replicas of two releases still take turns).
const LOCK: i64 = 0x00c5_705e_f00d;

/// How a step that met an unavailable service is retried.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// Runs refund steps.
pub struct Refunds {
    store: SupportStore,
    peers: Peers,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl Refunds {
    /// A runner over `store`.
    pub fn new(store: SupportStore, peers: Peers, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            peers,
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
        let mut loaded: HashMap<TicketId, Ticket> = HashMap::new();
        for step in steps {
            tickets.insert((step.partner_id, step.ticket_id));
            let ticket = match loaded.entry(step.ticket_id) {
                Entry::Occupied(found) => found.into_mut(),
                Entry::Vacant(slot) => {
                    match self.store.ticket(step.partner_id, step.ticket_id).await? {
                        Some(ticket) => slot.insert(ticket),
                        None => continue,
                    }
                }
            };
            self.advance(ticket, step).await?;
        }
        for (partner, ticket_id) in tickets {
            self.maybe_finish(partner, ticket_id).await?;
        }
        Ok(())
    }

    async fn advance(&self, ticket: &Ticket, mut step: Step) -> ApiResult<()> {
        if step.state == StepState::Pending {
            let cancelled = self
                .peers
                .cancel(Cancel {
                    partner_id: step.partner_id,
                    subscription_id: step.subscription_id,
                    refund: Money {
                        currency_code: ticket.refund_currency_code.clone().unwrap_or_default(),
                        minor_units: step.refund_minor,
                        minor_unit_digits: u32::try_from(
                            ticket.refund_minor_unit_digits.unwrap_or(2),
                        )
                        .unwrap_or(2),
                    },
                    reason: ticket.refund_reason.as_deref().unwrap_or_default(),
                    ticket_id: ticket.id.to_string(),
                    requested_at: ticket.created_at,
                })
                .await;
            match cancelled {
                Ok(()) => {
                    self.store
                        .set_step(&step, StepState::Cancelled, None)
                        .await?;
                    step.state = StepState::Cancelled;
                }
                Err(error) if !error.is_transient() => {
                    let reason = error.status.message();
                    tracing::warn!(ticket_id = %ticket.id, subscription_id = %step.subscription_id, reason, "refund step failed");
                    self.store
                        .set_step(&step, StepState::Failed, Some(reason))
                        .await?;
                    return Ok(());
                }
                Err(error) => return self.later(&step, &error).await,
            }
        }
        // NOT_FOUND: nothing to revoke yet (an Azure reservation, or the
        // order's event has not reached licensing; the cancellation event
        // follows it in the same stream and revokes it there).
        match self
            .peers
            .revoke(step.partner_id, step.subscription_id)
            .await
        {
            Err(error) if !error.is_not_found() => self.later(&step, &error).await,
            _ => Ok(self.store.set_step(&step, StepState::Done, None).await?),
        }
    }

    async fn later(&self, step: &Step, error: &PeerError) -> ApiResult<()> {
        let delay = RETRY.delay(step.attempts + 1);
        let error = error.describe();
        tracing::warn!(ticket_id = %step.ticket_id, subscription_id = %step.subscription_id, retry_in_ms = delay.as_millis() as u64, error, "refund step postponed");
        let next = clock::SystemClock.now() + delay.as_micros() as Micros;
        Ok(self.store.retry_step(step, next, &error).await?)
    }

    async fn maybe_finish(&self, partner: PartnerId, ticket_id: TicketId) -> ApiResult<()> {
        let steps = self.store.steps_of(ticket_id).await?;
        let Some(outcome) = domain::refund_outcome(&steps) else {
            return Ok(());
        };
        let now = self.clock.now();
        let Some(ticket) = self.store.ticket(partner, ticket_id).await? else {
            return Ok(());
        };
        let activity = ticket_activity(&ticket, ActivityType::RefundTicketResolved, now)
            .detail("status", outcome.status)
            .detail("refunded_minor", outcome.refunded_minor)
            .detail(
                "currency_code",
                ticket.refund_currency_code.as_deref().unwrap_or_default(),
            );
        let message = Message::activity(ticket.id, activity);
        if self
            .store
            .finish(ticket_id, &outcome, &[message], now)
            .await?
        {
            tracing::info!(ticket_id = %ticket_id, status = %outcome.status, refunded = outcome.refunded_minor, "refund ticket finished");
        }
        Ok(())
    }
}
