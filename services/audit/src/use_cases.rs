//! Audit's use cases: taking records in from producers, listing, exporting
//! and verifying a partner's log. Each appends to the chain through one
//! storage call that owns its transaction, then writes the checkpoint
//! outside the database. Handlers call exactly one of these.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::{Clock, Micros, to_rfc3339};
use csp_kit::identity::UserCaller;
use csp_kit::ids::PartnerId;
use csp_kit::{ApiError, ApiResult, paging};
use csp_proto::audit::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::checkpoints::CheckpointFile;
use crate::domain::{self, Findings, Record, Signer, Verifier};
use crate::export::{self, Format};
use crate::storage::{AuditStore, Query};

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
    signer: Signer,
    file: CheckpointFile,
    clock: Arc<dyn Clock>,
}

impl Audit {
    /// Over `store`, signing checkpoints with `signer` and appending them to
    /// `file` too.
    pub fn new(
        store: AuditStore,
        signer: Signer,
        file: CheckpointFile,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            signer,
            file,
            clock,
        }
    }

    /// Takes producers' records: each checked (a bad one is rejected with
    /// its reason), consecutive records of one partner appended together,
    /// ids seen before skipped.
    pub async fn record_activities(&self, records: &[pb::ActivityRecord]) -> ApiResult<Intake> {
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
            match domain::intake_record(r, now) {
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
    ) -> ApiResult<mpsc::Receiver<Result<pb::ExportActivityResponse, tonic::Status>>> {
        let partner_id = user.partner_id;
        let max_seq = self.store.head_seq(partner_id).await?;
        let details = HashMap::from([
            ("start_time".to_owned(), to_rfc3339(start)),
            ("end_time".to_owned(), to_rfc3339(end)),
            ("format".to_owned(), format.name().to_owned()),
        ]);
        self.record_own(user, pb::ActivityType::ActivityLogExported, details)
            .await?;
        let query = Query {
            start,
            end,
            max_seq,
            ..Query::all(partner_id)
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(export::run(self.store.clone(), query, format, CHUNK, tx));
        Ok(rx)
    }

    /// Walks the caller's partner's whole chain against the checkpoints in
    /// the database and in the file.
    pub async fn verify(&self, user: &UserCaller) -> ApiResult<Findings> {
        let partner_id = user.partner_id;
        let mut checkpoints = self.store.checkpoints(partner_id).await?;
        checkpoints.extend(self.file.read(partner_id).map_err(ApiError::Internal)?);
        let mut verifier = Verifier::new(&self.signer, checkpoints);
        let mut after = 0;
        loop {
            let records = self.store.chain(partner_id, after, CHUNK * 5).await?;
            let Some(last) = records.last() else { break };
            after = last.seq;
            for record in &records {
                verifier.push(record);
            }
        }
        let findings = verifier.finish();
        if !findings.intact() {
            tracing::error!(partner_id = %partner_id, summary = %findings.summary(), "activity log verification failed");
        }
        Ok(findings)
    }

    /// Appends records of one partner and writes the checkpoint outside the
    /// database.
    async fn append(&self, partner_id: PartnerId, records: Vec<Record>) -> ApiResult<u32> {
        let (added, checkpoint) = self
            .store
            .append(partner_id, records, &self.signer, self.clock.now())
            .await?;
        if let Some(checkpoint) = checkpoint {
            self.file
                .append(&[checkpoint])
                .map_err(ApiError::Internal)?;
        }
        Ok(added)
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
            prev_hash: String::new(),
            hash: String::new(),
        };
        self.append(user.partner_id, vec![record]).await?;
        Ok(())
    }
}
