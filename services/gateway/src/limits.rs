//! Per-partner and per-user limits at the gateway, so one tenant cannot
//! take the service away from the others: a token bucket per user and one
//! per partner (the `governor` crate's GCRA, rather than a hand-written
//! limiter), and a cap on one partner's calls in flight. Over a limit a call
//! is RESOURCE_EXHAUSTED with google.rpc `RetryInfo` saying when to try
//! again (Partner Center answers 429 with `Retry-After`), and is counted in
//! `csp_gateway_limited_calls_total{scope}`.
//!
//! Large requests (a request message over `CSP_LARGE_REQUEST_BYTES`, 4 MiB by
//! default: ticket attachments) are admitted from the length their gRPC
//! message prefix declares, before anything reaches the backend: one per
//! partner at a time, and at most `CSP_LARGE_REQUEST_BUDGET_MIB` (64) MiB of
//! them in flight for all partners together, so a burst of uploads cannot
//! make a backend hold more than that in memory. A refused one is
//! RESOURCE_EXHAUSTED with RetryInfo (1 s).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csp_kit::identity::UserCaller;
use csp_kit::ids::PartnerId;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The limits' settings.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct LimitArgs {
    /// Calls per second one user may make, sustained.
    #[arg(long, env = "CSP_USER_RATE", default_value_t = LimitArgs::DEFAULT.user_rate)]
    pub user_rate: u32,
    /// Calls one user may make at once above the rate.
    #[arg(long, env = "CSP_USER_BURST", default_value_t = LimitArgs::DEFAULT.user_burst)]
    pub user_burst: u32,
    /// Calls per second one partner's users may make together, sustained.
    #[arg(long, env = "CSP_PARTNER_RATE", default_value_t = LimitArgs::DEFAULT.partner_rate)]
    pub partner_rate: u32,
    /// Calls one partner may make at once above the rate.
    #[arg(long, env = "CSP_PARTNER_BURST", default_value_t = LimitArgs::DEFAULT.partner_burst)]
    pub partner_burst: u32,
    /// Calls of one partner in flight at once.
    #[arg(
        long,
        env = "CSP_PARTNER_CONCURRENCY",
        default_value_t = LimitArgs::DEFAULT.partner_concurrency
    )]
    pub partner_concurrency: u32,
    /// A call whose request message declares more bytes than this is a large
    /// request (ticket attachments): each partner may have one in flight at
    /// a time, and all partners' together at most the large-request budget.
    #[arg(
        long,
        env = "CSP_LARGE_REQUEST_BYTES",
        default_value_t = LimitArgs::DEFAULT.large_request_bytes
    )]
    pub large_request_bytes: u32,
    /// MiB of large request messages the backends may be holding at once,
    /// all partners together: what bounds the memory large calls take.
    #[arg(
        long,
        env = "CSP_LARGE_REQUEST_BUDGET_MIB",
        default_value_t = LimitArgs::DEFAULT.large_request_budget_mib
    )]
    pub large_request_budget_mib: u32,
}

impl LimitArgs {
    /// Generous defaults: above what one gateway on a small machine serves at
    /// all (about 4,000 calls/s on 2 cores), so load tests and busy
    /// integrations are never throttled by surprise; a deployment sets its
    /// own from its tenants' real use.
    pub const DEFAULT: LimitArgs = LimitArgs {
        user_rate: 10_000,
        user_burst: 20_000,
        partner_rate: 20_000,
        partner_burst: 40_000,
        partner_concurrency: 1_024,
        large_request_bytes: 4 * 1024 * 1024,
        large_request_budget_mib: 64,
    };
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The gateway's limits.
pub struct Limits {
    users: DefaultKeyedRateLimiter<(PartnerId, String)>,
    partners: DefaultKeyedRateLimiter<PartnerId>,
    in_flight: Mutex<HashMap<PartnerId, Arc<Semaphore>>>,
    concurrency: usize,
    clock: DefaultClock,
    large_request_bytes: u32,
    large_budget_mib: u32,
    large_budget: Arc<Semaphore>,
    large_partners: Arc<Mutex<HashSet<PartnerId>>>,
    /// The gateway's listen address, labelling its gauge.
    listener: Arc<str>,
}

/// Holds a large request's share of the budget, and its partner's one slot,
/// until dropped (when the backend has answered).
pub struct LargePermit {
    budget: OwnedSemaphorePermit,
    partner: PartnerId,
    partners: Arc<Mutex<HashSet<PartnerId>>>,
    listener: Arc<str>,
}

impl Drop for LargePermit {
    fn drop(&mut self) {
        csp_kit::metrics::add_large_request_mib(
            "gateway",
            &self.listener,
            -(self.budget.num_permits() as i64),
        );
        self.partners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.partner);
    }
}

