//! The csp services by name, as the contract (`csp.auth.v1.Service`),
//! identities (`"ordering"`) and data files name them.

use std::fmt;

use csp_proto::auth::v1::Service as ProtoService;

/// A csp service. Identity spelling is lower case: [`ServiceName::Ordering`]
/// is `"ordering"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    /// The public door.
    Gateway,
    /// Products, SKUs and prices.
    Catalog,
    /// Customers, orders and subscriptions.
    Ordering,
    /// Product keys and download links.
    Licensing,
    /// The activity log.
    Audit,
    /// Support and refund tickets.
    Support,
    /// The operator's tools (`csp catalog import`): a caller, never a
    /// server.
    Operator,
}

impl ServiceName {
    /// Every service, in contract order.
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Gateway,
        ServiceName::Catalog,
        ServiceName::Ordering,
        ServiceName::Licensing,
        ServiceName::Audit,
        ServiceName::Support,
        ServiceName::Operator,
    ];

    /// The identity spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceName::Gateway => "gateway",
            ServiceName::Catalog => "catalog",
            ServiceName::Ordering => "ordering",
            ServiceName::Licensing => "licensing",
            ServiceName::Audit => "audit",
            ServiceName::Support => "support",
            ServiceName::Operator => "operator",
        }
    }

    /// Parses the identity spelling.
    pub fn parse(name: &str) -> Option<ServiceName> {
        ServiceName::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The service of a `csp.auth.v1.Service` enum number.
    pub fn from_proto(value: i32) -> Option<ServiceName> {
        match ProtoService::try_from(value).ok()? {
            ProtoService::Unspecified => None,
            ProtoService::Gateway => Some(ServiceName::Gateway),
            ProtoService::Catalog => Some(ServiceName::Catalog),
            ProtoService::Ordering => Some(ServiceName::Ordering),
            ProtoService::Licensing => Some(ServiceName::Licensing),
            ProtoService::Audit => Some(ServiceName::Audit),
            ProtoService::Support => Some(ServiceName::Support),
            ProtoService::Operator => Some(ServiceName::Operator),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of services.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ServiceSet(u8);

impl ServiceSet {
    /// No service.
    pub const EMPTY: ServiceSet = ServiceSet(0);

    /// Adds a service.
    pub fn insert(&mut self, service: ServiceName) {
        self.0 |= service.bit();
    }

    /// Whether the set holds `service`.
    pub fn contains(self, service: ServiceName) -> bool {
        self.0 & service.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The services, in contract order.
    pub fn iter(self) -> impl Iterator<Item = ServiceName> {
        ServiceName::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }

    /// Identity spellings, for messages.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(ServiceName::as_str).collect()
    }
}

impl FromIterator<ServiceName> for ServiceSet {
    fn from_iter<I: IntoIterator<Item = ServiceName>>(iter: I) -> Self {
        let mut set = ServiceSet::EMPTY;
        for service in iter {
            set.insert(service);
        }
        set
    }
}

impl fmt::Debug for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_proto_numbers_round_trip() {
        for (number, service) in (1..).zip(ServiceName::ALL) {
            assert_eq!(ServiceName::parse(service.as_str()), Some(service));
            assert_eq!(ServiceName::from_proto(number), Some(service));
        }
        assert_eq!(ServiceName::parse("root"), None);
        assert_eq!(ServiceName::from_proto(0), None);
        assert_eq!(ServiceName::from_proto(99), None);
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let set: ServiceSet = [ServiceName::Support, ServiceName::Gateway]
            .into_iter()
            .collect();
        assert!(set.contains(ServiceName::Support));
        assert!(!set.contains(ServiceName::Audit));
        assert_eq!(set.names(), ["gateway", "support"]);
        assert!(ServiceSet::EMPTY.is_empty());
    }
}
