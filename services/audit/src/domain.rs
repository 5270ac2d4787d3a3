//! Audit rules, without I/O: what a record's hash covers, how checkpoints
//! are signed, and how a chain is verified.

use std::collections::BTreeMap;

use csp_kit::clock::Micros;
use csp_kit::ids::PartnerId;
use csp_proto::audit::v1 as pb;
use csp_proto::audit::v1::ActivityType;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The predecessor hash of a partner's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Missing sequence numbers reported at most (the count is always exact).
pub const MAX_REPORTED_MISSING: usize = 1000;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The partner whose log it is in.
    pub partner_id: PartnerId,
    /// Its place in the partner's chain, from 1.
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
    /// The predecessor's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
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

/// The hash of a record after `prev_hash`: SHA-256 over the predecessor's
/// hash and every field, each length-prefixed so no two records share an
/// encoding.
pub fn record_hash(prev_hash: &str, r: &Record) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(prev_hash.as_bytes());
    field(r.partner_id.to_string().as_bytes());
    field(&r.seq.to_be_bytes());
    field(r.id.as_bytes());
    field(r.kind.as_bytes());
    field(&r.occur_at.to_be_bytes());
    field(&r.recorded_at.to_be_bytes());
    field(r.user_id.as_bytes());
    field(r.user_display_name.as_bytes());
    field(r.customer_tenant_id.as_bytes());
    field(r.subscription_id.as_bytes());
    field(r.product_id.as_bytes());
    field(r.details.as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed chain head.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The partner.
    pub partner_id: PartnerId,
    /// The head's sequence number.
    pub seq: i64,
    /// The head's hash.
    pub hash: String,
    /// HMAC-SHA256 of `partner_id|seq|hash` under the checkpoint key.
    pub mac: String,
}

/// Signs chain heads with a key the database does not hold.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    /// A signer with `key`.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, partner_id: PartnerId, seq: i64, hash: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("{partner_id}|{seq}|{hash}").as_bytes());
        mac
    }

    /// The checkpoint of a chain head.
    pub fn checkpoint(&self, partner_id: PartnerId, seq: i64, hash: &str) -> Checkpoint {
        Checkpoint {
            partner_id,
            seq,
            hash: hash.to_owned(),
            mac: hex(&self.mac(partner_id, seq, hash).finalize().into_bytes()),
        }
    }

    /// Whether a checkpoint was signed with this key. The MAC is compared
    /// in constant time (`Mac::verify_slice`), so timing tells nothing about
    /// how much of a forged MAC was right.
    pub fn is_genuine(&self, c: &Checkpoint) -> bool {
        let Some(claimed) = unhex(&c.mac) else {
            return false;
        };
        self.mac(c.partner_id, c.seq, &c.hash)
            .verify_slice(&claimed)
            .is_ok()
    }
}

/// Bytes of lower- or upper-case hex; `None` for anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Records read.
    pub checked: u64,
    /// The first record whose content or link does not match, with why.
    pub first_mismatch: Option<(String, String)>,
    /// Sequence numbers that are missing (at most [`MAX_REPORTED_MISSING`]).
    pub missing: Vec<i64>,
    /// How many are missing in all.
    pub missing_count: u64,
    /// Checkpoints that are not genuine (forged or altered).
    pub forged_checkpoints: u64,
}

impl Findings {
    /// Whether the chain is intact.
    pub fn intact(&self) -> bool {
        self.first_mismatch.is_none() && self.missing_count == 0 && self.forged_checkpoints == 0
    }

    /// A sentence for the caller.
    pub fn summary(&self) -> String {
        if self.intact() {
            return format!(
                "intact: {} records match their hashes and every checkpoint",
                self.checked
            );
        }
        let mut parts = Vec::new();
        if let Some((id, why)) = &self.first_mismatch {
            parts.push(format!("record {id} does not match ({why})"));
        }
        if self.missing_count > 0 {
            parts.push(format!("{} records are missing", self.missing_count));
        }
        if self.forged_checkpoints > 0 {
            parts.push(format!(
                "{} checkpoints are not genuine",
                self.forged_checkpoints
            ));
        }
        format!(
            "tampered: {} ({} records checked)",
            parts.join("; "),
            self.checked
        )
    }

    fn mismatch(&mut self, record: &Record, why: String) {
        if self.first_mismatch.is_none() {
            self.first_mismatch = Some((record.id.clone(), why));
        }
    }

    fn gap(&mut self, from: i64, to: i64) {
        for seq in from..=to {
            self.missing_count += 1;
            if self.missing.len() < MAX_REPORTED_MISSING {
                self.missing.push(seq);
            }
        }
    }
}

/// Walks one partner's chain in sequence order.
pub struct Verifier {
    checkpoints: BTreeMap<i64, Checkpoint>,
    expected: i64,
    prev_hash: String,
    findings: Findings,
}

impl Verifier {
    /// A verifier that checks the records against `checkpoints` (from the
    /// database and from outside it), dropping and counting forged ones.
    pub fn new(signer: &Signer, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
        let mut findings = Findings::default();
        let mut genuine = BTreeMap::new();
        for c in checkpoints {
            if signer.is_genuine(&c) {
                genuine.insert(c.seq, c);
            } else {
                findings.forged_checkpoints += 1;
            }
        }
        Self {
            checkpoints: genuine,
            expected: 1,
            prev_hash: GENESIS.to_owned(),
            findings,
        }
    }

