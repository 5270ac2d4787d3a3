//! Per-partner and per-user limits at the gateway, so one tenant cannot
//! take the service away from the others: a token bucket per user and one
//! per partner (the `governor` crate's GCRA, rather than a hand-written
//! limiter), and a cap on one partner's calls in flight. Over a limit a call
//! is RESOURCE_EXHAUSTED with google.rpc `RetryInfo` saying when to try
//! again (Partner Center answers 429 with `Retry-After`), and is counted in
//! `csp_gateway_limited_calls_total{scope}`.

use std::collections::HashMap;
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
        Ok(Self {
            users: DefaultKeyedRateLimiter::keyed(quota(args.user_rate, args.user_burst)?),
            partners: DefaultKeyedRateLimiter::keyed(quota(args.partner_rate, args.partner_burst)?),
            in_flight: Mutex::new(HashMap::new()),
            concurrency: args.partner_concurrency as usize,
            clock: DefaultClock::default(),
        })
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
}
