//! Activity records for the audit log, built in one place. Every producer
//! (ordering, licensing, support, the gateway's denied calls) describes what
//! happened with [`Activity`]; the record's id is the event id audit
//! deduplicates by.

use std::collections::HashMap;
use std::fmt::Display;

use csp_proto::audit::v1::{self as pb, ActivityType};

use crate::clock::{Micros, to_timestamp};
use crate::identity::UserCaller;
use crate::ids::{PartnerId, RecordId};

/// An activity being described.
#[derive(Clone, Debug)]
pub struct Activity {
    id: RecordId,
    partner_id: PartnerId,
    activity: pb::Activity,
}

impl Activity {
    /// Something of `kind` happened in `partner`'s tenancy at `at`, with a
    /// new record id.
    pub fn new(partner_id: PartnerId, kind: ActivityType, at: Micros) -> Self {
        Self::with_id(RecordId::new(), partner_id, kind, at)
    }

    /// The same with a given record id (an event that is also sent elsewhere
    /// under that id).
    pub fn with_id(id: RecordId, partner_id: PartnerId, kind: ActivityType, at: Micros) -> Self {
        Self {
            id,
            partner_id,
            activity: pb::Activity {
                id: id.to_string(),
                r#type: kind as i32,
                occur_time: Some(to_timestamp(at)),
                ..Default::default()
            },
        }
    }

    /// Done by a user (id and display name).
    pub fn by(mut self, user_id: &str, display_name: &str) -> Self {
        user_id.clone_into(&mut self.activity.user_id);
        display_name.clone_into(&mut self.activity.user_display_name);
        self
    }

    /// Done by the signed-in `user`.
    pub fn by_user(self, user: &UserCaller) -> Self {
        self.by(&user.user_id, &user.display_name)
    }

    /// About a customer (its tenant id).
    pub fn customer(mut self, tenant_id: impl Display) -> Self {
        self.activity.customer_tenant_id = tenant_id.to_string();
        self
    }

    /// About a subscription.
    pub fn subscription(mut self, subscription_id: impl Display) -> Self {
        self.activity.subscription_id = subscription_id.to_string();
        self
    }

    /// About a product.
    pub fn product(mut self, product_id: &str) -> Self {
        product_id.clone_into(&mut self.activity.product_id);
        self
    }

    /// With one more detail.
    pub fn detail(mut self, key: &str, value: impl Display) -> Self {
        self.activity
            .details
            .insert(key.to_owned(), value.to_string());
        self
    }

    /// With these details.
    pub fn details(mut self, details: HashMap<String, String>) -> Self {
        self.activity.details.extend(details);
        self
    }

    /// The record id.
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// The record audit takes.
    pub fn record(self) -> pb::ActivityRecord {
        pb::ActivityRecord {
            partner_id: self.partner_id.to_string(),
            activity: Some(self.activity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_record_with_its_id_and_every_field() {
        let partner = PartnerId::new();
        let activity = Activity::new(partner, ActivityType::KeyAccessed, 1_000_000)
            .by("ada", "Ada")
            .customer("c")
            .subscription("s")
            .product("p")
            .detail("version", "2022");
        let id = activity.id();
        let record = activity.record();
        assert_eq!(record.partner_id, partner.to_string());
        let a = record.activity.unwrap();
        assert_eq!(a.id, id.to_string());
        assert_eq!(a.r#type, ActivityType::KeyAccessed as i32);
        assert_eq!(a.occur_time.unwrap().seconds, 1);
        assert_eq!(
            (a.user_id.as_str(), a.user_display_name.as_str()),
            ("ada", "Ada")
        );
        assert_eq!(
            (
                a.customer_tenant_id.as_str(),
                a.subscription_id.as_str(),
                a.product_id.as_str()
            ),
            ("c", "s", "p")
        );
        assert_eq!(a.details["version"], "2022");
    }
}
