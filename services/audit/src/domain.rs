//! Audit rules, without I/O: records, their intake, and what verifying a
//! partner's log found (the tree math and signatures are in [`crate::log`]).

use std::collections::BTreeMap;

use csp_kit::clock::{Micros, SECOND};
use csp_kit::ids::PartnerId;
use csp_kit::service_name::{ServiceName, ServiceSet};
use csp_proto::audit::v1 as pb;
use csp_proto::audit::v1::ActivityType;
/// Records of each kind of finding named at most (counts stay exact).
pub const MAX_REPORTED: usize = 1000;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The partner whose log it is in.
    pub partner_id: PartnerId,
    /// Its place in the partner's log, from 1 (its leaf index plus one).
    pub seq: i64,
    /// The producer's event id.
    pub id: String,
    /// What happened (stored spelling).
    pub kind: String,
    /// When it happened.
    pub occur_at: Micros,
    /// When the log recorded it.
    pub recorded_at: Micros,
    /// Who did it.
    pub user_id: String,
    /// Their display name.
    pub user_display_name: String,
    /// The customer concerned.
    pub customer_tenant_id: String,
    /// The subscription concerned.
    pub subscription_id: String,
    /// The product concerned.
    pub product_id: String,
    /// More facts: a JSON object with sorted keys.
    pub details: String,
}

/// The stored spelling of an activity type; `None` for unspecified or
/// unknown numbers.
pub fn kind_to_db(kind: i32) -> Option<&'static str> {
    Some(match ActivityType::try_from(kind).ok()? {
        ActivityType::Unspecified => return None,
        ActivityType::KeyAccessed => "key_accessed",
        ActivityType::DownloadLinkIssued => "download_link_issued",
        ActivityType::SoftwareDownloaded => "software_downloaded",
        ActivityType::OrderPlaced => "order_placed",
        ActivityType::SubscriptionCancelled => "subscription_cancelled",
        ActivityType::RefundTicketSubmitted => "refund_ticket_submitted",
        ActivityType::RefundTicketResolved => "refund_ticket_resolved",
        ActivityType::CallDenied => "call_denied",
        ActivityType::ActivityLogRead => "activity_log_read",
        ActivityType::ActivityLogExported => "activity_log_exported",
    })
}

/// The contract's number of a stored activity type.
pub fn kind_to_pb(kind: &str) -> i32 {
    (1..=10)
        .find(|n| kind_to_db(*n) == Some(kind))
        .unwrap_or(ActivityType::Unspecified as i32)
}

/// Details as stored: a JSON object with sorted keys.
pub fn canonical_details(details: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = details.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".to_owned())
}

/// What verifying a partner's log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// The tree's size (leaves) when verified.
    pub tree_size: u64,
    /// Records read.
    pub checked: u64,
    /// Signed checkpoints checked against the tree.
    pub checkpoints_checked: u64,
    /// Records whose content is not what was logged at their place: (id,
    /// leaf index).
    pub edited: Vec<(String, u64)>,
    /// Records found at another place than the one they were logged at:
    /// (id, found at, logged at).
    pub reordered: Vec<(String, u64, u64)>,
    /// Leaf indexes the tree holds but no record has (deleted records).
    pub missing: Vec<u64>,
    /// How many are missing in all.
    pub missing_count: u64,
    /// Records that are not in the tree (inserted behind the log's back).
    pub inserted: Vec<String>,
    /// Checkpoints whose signature is not the log key's.
    pub forged_checkpoints: u64,
    /// Sizes with two signed checkpoints that disagree (a forked history).
    pub forks: Vec<u64>,
    /// The smallest signed size whose root the stored tree no longer gives
    /// (the tree was rewritten or shortened).
    pub rewritten_at: Option<u64>,
    /// The first leaf whose stored hashes (the leaf or a subtree it
    /// completes) are missing or not what the leaves below give: proofs
    /// through them fail.
    pub tree_damaged: Option<u64>,
}

impl Findings {
    /// Whether nothing is wrong.
    pub fn intact(&self) -> bool {
        self.edited.is_empty()
            && self.reordered.is_empty()
            && self.missing_count == 0
            && self.inserted.is_empty()
            && self.forged_checkpoints == 0
            && self.forks.is_empty()
            && self.rewritten_at.is_none()
            && self.tree_damaged.is_none()
    }

