//! Audit's use cases: taking records in from producers, listing, exporting,
//! signing checkpoints, proving and verifying a partner's log. Each append
//! is one storage call that owns its transaction; checkpoints are signed in
//! the background (at least every second while records come) and written
//! to the database and outside it. Handlers call exactly one of these.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::{Clock, Micros, to_rfc3339};
use csp_kit::identity::UserCaller;
use csp_kit::ids::PartnerId;
use csp_kit::service_name::ServiceName;
use csp_kit::{ApiError, ApiResult, paging};
use csp_proto::audit::v1 as pb;
use csp_store::group::GroupCommit;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::checkpoints::{CheckpointFile, FiledCheckpoint};
use crate::domain::{self, Findings, Record};
use crate::export::{self, Format};
use crate::log::{self, LogKey};
use crate::storage::{AuditStore, Query};
use tlog_tiles::Hash;

/// How often new records are checkpointed.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Records read per query when exporting or verifying.
const CHUNK: u32 = 1000;

/// What a ListActivity asks for.
#[derive(Clone, Debug)]
pub struct ActivityQuery {
    /// Range start (inclusive), microseconds.
    pub start: Micros,
    /// Range end (exclusive), microseconds.
    pub end: Micros,
    /// Only this kind (stored spelling), or every kind when empty.
    pub kind: String,
    /// Only about this customer, when not empty.
    pub customer_tenant_id: String,
    /// Only by this user, when not empty.
    pub user_id: String,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Cursor {
    at: Micros,
    seq: i64,
    max_seq: i64,
    filter: String,
}

/// What the intake took.
#[derive(Clone, Debug, Default)]
pub struct Intake {
    /// Records appended now (not seen before).
    pub recorded: u32,
    /// Records refused for good: (event id, reason).
    pub rejected: Vec<(String, String)>,
}

/// Audit's use cases.
#[derive(Clone)]
pub struct Audit {
    store: AuditStore,
    key: Arc<LogKey>,
    file: CheckpointFile,
    clock: Arc<dyn Clock>,
    rules: Arc<domain::IntakeRules>,
    /// Appends to one partner's tree are one at a time (its head row stays
    /// locked through the commit), so the calls that arrive while one
    /// commits are appended together in the next transaction.
    appends: Arc<GroupCommit<PartnerId, Vec<Record>, u32>>,
}

/// Which record an inclusion proof is for.
#[derive(Clone, Debug)]
pub enum Leaf {
    /// By the record's id.
    Id(String),
    /// By leaf index.
    Index(u64),
}

/// An inclusion proof.
#[derive(Clone, Debug)]
pub struct Inclusion {
    /// The leaf index.
    pub index: u64,
    /// The tree size.
    pub size: u64,
    /// The record's entry.
    pub entry: Vec<u8>,
    /// The leaf hash the tree holds.
    pub leaf: Hash,
    /// The audit path.
    pub proof: Vec<Hash>,
    /// The signed checkpoint of that size, if any.
    pub checkpoint: Option<String>,
}

/// A consistency proof.
#[derive(Clone, Debug)]
pub struct Consistency {
    /// Older size.
    pub first: u64,
    /// Newer size.
    pub second: u64,
    /// The proof.
    pub proof: Vec<Hash>,
    /// The signed checkpoints of both sizes, if any.
    pub checkpoints: (Option<String>, Option<String>),
}

impl Audit {
    /// Over `store`, signing checkpoints with `key` and appending them to
    /// `file` too.
    pub fn new(
        store: AuditStore,
        key: Arc<LogKey>,
        file: CheckpointFile,
        clock: Arc<dyn Clock>,
        rules: domain::IntakeRules,
    ) -> Self {
        Self {
            store,
            key,
            file,
            clock,
            rules: Arc::new(rules),
            appends: Arc::default(),
        }
    }

