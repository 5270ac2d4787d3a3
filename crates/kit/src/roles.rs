//! Roles a partner's user holds, as the contract (`csp.auth.v1.Role`) and
//! tokens (`"admin_agent"`) name them.

use std::fmt;

use csp_proto::auth::v1::Role as ProtoRole;

/// A role. Token spelling is lower snake case: [`Role::AdminAgent`] is
/// `"admin_agent"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Admin agent.
    AdminAgent,
    /// Sales agent.
    SalesAgent,
    /// Helpdesk agent.
    HelpdeskAgent,
    /// Global admin.
    GlobalAdmin,
    /// Account admin.
    AccountAdmin,
    /// Referral admin.
    ReferralAdmin,
    /// Marketing content admin.
    MarketingContentAdmin,
    /// Billing admin.
    BillingAdmin,
}

impl Role {
    /// Every role, in contract order.
    pub const ALL: [Role; 8] = [
        Role::AdminAgent,
        Role::SalesAgent,
        Role::HelpdeskAgent,
        Role::GlobalAdmin,
        Role::AccountAdmin,
        Role::ReferralAdmin,
        Role::MarketingContentAdmin,
        Role::BillingAdmin,
    ];

    /// The token spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::AdminAgent => "admin_agent",
            Role::SalesAgent => "sales_agent",
            Role::HelpdeskAgent => "helpdesk_agent",
            Role::GlobalAdmin => "global_admin",
            Role::AccountAdmin => "account_admin",
            Role::ReferralAdmin => "referral_admin",
            Role::MarketingContentAdmin => "marketing_content_admin",
            Role::BillingAdmin => "billing_admin",
        }
    }

    /// Parses the token spelling.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The role of a `csp.auth.v1.Role` enum number.
    pub fn from_proto(value: i32) -> Option<Role> {
        match ProtoRole::try_from(value).ok()? {
            ProtoRole::Unspecified => None,
            ProtoRole::AdminAgent => Some(Role::AdminAgent),
            ProtoRole::SalesAgent => Some(Role::SalesAgent),
            ProtoRole::HelpdeskAgent => Some(Role::HelpdeskAgent),
            ProtoRole::GlobalAdmin => Some(Role::GlobalAdmin),
            ProtoRole::AccountAdmin => Some(Role::AccountAdmin),
            ProtoRole::ReferralAdmin => Some(Role::ReferralAdmin),
            ProtoRole::MarketingContentAdmin => Some(Role::MarketingContentAdmin),
            ProtoRole::BillingAdmin => Some(Role::BillingAdmin),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(u8);

impl RoleSet {
    /// No role.
    pub const EMPTY: RoleSet = RoleSet(0);

    /// Adds a role.
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    /// Whether the set holds `role`.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the two sets share a role.
    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles, in contract order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Token spellings, for messages and tokens.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Role::as_str).collect()
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut set = RoleSet::EMPTY;
        for role in iter {
            set.insert(role);
        }
        set
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn proto_numbers_map_to_roles() {
        assert_eq!(
            Role::from_proto(ProtoRole::AdminAgent as i32),
            Some(Role::AdminAgent)
        );
        assert_eq!(
            Role::from_proto(ProtoRole::MarketingContentAdmin as i32),
            Some(Role::MarketingContentAdmin)
        );
        assert_eq!(Role::from_proto(0), None);
        assert_eq!(Role::from_proto(99), None);
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let set: RoleSet = [Role::SalesAgent, Role::GlobalAdmin].into_iter().collect();
        assert!(set.contains(Role::SalesAgent));
        assert!(!set.contains(Role::AdminAgent));
        assert_eq!(set.names(), ["sales_agent", "global_admin"]);
        assert!(set.intersects([Role::GlobalAdmin].into_iter().collect()));
        assert!(!set.intersects(RoleSet::EMPTY));
    }
}
