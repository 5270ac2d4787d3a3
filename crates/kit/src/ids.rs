//! Typed identifiers. Every id of the domain is a UUID, but an order id is
//! not a subscription id: each kind is its own type, so one can never be
//! passed where another is wanted. Ids cross the contract and the database
//! as hyphenated lower-case text; they are parsed once, at the edge
//! ([`parse`](PartnerId::parse) gives a field-level error), and a stored id
//! that does not parse is a storage error, never a default.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::ApiError;
use crate::error::quoted;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// What the id names, for messages.
            pub const WHAT: &'static str = $what;

            /// A new random id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The id of `uuid`.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses a required request field: a missing or malformed value
            /// is INVALID_ARGUMENT naming `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, ApiError> {
                parse_uuid(field, value).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// A partner: one CSP reseller, one tenant of this system.
    PartnerId,
    "partner"
);
uuid_id!(
    /// A partner's customer, by its Azure AD tenant id.
    TenantId,
    "customer"
);
uuid_id!(
    /// An order.
    OrderId,
    "order"
);
uuid_id!(
    /// A subscription: one line of an order.
    SubscriptionId,
    "subscription"
);
uuid_id!(
    /// A download link.
    LinkId,
    "download link"
);
uuid_id!(
    /// A support ticket.
    TicketId,
    "ticket"
);
uuid_id!(
    /// An event or activity record: unique per record, receivers deduplicate
    /// by it.
    RecordId,
    "record"
);
uuid_id!(
    /// A client's idempotency key (`request_id`): the same id repeats the
    /// same request.
    RequestId,
    "request"
);

/// Parses a required UUID field.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(
            field,
            "required: a UUID such as 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        ));
    }
    Uuid::parse_str(value)
        .map_err(|_| ApiError::invalid(field, format!("{} is not a UUID", quoted(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trimmed_uuids_in_any_case_and_prints_them_lower_case() {
        let id = OrderId::parse("order_id", " 3F2504E0-4F89-11D3-9A0C-0305E82C3301 ").unwrap();
        assert_eq!(id.to_string(), "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301".parse().unwrap());
    }

    #[test]
    fn missing_and_malformed_ids_name_the_field_without_echoing_long_values() {
        for (value, expect) in [("", "required"), ("nope", "\"nope\" is not a UUID")] {
            let ApiError::InvalidArgument(v) = TenantId::parse("tenant_id", value).unwrap_err()
            else {
                panic!("not INVALID_ARGUMENT");
            };
            assert_eq!(v[0].field, "tenant_id");
            assert!(v[0].description.contains(expect), "{}", v[0].description);
        }
        let long = "x".repeat(10_000);
        let error = SubscriptionId::parse("subscription_id", &long).unwrap_err();
        assert!(error.to_string().len() < 200, "{error}");
    }
}