    /// Takes `producer`'s records: each checked (a bad one, a type the
    /// producer may not write, or a time outside the accepted window is
    /// rejected with its reason), consecutive records of one partner appended
    /// together, ids seen before skipped.
    pub async fn record_activities(
        &self,
        producer: ServiceName,
        records: &[pb::ActivityRecord],
    ) -> ApiResult<Intake> {
        let now = self.clock.now();
        let mut intake = Intake::default();
        let mut batches: Vec<(PartnerId, Vec<Record>)> = Vec::new();
        for r in records {
            // Each record within its documented limits (the codec leaves
            // batches to us, so one bad record does not refuse the others).
            if let Some(v) = csp_proto::bounds::item_violations(r).first() {
                intake.rejected.push((
                    r.activity
                        .as_ref()
                        .map(|a| csp_kit::error::shortened(&a.id))
                        .unwrap_or_default(),
                    format!("{}: {}", v.field, v.description),
                ));
                continue;
            }
            match domain::intake_record(r, producer, &self.rules, now) {
                Ok((partner, record)) => match batches.last_mut() {
                    Some((p, records)) if *p == partner => records.push(record),
                    _ => batches.push((partner, vec![record])),
                },
                Err(reason) => intake.rejected.push((
                    r.activity
                        .as_ref()
                        .map(|a| a.id.clone())
                        .unwrap_or_default(),
                    reason,
                )),
            }
        }
        for (partner, records) in batches {
            intake.recorded += self.append(partner, records).await?;
        }
        Ok(intake)
    }

    /// A page of the caller's partner's log, newest first, and the next
    /// page's token; the first page is itself recorded ("activity log read").
    pub async fn list_activity(
        &self,
        user: &UserCaller,
        query: &ActivityQuery,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<Record>, String)> {
        let size = paging::page_size(page_size, 100, 1000)?;
        let filter = format!(
            "{}|{}|{}|{}|{}",
            query.start, query.end, query.kind, query.customer_tenant_id, query.user_id
        );
        let cursor = paging::decode::<Cursor>(page_token)?;
        if cursor.as_ref().is_some_and(|c| c.filter != filter) {
            return Err(ApiError::invalid(
                "page_token",
                "this page token belongs to a query with other filters; start again from an empty page_token",
            ));
        }
        let partner_id = user.partner_id;
        let max_seq = match &cursor {
            Some(c) => c.max_seq,
            None => self.store.head_seq(partner_id).await?,
        };
        let stored = Query {
            partner_id,
            start: query.start,
            end: query.end,
            kind: query.kind.clone(),
            customer_tenant_id: query.customer_tenant_id.trim().to_owned(),
            user_id: query.user_id.trim().to_owned(),
            max_seq,
        };
        let mut records = self
            .store
            .page(&stored, cursor.as_ref().map(|c| (c.at, c.seq)), size + 1)
            .await?;
        let next = paging::finish_page(&mut records, size, |last| Cursor {
            at: last.occur_at,
            seq: last.seq,
            max_seq,
            filter: filter.clone(),
        });
        if cursor.is_none() {
            let details = HashMap::from([
                ("start_time".to_owned(), to_rfc3339(query.start)),
                ("end_time".to_owned(), to_rfc3339(query.end)),
            ]);
            self.record_own(user, pb::ActivityType::ActivityLogRead, details)
                .await?;
        }
        Ok((records, next))
    }