fn quota(rate: u32, burst: u32) -> anyhow::Result<Quota> {
    let rate = NonZeroU32::new(rate).ok_or_else(|| anyhow::anyhow!("a rate must be at least 1"))?;
    let burst =
        NonZeroU32::new(burst).ok_or_else(|| anyhow::anyhow!("a burst must be at least 1"))?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

impl Limits {
    /// Limits with `args`.
    pub fn new(args: &LimitArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.partner_concurrency > 0,
            "the partner concurrency must be at least 1"
        );
        anyhow::ensure!(
            args.large_request_budget_mib > 0,
            "the large-request budget must be at least 1 MiB"
        );
        Ok(Self {
            users: DefaultKeyedRateLimiter::keyed(quota(args.user_rate, args.user_burst)?),
            partners: DefaultKeyedRateLimiter::keyed(quota(args.partner_rate, args.partner_burst)?),
            in_flight: Mutex::new(HashMap::new()),
            concurrency: args.partner_concurrency as usize,
            clock: DefaultClock::default(),
            large_request_bytes: args.large_request_bytes,
            large_budget_mib: args.large_request_budget_mib,
            large_budget: Arc::new(Semaphore::new(args.large_request_budget_mib as usize)),
            large_partners: Arc::new(Mutex::new(HashSet::new())),
            listener: Arc::from(""),
        })
    }

    /// The same limits, labelling their gauge with the gateway's listen
    /// address.
    pub fn on_listener(mut self, listener: &str) -> Self {
        self.listener = Arc::from(listener);
        self
    }

    /// Admits one call of `user`, or says when to retry. The permit keeps
    /// the call counted as in flight until it is dropped.
    pub fn admit(&self, user: &UserCaller) -> Result<OwnedSemaphorePermit, Status> {
        let user_key = (user.partner_id, user.user_id.clone());
        if let Err(not_until) = self.users.check_key(&user_key) {
            return Err(exhausted(
                "user_rate",
                "too many calls from this user",
                not_until.wait_time_from(self.clock.now()),
            ));
        }
        if let Err(not_until) = self.partners.check_key(&user.partner_id) {
            return Err(exhausted(
                "partner_rate",
                "too many calls from this partner",
                not_until.wait_time_from(self.clock.now()),
            ));
        }
        let slots = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(user.partner_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
            .clone();
        slots.try_acquire_owned().map_err(|_| {
            exhausted(
                "partner_concurrency",
                "too many calls from this partner at once",
                Duration::from_millis(100),
            )
        })
    }

    /// Admits a call of `partner` whose request message declares `declared`
    /// bytes: nothing to hold for a small one; for a large one, the
    /// partner's one slot and the message's MiB of the budget, or
    /// RESOURCE_EXHAUSTED with RetryInfo (refused before anything reaches
    /// the backend, so a burst of large uploads never sits in its memory).
    pub fn admit_large(
        &self,
        partner: PartnerId,
        declared: u32,
    ) -> Result<Option<LargePermit>, Status> {
        if declared <= self.large_request_bytes {
            return Ok(None);
        }
        let retry_in = Duration::from_secs(1);
        if !self
            .large_partners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(partner)
        {
            return Err(exhausted(
                "partner_large_requests",
                &format!(
                    "this partner already has a large request (over {} MiB) in progress; send them one at a time",
                    self.large_request_bytes / (1024 * 1024)
                ),
                retry_in,
            ));
        }
        let mib = declared.div_ceil(1024 * 1024).min(self.large_budget_mib);
        match self.large_budget.clone().try_acquire_many_owned(mib) {
            Ok(budget) => Ok(Some({
                csp_kit::metrics::add_large_request_mib("gateway", &self.listener, i64::from(mib));
                LargePermit {
                    budget,
                    partner,
                    partners: self.large_partners.clone(),
                    listener: self.listener.clone(),
                }
            })),
            Err(_) => {
                self.large_partners
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&partner);
                Err(exhausted(
                    "large_requests",
                    "too many large requests are in progress",
                    retry_in,
                ))
            }
        }
    }

    /// Forgets users and partners that have been quiet (their buckets are
    /// full again), so the limiters' memory follows who is active.
    pub fn forget_quiet(&self) {
        self.users.retain_recent();
        self.partners.retain_recent();
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, slots| slots.available_permits() < self.concurrency);
    }
}