    /// A deleted record at leaf `index`.
    pub fn deleted(&mut self, index: u64) {
        self.missing_count += 1;
        if self.missing.len() < MAX_REPORTED {
            self.missing.push(index);
        }
    }

    /// The first record named (edited or reordered), if any.
    pub fn first_mismatch(&self) -> Option<&str> {
        self.edited
            .first()
            .map(|(id, _)| id.as_str())
            .or_else(|| self.reordered.first().map(|(id, _, _)| id.as_str()))
    }

    /// A sentence for the caller naming each finding.
    pub fn summary(&self) -> String {
        if self.intact() {
            return format!(
                "intact: {} records are the {} leaves of the tree, which matches all {} signed checkpoints",
                self.checked, self.tree_size, self.checkpoints_checked
            );
        }
        let mut parts = Vec::new();
        let some = |ids: Vec<String>| {
            let shown: Vec<String> = ids.iter().take(5).cloned().collect();
            let more = ids.len().saturating_sub(shown.len());
            if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        if !self.edited.is_empty() {
            parts.push(format!(
                "edited (content differs from what was logged): {}",
                some(
                    self.edited
                        .iter()
                        .map(|(id, i)| format!("{id} at leaf {i}"))
                        .collect()
                )
            ));
        }
        if !self.reordered.is_empty() {
            parts.push(format!(
                "reordered: {}",
                some(
                    self.reordered
                        .iter()
                        .map(|(id, at, logged)| format!(
                            "{id} at leaf {at}, logged at leaf {logged}"
                        ))
                        .collect()
                )
            ));
        }
        if self.missing_count > 0 {
            parts.push(format!(
                "deleted: {} records (leaves {})",
                self.missing_count,
                some(self.missing.iter().map(u64::to_string).collect())
            ));
        }
        if !self.inserted.is_empty() {
            parts.push(format!(
                "inserted (not in the signed log): {}",
                some(self.inserted.clone())
            ));
        }
        if let Some(size) = self.rewritten_at {
            parts.push(format!(
                "history rewritten: the stored tree no longer gives the signed root of size {size}"
            ));
        }
        if let Some(leaf) = self.tree_damaged {
            parts.push(format!(
                "tree damaged: the stored hashes at leaf {leaf} are not the hashes of the leaves below them"
            ));
        }
        if !self.forks.is_empty() {
            parts.push(format!(
                "forked: two different signed checkpoints of size {}",
                some(self.forks.iter().map(u64::to_string).collect())
            ));
        }
        if self.forged_checkpoints > 0 {
            parts.push(format!(
                "{} checkpoints are not signed by the log key",
                self.forged_checkpoints
            ));
        }
        format!(
            "tampered: {} ({} records checked)",
            parts.join("; "),
            self.checked
        )
    }
}

/// A record whose leaf is not the one the tree holds at its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The record's id.
    pub id: String,
    /// Its place (leaf index).
    pub index: u64,
    /// Its leaf hash.
    pub leaf: [u8; 32],
}

/// Names mismatched records, the one rule the server's check and the
/// offline verifier share: a record whose leaf the tree holds at another
/// place was moved there from (reordered); otherwise it was edited.
/// `logged_at` finds the place a leaf was logged at.
pub fn name_mismatches(
    mismatched: Vec<Mismatch>,
    logged_at: impl Fn(&[u8; 32]) -> Option<u64>,
    findings: &mut Findings,
) {
    for m in mismatched {
        match logged_at(&m.leaf) {
            Some(at) if at != m.index => {
                if findings.reordered.len() < MAX_REPORTED {
                    findings.reordered.push((m.id, m.index, at));
                }
            }
            _ => {
                if findings.edited.len() < MAX_REPORTED {
                    findings.edited.push((m.id, m.index));
                }
            }
        }
    }
}

/// How far an activity may be dated ahead of the log's clock (clock skew
/// between services).
pub const MAX_AHEAD: Micros = 60 * SECOND;

/// What the intake accepts from whom: which services produce each activity
/// type (the contract's `producers` option), and how old a record may be
/// when it arrives (outbox redeliveries after an outage carry their original
/// time).
#[derive(Clone, Debug)]
pub struct IntakeRules {
    producers: std::collections::HashMap<i32, ServiceSet>,
    max_age: Micros,
}