    /// Streams the caller's partner's log in a range as CSV or JSON lines
    /// (the export is itself recorded first).
    pub async fn export_activity(
        &self,
        user: &UserCaller,
        start: Micros,
        end: Micros,
        format: Format,
        proofs: Option<u64>,
    ) -> ApiResult<mpsc::Receiver<Result<pb::ExportActivityResponse, tonic::Status>>> {
        let partner_id = user.partner_id;
        let details = HashMap::from([
            ("start_time".to_owned(), to_rfc3339(start)),
            ("end_time".to_owned(), to_rfc3339(end)),
            ("format".to_owned(), format.name().to_owned()),
        ]);
        self.record_own(user, pb::ActivityType::ActivityLogExported, details)
            .await?;
        let (max_seq, proving) = match proofs {
            None => (self.store.head_seq(partner_id).await?, None),
            Some(previous) => {
                let (size, checkpoint, _) = self.checkpoint(user).await?.ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("the export's own record made no tree"))
                })?;
                let consistency = match previous {
                    0 => None,
                    m if m > size => {
                        return Err(ApiError::invalid(
                            "previous_size",
                            format!("the log has {size} records; ask for a size from 1 to that"),
                        ));
                    }
                    m => {
                        let reads = log::indexes_read(|r| tlog_tiles::prove_tree(size, m, r));
                        let fetched = self.store.hashes(partner_id, &reads).await?;
                        let proof = tlog_tiles::prove_tree(size, m, &fetched)
                            .map_err(|_| tree_damaged(partner_id, size))?;
                        Some((m, proof))
                    }
                };
                let outside = self
                    .store
                    .count_outside(partner_id, start, end, size as i64)
                    .await?;
                let proving = export::Proving {
                    size,
                    checkpoint,
                    complete: outside == 0,
                    consistency,
                };
                (size as i64, Some(proving))
            }
        };
        let query = Query {
            start,
            end,
            max_seq,
            ..Query::all(partner_id)
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(export::run(
            self.store.clone(),
            query,
            format,
            CHUNK,
            proving,
            tx,
        ));
        Ok(rx)
    }

    /// Signs a checkpoint of every partner's tree that grew since its last
    /// one, stores them and appends them to the file (one fsync).
    pub async fn sign_new_checkpoints(&self) -> ApiResult<usize> {
        let heads = self.store.unsigned_heads().await?;
        let mut signed = Vec::with_capacity(heads.len());
        for (partner, size) in heads {
            // One partner's damaged tree stops only its own checkpoints.
            match self.prepare(partner, size).await {
                Ok(checkpoint) => signed.push(checkpoint),
                Err(error) => {
                    tracing::error!(partner_id = %partner, size, error = %error, "not signing this activity log checkpoint");
                }
            }
        }
        self.keep(signed).await
    }

    /// Writes signed checkpoints outside the database first (one fsync),
    /// then into it: every checkpoint the database holds is in the file.
    async fn keep(&self, signed: Vec<(FiledCheckpoint, Hash)>) -> ApiResult<usize> {
        if signed.is_empty() {
            return Ok(0);
        }
        let filed: Vec<FiledCheckpoint> = signed.iter().map(|(c, _)| c.clone()).collect();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.append(&filed))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(ApiError::Internal)?;
        let rows: Vec<(PartnerId, u64, Hash, String)> = signed
            .iter()
            .map(|(c, root)| (c.partner_id, c.size, *root, c.note.clone()))
            .collect();
        self.store.save_checkpoints(&rows, self.clock.now()).await?;
        Ok(signed.len())
    }

    /// Signs checkpoints every [`CHECKPOINT_EVERY`] until `shutdown`.
    pub async fn checkpoint_until(self, shutdown: csp_kit::shutdown::Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            if let Err(error) = self.sign_new_checkpoints().await {
                tracing::warn!(%error, "cannot sign activity log checkpoints now; trying again");
            }
        }
    }

    /// Signs the checkpoint of `partner`'s tree of `size` leaves, once the
    /// tree is shown to extend the newest checkpoint signed before (so the
    /// key never signs a rewritten history, whatever the stored hashes say).
    async fn prepare(&self, partner: PartnerId, size: u64) -> ApiResult<(FiledCheckpoint, Hash)> {
        let root = self.root(partner, size).await?;
        if let Some((last_size, last_note)) = self.store.latest_checkpoint(partner).await?
            && last_size < size
        {
            match log::open(&last_note, self.key.verifier_key()) {
                Ok(last) => {
                    let reads = log::indexes_read(|r| tlog_tiles::prove_tree(size, last_size, r));
                    let fetched = self.store.hashes(partner, &reads).await?;
                    let extends = tlog_tiles::prove_tree(size, last_size, &fetched)
                        .and_then(|proof| {
                            tlog_tiles::check_tree(&proof, size, root, last_size, last.root)
                        })
                        .is_ok();
                    if !extends {
                        return Err(ApiError::Internal(anyhow::anyhow!(
                            "the stored tree of {size} leaves does not extend the checkpoint signed at {last_size}; run VerifyActivityLog"
                        )));
                    }
                }
                Err(error) => {
                    // Signed with another key (rotated): nothing to compare.
                    tracing::warn!(partner_id = %partner, %error, "the newest stored checkpoint does not open with the current key");
                }
            }
        }
        let note = self
            .key
            .sign(partner, size, root)
            .map_err(ApiError::Internal)?;
        Ok((
            FiledCheckpoint {
                partner_id: partner,
                size,
                note,
            },
            root,
        ))
    }

    /// The root of `partner`'s tree of `size` leaves, from the stored hashes.
    async fn root(&self, partner: PartnerId, size: u64) -> ApiResult<Hash> {
        let reads = log::indexes_read(|r| tlog_tiles::tree_hash(size, r));
        let fetched = self.store.hashes(partner, &reads).await?;
        tlog_tiles::tree_hash(size, &fetched).map_err(|_| tree_damaged(partner, size))
    }

    /// The public key and the caller's partner's origin.
    pub fn public_key(&self, user: &UserCaller) -> (String, String, String) {
        (
            self.key.verifier_key().to_owned(),
            self.key.name().to_owned(),
            log::origin(self.key.name(), user.partner_id),
        )
    }

    /// The caller's partner's newest checkpoint (signed now when records
    /// came since): (size, note, root); `None` for an empty log.
    pub async fn checkpoint(&self, user: &UserCaller) -> ApiResult<Option<(u64, String, Hash)>> {
        let partner = user.partner_id;
        let size = self.store.tree_size(partner).await?;
        if size == 0 {
            return Ok(None);
        }
        let (note, root) = match self.store.checkpoint_at(partner, size).await? {
            // The root the note signs (a note that does not open is
            // answered as stored; verification names it).
            Some(note) => match log::open(&note, self.key.verifier_key()) {
                Ok(head) => (note, head.root),
                Err(_) => {
                    let root = self.root(partner, size).await?;
                    (note, root)
                }
            },
            None => {
                let signed = self.prepare(partner, size).await?;
                let answer = (signed.0.note.clone(), signed.1);
                self.keep(vec![signed]).await?;
                answer
            }
        };
        Ok(Some((size, note, root)))
    }

    /// The tree size a proof is against: `asked`, or the newest signed
    /// checkpoint's when 0; never more than the tree holds.
    async fn proof_size(&self, partner: PartnerId, asked: u64, field: &str) -> ApiResult<u64> {
        let tree = self.store.tree_size(partner).await?;
        let size = match asked {
            0 => match self.store.latest_checkpoint(partner).await? {
                Some((signed, _)) => signed,
                None => tree,
            },
            n => n,
        };
        if size == 0 || size > tree {
            return Err(ApiError::invalid(
                field,
                format!("the log has {tree} records; ask for a size from 1 to that"),
            ));
        }
        Ok(size)
    }

    /// Proves a record of the caller's partner is in its tree of `size`.
    pub async fn inclusion_proof(
        &self,
        user: &UserCaller,
        leaf: Leaf,
        size: u64,
    ) -> ApiResult<Inclusion> {
        let partner = user.partner_id;
        let size = self.proof_size(partner, size, "tree_size").await?;
        let (index, field) = match &leaf {
            Leaf::Id(id) => {
                let record = self
                    .store
                    .record_by_id(partner, id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("activity record", id.clone()))?;
                ((record.seq - 1) as u64, "record_id")
            }
            Leaf::Index(index) => (*index, "leaf_index"),
        };
        if index >= size {
            return Err(ApiError::invalid(
                field,
                format!("leaf {index} is not in the tree of size {size}"),
            ));
        }
        let record = self
            .store
            .record_at(partner, index as i64 + 1)
            .await?
            .ok_or_else(|| ApiError::not_found("activity record", format!("leaf {index}")))?;
        let leaf_index = log::stored_hash_index(0, index);
        let mut reads = log::indexes_read(|r| tlog_tiles::prove_record(size, index, r));
        reads.push(leaf_index);
        let fetched = self.store.hashes(partner, &reads).await?;
        let proof = tlog_tiles::prove_record(size, index, &fetched)
            .map_err(|_| tree_damaged(partner, size))?;
        let leaf = *fetched
            .0
            .get(&leaf_index)
            .ok_or_else(|| tree_damaged(partner, size))?;
        Ok(Inclusion {
            index,
            size,
            entry: log::entry(&record),
            leaf,
            proof,
            checkpoint: self.store.checkpoint_at(partner, size).await?,
        })
    }

    /// Proves the caller's partner's tree of `second` extends that of
    /// `first`.
    pub async fn consistency_proof(
        &self,
        user: &UserCaller,
        first: u64,
        second: u64,
    ) -> ApiResult<Consistency> {
        let partner = user.partner_id;
        let second = self.proof_size(partner, second, "second_size").await?;
        if first == 0 || first > second {
            return Err(ApiError::invalid(
                "first_size",
                format!("ask for a size from 1 to {second}"),
            ));
        }
        let reads = log::indexes_read(|r| tlog_tiles::prove_tree(second, first, r));
        let fetched = self.store.hashes(partner, &reads).await?;
        let proof = tlog_tiles::prove_tree(second, first, &fetched)
            .map_err(|_| tree_damaged(partner, second))?;
        Ok(Consistency {
            first,
            second,
            proof,
            checkpoints: (
                self.store.checkpoint_at(partner, first).await?,
                self.store.checkpoint_at(partner, second).await?,
            ),
        })
    }

    /// Checks the caller's partner's whole log: the stored tree against
    /// every signed checkpoint (database and file), every record against
    /// the leaf logged at its place.
    pub async fn verify(&self, user: &UserCaller) -> ApiResult<Findings> {
        let partner = user.partner_id;
        // Checkpoints first, then the size: records and checkpoints that
        // come while the check runs are never taken for tampering.
        let mut notes: Vec<String> = self
            .store
            .checkpoints(partner)
            .await?
            .into_iter()
            .map(|(_, note)| note)
            .collect();
        let file = self.file.clone();
        let filed = tokio::task::spawn_blocking(move || file.read(partner))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(ApiError::Internal)?;
        notes.extend(filed.into_iter().map(|c| c.note));
        let size = self.store.tree_size(partner).await?;
        let mut findings = Findings {
            tree_size: size,
            ..Findings::default()
        };
        let origin = log::origin(self.key.name(), partner);
        let mut signed: std::collections::BTreeMap<u64, Hash> = std::collections::BTreeMap::new();
        for note in notes {
            match log::open(&note, self.key.verifier_key()) {
                Ok(c) if c.origin == origin => match signed.get(&c.size) {
                    Some(root) if *root != c.root => findings.forks.push(c.size),
                    Some(_) => {}
                    None => {
                        signed.insert(c.size, c.root);
                    }
                },
                _ => findings.forged_checkpoints += 1,
            }
        }
        findings.forks.sort_unstable();
        findings.forks.dedup();
        findings.checkpoints_checked = signed.len() as u64;
        // A signed size beyond the tree: leaves were cut off the end.
        if let Some((&largest, _)) = signed.last_key_value()
            && largest > size
        {
            findings.rewritten_at = Some(largest);
            for index in size..largest {
                findings.deleted(index);
            }
        }
        // The stored leaves, in order, against the signed roots.
        // Every stored subtree hash is also recomputed from the leaves
        // below it: a changed inner hash would fail auditors' proofs.
        let mut builder = log::RootBuilder::default();
        let mut next = 0u64;
        while next < size {
            let upto = (next + u64::from(CHUNK)).min(size);
            let stored = self
                .store
                .hashes_between(
                    partner,
                    log::stored_hash_index(0, next),
                    log::stored_hash_index(0, upto),
                )
                .await?;
            for n in next..upto {
                let Some(leaf) = stored.0.get(&log::stored_hash_index(0, n)).copied() else {
                    findings.tree_damaged.get_or_insert(n);
                    break;
                };
                for (index, hash) in builder.push_nodes(leaf) {
                    if stored.0.get(&index).is_some_and(|kept| *kept != hash) {
                        findings.tree_damaged.get_or_insert(n);
                    }
                }
                if let Some(root) = signed.get(&builder.size())
                    && *root != builder.root()
                    && findings.rewritten_at.is_none_or(|at| builder.size() < at)
                {
                    findings.rewritten_at = Some(builder.size());
                }
            }
            if findings.tree_damaged.is_some() && builder.size() < upto {
                break;
            }
            next = upto;
        }
        // Every record against the leaf at its place.
        let mut mismatched: Vec<domain::Mismatch> = Vec::new();
        let mut expected = 0u64;
        let mut after = 0;
        while after < size as i64 {
            let mut records = self.store.chain(partner, after, CHUNK * 5).await?;
            let Some(last) = records.last() else { break };
            after = last.seq;
            // Only the tree's records; what lies beyond is looked at last.
            records.retain(|r| r.seq >= 1 && r.seq <= size as i64);
            let in_tree: Vec<u64> = records.iter().map(|r| (r.seq - 1) as u64).collect();
            let stored = match (in_tree.first(), in_tree.last()) {
                (Some(&lo), Some(&hi)) => self.leaves(partner, lo, hi + 1).await?,
                _ => Vec::new(),
            };
            let base = in_tree.first().copied().unwrap_or(0);
            for record in &records {
                findings.checked += 1;
                let index = (record.seq - 1) as u64;
                while expected < index {
                    findings.deleted(expected);
                    expected += 1;
                }
                expected = index + 1;
                let leaf = log::leaf_hash(record);
                if stored.get((index - base) as usize) != Some(&leaf) {
                    mismatched.push(domain::Mismatch {
                        id: record.id.clone(),
                        index,
                        leaf: leaf.0,
                    });
                }
            }
        }
        while expected < size {
            findings.deleted(expected);
            expected += 1;
        }
        // Records beyond the tree: read them, then the tree's size again. A
        // record appended meanwhile committed with its leaf, so the size
        // read after it covers it; one beyond that size was written behind
        // the log's back.
        let beyond = self
            .store
            .chain(partner, size as i64, domain::MAX_REPORTED as u32)
            .await?;
        let now_size = self.store.tree_size(partner).await?;
        for record in beyond {
            if record.seq > now_size as i64 {
                findings.checked += 1;
                findings.inserted.push(record.id);
            }
        }
        // A mismatched record logged at another place was moved; else edited.
        if !mismatched.is_empty() {
            let wanted: std::collections::HashSet<[u8; 32]> =
                mismatched.iter().map(|m| m.leaf).collect();
            let mut logged_at: HashMap<[u8; 32], u64> = HashMap::new();
            let mut next = 0u64;
            while next < size {
                let upto = (next + u64::from(CHUNK)).min(size);
                for (k, leaf) in self
                    .leaves(partner, next, upto)
                    .await?
                    .into_iter()
                    .enumerate()
                {
                    if wanted.contains(&leaf.0) {
                        logged_at.entry(leaf.0).or_insert(next + k as u64);
                    }
                }
                next = upto;
            }
            domain::name_mismatches(
                mismatched,
                |leaf| logged_at.get(leaf).copied(),
                &mut findings,
            );
        }
        if !findings.intact() {
            tracing::error!(partner_id = %partner, summary = %findings.summary(), "activity log verification failed");
        }
        Ok(findings)
    }

    /// The stored leaf hashes of leaves `from..to` (a missing one ends the
    /// list early: the tree is damaged there).
    async fn leaves(&self, partner: PartnerId, from: u64, to: u64) -> ApiResult<Vec<Hash>> {
        let indexes: Vec<u64> = (from..to).map(|n| log::stored_hash_index(0, n)).collect();
        let fetched = self.store.hashes(partner, &indexes).await?;
        Ok(indexes
            .iter()
            .map_while(|i| fetched.0.get(i).copied())
            .collect())
    }

    /// Appends records of one partner.
    async fn append(&self, partner_id: PartnerId, records: Vec<Record>) -> ApiResult<u32> {
        let store = self.store.clone();
        self.appends
            .submit(
                partner_id,
                records,
                move |partner_id, calls: Vec<Vec<Record>>| {
                    let store = store.clone();
                    async move {
                        let sent: Vec<Vec<String>> = calls
                            .iter()
                            .map(|rs| rs.iter().map(|r| r.id.clone()).collect())
                            .collect();
                        let new = store
                            .append_ids(partner_id, calls.into_iter().flatten().collect())
                            .await?;
                        // A record new once is counted for the first call that
                        // sent it.
                        let mut new: std::collections::HashSet<String> = new.into_iter().collect();
                        Ok(sent
                            .into_iter()
                            .map(|ids| ids.iter().filter(|id| new.remove(*id)).count() as u32)
                            .collect())
                    }
                },
            )
            .await
    }

    /// Records that `user` read or exported the log.
    async fn record_own(
        &self,
        user: &UserCaller,
        kind: pb::ActivityType,
        details: HashMap<String, String>,
    ) -> ApiResult<()> {
        let now = self.clock.now();
        let kind = domain::kind_to_db(kind as i32).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "activity type {kind:?} has no stored spelling"
            ))
        })?;
        let record = Record {
            partner_id: user.partner_id,
            seq: 0,
            id: Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            occur_at: now,
            recorded_at: now,
            user_id: user.user_id.clone(),
            user_display_name: user.display_name.clone(),
            customer_tenant_id: String::new(),
            subscription_id: String::new(),
            product_id: String::new(),
            details: domain::canonical_details(&details),
        };
        self.append(user.partner_id, vec![record]).await?;
        Ok(())
    }
}

/// INTERNAL for a tree whose stored hashes do not add up.
fn tree_damaged(partner: PartnerId, size: u64) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "the activity log tree of partner {partner} lacks stored hashes below size {size}; run VerifyActivityLog"
    ))
}