    /// The next record, in sequence order.
    pub fn push(&mut self, record: &Record) {
        self.findings.checked += 1;
        if record.seq > self.expected {
            self.findings.gap(self.expected, record.seq - 1);
            // The link across a gap cannot be checked; continue from here.
            self.prev_hash = record.prev_hash.clone();
        } else if record.prev_hash != self.prev_hash {
            self.findings.mismatch(
                record,
                "its predecessor hash does not match the chain".to_owned(),
            );
        }
        let recomputed = record_hash(&self.prev_hash, record);
        if recomputed != record.hash {
            self.findings
                .mismatch(record, "its content does not match its hash".to_owned());
        }
        if let Some(checkpoint) = self.checkpoints.get(&record.seq)
            && checkpoint.hash != recomputed
        {
            self.findings.mismatch(
                record,
                format!(
                    "the signed checkpoint at record {} disagrees: records up to it were rewritten",
                    record.seq
                ),
            );
        }
        // Continue from the stored hash so one bad record is reported once.
        self.prev_hash = record.hash.clone();
        self.expected = record.seq + 1;
    }

    /// Ends the walk: records a signed checkpoint vouches for that never
    /// came are missing (deleted from the end of the log).
    pub fn finish(mut self) -> Findings {
        if let Some((&last_signed, _)) = self.checkpoints.last_key_value()
            && last_signed >= self.expected
        {
            self.findings.gap(self.expected, last_signed);
        }
        self.findings
    }
}

/// A record from the intake, checked; or why it is refused (its partner
/// and the record).
pub fn intake_record(r: &pb::ActivityRecord, now: Micros) -> Result<(PartnerId, Record), String> {
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
            prev_hash: String::new(),
            hash: String::new(),
        },
    ))
}

/// A protobuf timestamp in microseconds; `None` when it is not a valid time.
pub fn micros_of(t: &prost_types::Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(t.nanos / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartnerId = PartnerId::from_uuid(uuid::Uuid::from_u128(7));

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = Record {
                    partner_id: P,
                    seq,
                    id: format!("e{seq}"),
                    kind: "key_accessed".into(),
                    occur_at: seq * 1000,
                    recorded_at: seq * 1000,
                    user_id: "u".into(),
                    user_display_name: "U".into(),
                    customer_tenant_id: "c".into(),
                    subscription_id: "s".into(),
                    product_id: "x".into(),
                    details: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = record_hash(&prev, &r);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn verify(records: &[Record], checkpoints: Vec<Checkpoint>) -> Findings {
        let mut v = Verifier::new(&Signer::new(b"key"), checkpoints);
        for r in records {
            v.push(r);
        }
        v.finish()
    }

    fn head(records: &[Record]) -> Checkpoint {
        let last = records.last().unwrap();
        Signer::new(b"key").checkpoint(P, last.seq, &last.hash)
    }

    #[test]
    fn checkpoints_are_genuine_only_with_the_right_mac() {
        let signer = Signer::new(b"key");
        let good = signer.checkpoint(P, 3, "abc");
        assert!(signer.is_genuine(&good));
        for mac in [
            String::new(),
            "zz".to_owned(),
            good.mac[..good.mac.len() - 1].to_owned(),
            {
                let last = if good.mac.ends_with('0') { '1' } else { '0' };
                format!("{}{last}", &good.mac[..good.mac.len() - 1])
            },
        ] {
            let forged = Checkpoint {
                mac,
                ..good.clone()
            };
            assert!(!signer.is_genuine(&forged), "{forged:?}");
        }
        assert!(!Signer::new(b"other").is_genuine(&good));
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        let records = chain(10);
        let findings = verify(&records, vec![head(&records)]);
        assert!(findings.intact(), "{findings:?}");
        assert_eq!(findings.checked, 10);
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut records = chain(10);
        records[3].user_id = "mallory".into();
        let findings = verify(&records, vec![head(&records)]);
        assert_eq!(findings.first_mismatch.unwrap().0, "e4");
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_the_checkpoint() {
        let original = chain(10);
        let checkpoint = head(&original);
        // Edit record 4 and recompute every hash after it, as someone who can
        // write the database could.
        let mut records = original.clone();
        records[3].user_id = "mallory".into();
        let mut prev = records[2].hash.clone();
        for r in records.iter_mut().skip(3) {
            r.prev_hash = prev.clone();
            r.hash = record_hash(&prev, r);
            prev = r.hash.clone();
        }
        let findings = verify(&records, vec![checkpoint]);
        assert!(!findings.intact());
        assert_eq!(findings.first_mismatch.unwrap().0, "e10");
    }

    #[test]
    fn deleted_records_are_missing_in_the_middle_and_at_the_end() {
        let mut records = chain(10);
        let checkpoint = head(&records);
        records.remove(4); // seq 5
        records.truncate(7); // seqs 1-4, 6-8
        let findings = verify(&records, vec![checkpoint]);
        assert_eq!(findings.missing, [5, 9, 10]);
        assert!(findings.first_mismatch.is_none(), "{findings:?}");
    }

    #[test]
    fn forged_checkpoints_are_counted_not_trusted() {
        let records = chain(3);
        let mut forged = head(&records);
        forged.seq = 99;
        let findings = verify(&records, vec![forged]);
        assert_eq!(findings.forged_checkpoints, 1);
        assert!(findings.missing.is_empty());
    }

    #[test]
    fn kinds_round_trip() {
        for n in 1..=10 {
            assert_eq!(kind_to_pb(kind_to_db(n).unwrap()), n);
        }
        assert_eq!(kind_to_db(0), None);
        assert_eq!(kind_to_db(42), None);
    }
}