impl IntakeRules {
    /// The contract's producers, and records up to `max_age` old.
    pub fn new(max_age: Micros) -> anyhow::Result<Self> {
        Ok(Self {
            producers: csp_kit::access::activity_producers(csp_proto::FILE_DESCRIPTOR_SET)?,
            max_age,
        })
    }
}

/// A record from the intake, checked; or why it is refused (its partner
/// and the record). `producer` is the verified caller that sent it.
pub fn intake_record(
    r: &pb::ActivityRecord,
    producer: ServiceName,
    rules: &IntakeRules,
    now: Micros,
) -> Result<(PartnerId, Record), String> {
    let partner: PartnerId = r
        .partner_id
        .parse()
        .map_err(|_| "partner_id is not a UUID".to_owned())?;
    let a = r.activity.as_ref().ok_or("the record has no activity")?;
    if a.id.trim().is_empty() || a.id.len() > 128 {
        return Err("the activity id must be 1 to 128 characters".to_owned());
    }
    let kind = kind_to_db(a.r#type).ok_or("the activity type is unspecified or unknown")?;
    let occur = a
        .occur_time
        .as_ref()
        .ok_or("the activity has no occur_time")?;
    let occur_at = micros_of(occur).ok_or("occur_time is not a valid time")?;
    let producers = rules.producers.get(&a.r#type).copied().unwrap_or_default();
    if !producers.contains(producer) {
        return Err(format!(
            "the {producer} service may not write {kind} records (they come from {})",
            if producers.is_empty() {
                "no service".to_owned()
            } else {
                producers.names().join(", ")
            }
        ));
    }
    if occur_at > now.saturating_add(MAX_AHEAD) {
        return Err(format!(
            "occur_time is {} s ahead of the log's clock; at most {} s is accepted",
            occur_at.saturating_sub(now) / SECOND,
            MAX_AHEAD / SECOND
        ));
    }
    if occur_at < now.saturating_sub(rules.max_age) {
        return Err(format!(
            "occur_time is {} hours before the log received it; records older than {} hours \
             are refused (CSP_AUDIT_MAX_RECORD_AGE_HOURS)",
            now.saturating_sub(occur_at) / (3600 * SECOND),
            rules.max_age / (3600 * SECOND)
        ));
    }
    Ok((
        partner,
        Record {
            partner_id: partner,
            seq: 0,
            id: a.id.clone(),
            kind: kind.to_owned(),
            occur_at,
            recorded_at: now,
            user_id: a.user_id.clone(),
            user_display_name: a.user_display_name.clone(),
            customer_tenant_id: a.customer_tenant_id.clone(),
            subscription_id: a.subscription_id.clone(),
            product_id: a.product_id.clone(),
            details: canonical_details(&a.details),
        },
    ))
}

pub use csp_kit::clock::from_timestamp as micros_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for n in 1..=10 {
            assert_eq!(kind_to_pb(kind_to_db(n).unwrap()), n);
        }
        assert_eq!(kind_to_db(0), None);
        assert_eq!(kind_to_db(42), None);
    }

    #[test]
    fn every_finding_is_named() {
        let mut f = Findings {
            tree_size: 10,
            checked: 9,
            ..Findings::default()
        };
        assert!(f.intact(), "{}", f.summary());
        f.edited.push(("e4".into(), 3));
        f.reordered.push(("e6".into(), 6, 5));
        f.deleted(8);
        f.inserted.push("x1".into());
        f.rewritten_at = Some(10);
        f.forks.push(7);
        f.forged_checkpoints = 1;
        f.tree_damaged = Some(4);
        let summary = f.summary();
        for part in [
            "edited",
            "e4 at leaf 3",
            "reordered: e6 at leaf 6, logged at leaf 5",
            "deleted: 1 records (leaves 8)",
            "inserted (not in the signed log): x1",
            "history rewritten",
            "forked: two different signed checkpoints of size 7",
            "1 checkpoints are not signed",
            "tree damaged: the stored hashes at leaf 4",
        ] {
            assert!(summary.contains(part), "{part} not in {summary}");
        }
        assert_eq!(f.first_mismatch(), Some("e4"));
    }
}
