//! Creates that a client may retry: the client sends a `request_id` and
//! reuses it when it retries; the first answer is stored with a fingerprint
//! of what was asked. A retry with the same request gets the first answer
//! back; the same id with another request is refused (INVALID_ARGUMENT on
//! `request_id`); two copies racing are settled by the unique constraint on
//! (partner, request id): the loser answers with the winner's record.
//!
//! ```text
//! let once = CreateOnce::new("order", "orders_partner_request_key", &fingerprint);
//! if let Some(first) = once.replay(store.order_by_request(..).await?)? { return Ok(first) }
//! ... do the work ...
//! once.settle(store.insert_order(..).await.map(|()| order), || store.order_by_request(..)).await
//! ```

use std::future::Future;

use csp_kit::{ApiError, ApiResult};

use crate::error::StoreResult;

/// A stored first answer.
pub trait Replayable {
    /// The fingerprint of the request it answered.
    fn fingerprint(&self) -> &str;
    /// The client's request id.
    fn request_id(&self) -> String;
    /// Its own id, for the message that refuses a reused request id.
    fn id(&self) -> String;
}

/// Implements [`Replayable`] for an entity from its fields:
/// `replayable!(Order { fingerprint: request_fingerprint, request_id, id });`
#[macro_export]
macro_rules! replayable {
    ($entity:ty { fingerprint: $fingerprint:ident, request_id: $request:ident, id: $id:ident }) => {
        impl $crate::idempotency::Replayable for $entity {
            fn fingerprint(&self) -> &str {
                &self.$fingerprint
            }

            fn request_id(&self) -> String {
                self.$request.to_string()
            }

            fn id(&self) -> String {
                self.$id.to_string()
            }
        }
    };
}

/// One idempotent create.
#[derive(Clone, Copy, Debug)]
pub struct CreateOnce<'a> {
    what: &'static str,
    constraint: &'static str,
    fingerprint: &'a str,
}

impl<'a> CreateOnce<'a> {
    /// A create of a `what` (for example `order`) whose (partner, request id)
    /// is unique by `constraint` (on a `request_id` column), asking for what
    /// `fingerprint` sums up.
    pub fn new(what: &'static str, constraint: &'static str, fingerprint: &'a str) -> Self {
        Self {
            what,
            constraint,
            fingerprint,
        }
    }

    /// Before the work: the first answer when this is a retry of the same
    /// request, `None` when the request id is new, INVALID_ARGUMENT when it
    /// was used for another request.
    pub fn replay<T: Replayable>(&self, existing: Option<T>) -> ApiResult<Option<T>> {
        existing.map(|first| self.same(first)).transpose()
    }

    /// After the insert: the new record, or, when a racing copy inserted
    /// first (a conflict on the request id), the winner's record as
    /// [`replay`](Self::replay) would answer. Other storage errors pass on.
    pub async fn settle<T, F>(
        &self,
        inserted: StoreResult<T>,
        winner: impl FnOnce() -> F,
    ) -> ApiResult<T>
    where
        T: Replayable,
        F: Future<Output = StoreResult<Option<T>>>,
    {
        match inserted {
            Ok(record) => Ok(record),
            Err(error) if error.is_unique(self.constraint, "request_id") => {
                let first = winner().await?.ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!(
                        "the {} that won a retry race vanished",
                        self.what
                    ))
                })?;
                self.same(first)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn same<T: Replayable>(&self, first: T) -> ApiResult<T> {
        if first.fingerprint() == self.fingerprint {
            return Ok(first);
        }
        Err(ApiError::invalid(
            "request_id",
            format!(
                "request id {} was already used for {what} {} with other contents; a retry must repeat \
                 the same request, and a new {what} needs a new request id",
                first.request_id(),
                first.id(),
                what = self.what,
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[derive(Debug, PartialEq)]
    struct Order(&'static str);

    impl Replayable for Order {
        fn fingerprint(&self) -> &str {
            self.0
        }
        fn request_id(&self) -> String {
            "r1".to_owned()
        }
        fn id(&self) -> String {
            "o1".to_owned()
        }
    }

    #[test]
    fn a_retry_replays_and_another_request_is_refused() {
        let once = CreateOnce::new("order", "orders_partner_request_key", "fp");
        assert_eq!(once.replay::<Order>(None).unwrap(), None);
        assert_eq!(once.replay(Some(Order("fp"))).unwrap(), Some(Order("fp")));
        let ApiError::InvalidArgument(v) = once.replay(Some(Order("other"))).unwrap_err() else {
            panic!("not INVALID_ARGUMENT");
        };
        assert_eq!(v[0].field, "request_id");
        assert!(v[0].description.contains("order o1"));
    }

    #[tokio::test]
    async fn a_lost_race_answers_with_the_winner() {
        let once = CreateOnce::new("order", "orders_partner_request_key", "fp");
        let lost: StoreResult<Order> = Err(StoreError::Conflict(
            "orders_partner_request_key".to_owned(),
        ));
        let settled = once.settle(lost, || async { Ok(Some(Order("fp"))) }).await;
        assert_eq!(settled.unwrap(), Order("fp"));
        let other: StoreResult<Order> = Err(StoreError::Conflict("customers_pkey".to_owned()));
        let settled = once.settle(other, || async { Ok(Some(Order("fp"))) }).await;
        assert!(matches!(settled, Err(ApiError::Internal(_))));
    }
}
