//! gRPC handlers: the intake (internal) and the query API (public).

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::{Clock, Micros, to_timestamp};
use csp_kit::identity::UserCaller;
use csp_kit::{ApiError, ApiResult, Caller, FieldViolation, paging};
use csp_proto::audit::v1 as pb;
use csp_proto::audit::v1::audit_intake_service_server::AuditIntakeService;
use csp_proto::audit::v1::audit_service_server::AuditService;
use csp_proto::common::v1::RejectedEvent;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::checkpoints::CheckpointFile;
use crate::domain::{self, Record, Signer, Verifier};
use crate::export::{self, Format};
use crate::storage::{AuditStore, Query};

/// Records read per query when exporting or verifying.
const CHUNK: u32 = 1000;

/// The audit API (intake and queries).
#[derive(Clone)]
pub struct AuditApi {
    store: AuditStore,
    signer: Signer,
    file: CheckpointFile,
    clock: Arc<dyn Clock>,
}

impl AuditApi {
    /// The API.
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

    /// Appends records of one partner and writes the checkpoint outside the
    /// database.
    async fn append(&self, partner_id: &str, records: Vec<Record>) -> ApiResult<u32> {
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
        let record = Record {
            partner_id: String::new(),
            seq: 0,
            id: Uuid::new_v4().to_string(),
            kind: domain::kind_to_db(kind as i32)
                .unwrap_or("activity_log_read")
                .to_owned(),
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
        self.append(&user.partner_id.to_string(), vec![record])
            .await?;
        Ok(())
    }
}

/// A record from the intake, checked; or why it is refused.
fn intake_record(r: &pb::ActivityRecord, now: Micros) -> Result<(String, Record), String> {
    let partner =
        Uuid::parse_str(&r.partner_id).map_err(|_| "partner_id is not a UUID".to_owned())?;
    let a = r.activity.as_ref().ok_or("the record has no activity")?;
    if a.id.trim().is_empty() || a.id.len() > 128 {
        return Err("the activity id must be 1 to 128 characters".to_owned());
    }
    let kind = domain::kind_to_db(a.r#type).ok_or("the activity type is unspecified or unknown")?;
    let occur = a
        .occur_time
        .as_ref()
        .ok_or("the activity has no occur_time")?;
    let occur_at = micros_of(occur).ok_or("occur_time is not a valid time")?;
    Ok((
        partner.to_string(),
        Record {
            partner_id: partner.to_string(),
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
            details: domain::canonical_details(&a.details),
            prev_hash: String::new(),
            hash: String::new(),
        },
    ))
}

fn micros_of(t: &prost_types::Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(t.nanos / 1000))
}

/// Checks a [start, end) range, naming the bad field.
pub fn time_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> ApiResult<(Micros, Micros)> {
    let mut violations = Vec::new();
    let mut parse = |field: &str, t: Option<&prost_types::Timestamp>| match t {
        None => {
            violations.push(FieldViolation::new(
                field,
                "required: an RFC 3339 time such as 2026-01-31T00:00:00Z",
            ));
            None
        }
        Some(t) => match micros_of(t) {
            Some(m) => Some(m),
            None => {
                violations.push(FieldViolation::new(field, "not a valid time"));
                None
            }
        },
    };
    let start = parse("start_time", start);
    let end = parse("end_time", end);
    match (start, end) {
        (Some(s), Some(e)) if s > e => Err(ApiError::invalid(
            "start_time",
            "the range starts after it ends; start_time must not be after end_time",
        )),
        (Some(s), Some(e)) => Ok((s, e)),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

/// The contract's view of a record.
pub fn activity(r: &Record) -> pb::Activity {
    pb::Activity {
        id: r.id.clone(),
        r#type: domain::kind_to_pb(&r.kind),
        occur_time: Some(to_timestamp(r.occur_at)),
        user_id: r.user_id.clone(),
        user_display_name: r.user_display_name.clone(),
        customer_tenant_id: r.customer_tenant_id.clone(),
        subscription_id: r.subscription_id.clone(),
        product_id: r.product_id.clone(),
        details: serde_json::from_str(&r.details).unwrap_or_default(),
    }
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Cursor {
    at: Micros,
    seq: i64,
    max_seq: i64,
    filter: String,
}

#[tonic::async_trait]
impl AuditIntakeService for AuditApi {
    async fn record_activities(
        &self,
        request: Request<pb::RecordActivitiesRequest>,
    ) -> Result<Response<pb::RecordActivitiesResponse>, Status> {
        Caller::service_of(&request)?;
        let now = self.clock.now();
        let mut rejected = Vec::new();
        // Consecutive records of one partner go in one append.
        let mut batches: Vec<(String, Vec<Record>)> = Vec::new();
        for r in &request.get_ref().records {
            match intake_record(r, now) {
                Ok((partner, record)) => match batches.last_mut() {
                    Some((p, records)) if *p == partner => records.push(record),
                    _ => batches.push((partner, vec![record])),
                },
                Err(reason) => rejected.push(RejectedEvent {
                    event_id: r
                        .activity
                        .as_ref()
                        .map(|a| a.id.clone())
                        .unwrap_or_default(),
                    reason,
                }),
            }
        }
        let mut recorded = 0;
        for (partner, records) in batches {
            recorded += self.append(&partner, records).await?;
        }
        Ok(Response::new(pb::RecordActivitiesResponse {
            recorded,
            rejected,
        }))
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let (start, end) = time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
        let kind = match r.r#type {
            0 => "",
            n => domain::kind_to_db(n)
                .ok_or_else(|| ApiError::invalid("type", format!("{n} is not an ActivityType")))?,
        };
        let size = paging::page_size(r.page_size, 100, 1000)?;
        let filter = format!(
            "{start}|{end}|{kind}|{}|{}",
            r.customer_tenant_id, r.user_id
        );
        let cursor = paging::decode::<Cursor>(&r.page_token)?;
        if cursor.as_ref().is_some_and(|c| c.filter != filter) {
            return Err(ApiError::invalid(
                "page_token",
                "this page token belongs to a query with other filters; start again from an empty page_token",
            )
            .into());
        }
        let partner_id = user.partner_id.to_string();
        let max_seq = match &cursor {
            Some(c) => c.max_seq,
            None => self.store.head_seq(&partner_id).await?,
        };
        let query = Query {
            partner_id,
            start,
            end,
            kind: kind.to_owned(),
            customer_tenant_id: r.customer_tenant_id.trim().to_owned(),
            user_id: r.user_id.trim().to_owned(),
            max_seq,
        };
        let mut records = self
            .store
            .page(&query, cursor.as_ref().map(|c| (c.at, c.seq)), size + 1)
            .await?;
        let next_page_token = paging::finish_page(&mut records, size, |last| Cursor {
            at: last.occur_at,
            seq: last.seq,
            max_seq,
            filter: filter.clone(),
        });
        if cursor.is_none() {
            let details = HashMap::from([
                ("start_time".to_owned(), csp_kit::clock::to_rfc3339(start)),
                ("end_time".to_owned(), csp_kit::clock::to_rfc3339(end)),
            ]);
            self.record_own(&user, pb::ActivityType::ActivityLogRead, details)
                .await?;
        }
        Ok(Response::new(pb::ListActivityResponse {
            activities: records.iter().map(activity).collect(),
            next_page_token,
        }))
    }

    async fn export_activity(
        &self,
        request: Request<pb::ExportActivityRequest>,
    ) -> Result<Response<BoxStream<pb::ExportActivityResponse>>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let (start, end) = time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
        let format = match pb::ExportFormat::try_from(r.format) {
            Ok(pb::ExportFormat::Csv) => Format::Csv,
            Ok(pb::ExportFormat::JsonLines) => Format::JsonLines,
            _ => {
                return Err(ApiError::invalid(
                    "format",
                    "choose EXPORT_FORMAT_CSV or EXPORT_FORMAT_JSON_LINES",
                )
                .into());
            }
        };
        let partner_id = user.partner_id.to_string();
        let max_seq = self.store.head_seq(&partner_id).await?;
        let details = HashMap::from([
            ("start_time".to_owned(), csp_kit::clock::to_rfc3339(start)),
            ("end_time".to_owned(), csp_kit::clock::to_rfc3339(end)),
            ("format".to_owned(), format.name().to_owned()),
        ]);
        self.record_own(&user, pb::ActivityType::ActivityLogExported, details)
            .await?;
        let query = Query {
            partner_id,
            start,
            end,
            max_seq,
            ..Query::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.store.clone();
        tokio::spawn(export::run(store, query, format, CHUNK, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn verify_activity_log(
        &self,
        request: Request<pb::VerifyActivityLogRequest>,
    ) -> Result<Response<pb::VerifyActivityLogResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
        let partner_id = user.partner_id.to_string();
        let mut checkpoints = self.store.checkpoints(&partner_id).await?;
        checkpoints.extend(self.file.read(&partner_id).map_err(ApiError::Internal)?);
        let mut verifier = Verifier::new(&self.signer, checkpoints);
        let mut after = 0;
        loop {
            let records = self.store.chain(&partner_id, after, CHUNK * 5).await?;
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
        Ok(Response::new(pb::VerifyActivityLogResponse {
            intact: findings.intact(),
            records_checked: findings.checked,
            first_mismatch_id: findings
                .first_mismatch
                .as_ref()
                .map(|m| m.0.clone())
                .unwrap_or_default(),
            missing_sequence_numbers: findings.missing.iter().map(|s| *s as u64).collect(),
            summary: findings.summary(),
        }))
    }
}