/// RESOURCE_EXHAUSTED with RetryInfo; counted by scope.
fn exhausted(scope: &'static str, what: &str, retry_in: Duration) -> Status {
    csp_kit::metrics::count_limited("gateway", scope);
    let retry_in = retry_in.max(Duration::from_millis(1));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{what}; retry in {} ms", retry_in.as_millis()),
        ErrorDetails::with_retry_info(Some(retry_in)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use csp_kit::roles::RoleSet;

    fn user(partner: PartnerId, id: &str) -> UserCaller {
        UserCaller {
            partner_id: partner,
            user_id: id.to_owned(),
            display_name: id.to_owned(),
            roles: RoleSet::default(),
        }
    }

    #[test]
    fn a_user_over_the_rate_waits_and_others_do_not() {
        let limits = Limits::new(&LimitArgs {
            user_rate: 1,
            user_burst: 3,
            ..LimitArgs::default()
        })
        .unwrap();
        let (a, b) = (PartnerId::new(), PartnerId::new());
        for _ in 0..3 {
            let _ = limits.admit(&user(a, "ada")).unwrap();
        }
        let status = limits.admit(&user(a, "ada")).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_error_details().retry_info().unwrap().retry_delay;
        assert!(retry.is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(1)));
        // Another user of the same partner, and another partner, go on.
        let _ = limits.admit(&user(a, "bob")).unwrap();
        let _ = limits.admit(&user(b, "ada")).unwrap();
    }

    #[test]
    fn a_partner_has_a_rate_and_a_cap_on_calls_in_flight() {
        let limits = Limits::new(&LimitArgs {
            partner_rate: 1,
            partner_burst: 2,
            ..LimitArgs::default()
        })
        .unwrap();
        let p = PartnerId::new();
        let _ = limits.admit(&user(p, "u1")).unwrap();
        let _ = limits.admit(&user(p, "u2")).unwrap();
        let status = limits.admit(&user(p, "u3")).unwrap_err();
        assert!(
            status.message().contains("this partner"),
            "{}",
            status.message()
        );

        let limits = Limits::new(&LimitArgs {
            partner_concurrency: 2,
            ..LimitArgs::default()
        })
        .unwrap();
        let first = limits.admit(&user(p, "u1")).unwrap();
        let _second = limits.admit(&user(p, "u2")).unwrap();
        let status = limits.admit(&user(p, "u3")).unwrap_err();
        assert!(status.message().contains("at once"), "{}", status.message());
        drop(first);
        let _ = limits.admit(&user(p, "u3")).unwrap();
        limits.forget_quiet();
    }

    #[test]
    fn a_partner_has_one_large_request_at_a_time_within_a_shared_budget() {
        let limits = Limits::new(&LimitArgs {
            large_request_bytes: 1024 * 1024,
            large_request_budget_mib: 60,
            ..LimitArgs::default()
        })
        .unwrap();
        let (a, b, c) = (PartnerId::new(), PartnerId::new(), PartnerId::new());
        assert!(
            limits.admit_large(a, 1024 * 1024).unwrap().is_none(),
            "small"
        );

        let first = limits.admit_large(a, 50 * 1024 * 1024).unwrap().unwrap();
        let again = limits.admit_large(a, 2 * 1024 * 1024).err().unwrap();
        assert_eq!(again.code(), Code::ResourceExhausted);
        assert!(
            again.message().contains("one at a time"),
            "{}",
            again.message()
        );
        assert!(
            again.get_error_details().retry_info().is_some(),
            "RetryInfo says when"
        );

        // Another partner fits in what is left of the budget (10 MiB), a
        // third does not.
        let other = limits.admit_large(b, 10 * 1024 * 1024).unwrap().unwrap();
        let over = limits.admit_large(c, 1024 * 1024 + 1).err().unwrap();
        assert!(
            over.message().contains("too many large"),
            "{}",
            over.message()
        );
        // Refused by the budget, c holds no slot.
        drop(other);
        let third = limits.admit_large(c, 5 * 1024 * 1024).unwrap();
        assert!(third.is_some());

        drop(first);
        // A message larger than the whole budget takes all of it.
        drop(third);
        let huge = limits.admit_large(a, u32::MAX).unwrap();
        assert!(huge.is_some());
        assert!(limits.admit_large(b, 2 * 1024 * 1024).is_err());
    }
}
