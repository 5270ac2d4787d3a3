//! The gRPC handlers: the intake (internal) and the query API (public).
//! Each decodes its request, takes the caller, calls one use case and
//! encodes the answer.

use csp_kit::clock::{Micros, to_timestamp};
use csp_kit::{ApiError, ApiResult, Caller, FieldViolation};
use csp_proto::audit::v1 as pb;
use csp_proto::audit::v1::audit_intake_service_server::AuditIntakeService;
use csp_proto::audit::v1::audit_service_server::AuditService;
use csp_proto::common::v1::RejectedEvent;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::domain::{self, Record, micros_of};
use crate::export::Format;
use crate::use_cases::{ActivityQuery, Audit};

/// The audit API (intake and queries) over its use cases.
#[derive(Clone)]
pub struct AuditApi {
    audit: Audit,
}

impl AuditApi {
    /// The API over `audit`.
    pub fn new(audit: Audit) -> Self {
        Self { audit }
    }
}

#[tonic::async_trait]
impl AuditIntakeService for AuditApi {
    async fn record_activities(
        &self,
        request: Request<pb::RecordActivitiesRequest>,
    ) -> Result<Response<pb::RecordActivitiesResponse>, Status> {
        Caller::service_of(&request)?;
        let intake = self
            .audit
            .record_activities(&request.get_ref().records)
            .await?;
        Ok(Response::new(pb::RecordActivitiesResponse {
            recorded: intake.recorded,
            rejected: intake
                .rejected
                .into_iter()
                .map(|(event_id, reason)| RejectedEvent { event_id, reason })
                .collect(),
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
        let query = ActivityQuery {
            start,
            end,
            kind: kind.to_owned(),
            customer_tenant_id: r.customer_tenant_id,
            user_id: r.user_id,
        };
        let (records, next_page_token) = self
            .audit
            .list_activity(&user, &query, r.page_size, &r.page_token)
            .await?;
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
        let chunks = self
            .audit
            .export_activity(&user, start, end, format)
            .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }

    async fn verify_activity_log(
        &self,
        request: Request<pb::VerifyActivityLogRequest>,
    ) -> Result<Response<pb::VerifyActivityLogResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.get_ref();
        time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
        let findings = self.audit.verify(&user).await?;
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
