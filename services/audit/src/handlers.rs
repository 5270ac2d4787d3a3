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
use crate::use_cases::{ActivityQuery, Audit, Leaf};

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
        let producer = Caller::service_of(&request)?;
        let intake = self
            .audit
            .record_activities(producer, &request.get_ref().records)
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
        let proofs = r.include_proofs.then_some(r.previous_size);
        if !r.include_proofs && r.previous_size > 0 {
            return Err(ApiError::invalid(
                "previous_size",
                "a consistency proof comes with a proof bundle: set include_proofs",
            )
            .into());
        }
        let chunks = self
            .audit
            .export_activity(&user, start, end, format, proofs)
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
            first_mismatch_id: findings.first_mismatch().unwrap_or_default().to_owned(),
            missing_sequence_numbers: findings.missing.iter().map(|i| i + 1).collect(),
            summary: findings.summary(),
            tree_size: findings.tree_size,
            edited_record_ids: findings.edited.iter().map(|(id, _)| id.clone()).collect(),
            reordered_record_ids: findings
                .reordered
                .iter()
                .map(|(id, _, _)| id.clone())
                .collect(),
            inserted_record_ids: findings.inserted.clone(),
            rewritten_at_size: findings.rewritten_at.unwrap_or(0),
            forked_sizes: findings.forks.clone(),
            forged_checkpoints: findings.forged_checkpoints,
            tree_damaged: findings.tree_damaged.is_some(),
        }))
    }

    async fn get_log_public_key(
        &self,
        request: Request<pb::GetLogPublicKeyRequest>,
    ) -> Result<Response<pb::GetLogPublicKeyResponse>, Status> {
        let user = Caller::user_of(&request)?;
        let (verifier_key, key_name, origin) = self.audit.public_key(user);
        Ok(Response::new(pb::GetLogPublicKeyResponse {
            verifier_key,
            key_name,
            origin,
        }))
    }

    async fn get_log_checkpoint(
        &self,
        request: Request<pb::GetLogCheckpointRequest>,
    ) -> Result<Response<pb::GetLogCheckpointResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let answer = match self.audit.checkpoint(&user).await? {
            Some((tree_size, checkpoint, root)) => pb::GetLogCheckpointResponse {
                checkpoint,
                tree_size,
                root_hash: root.0.to_vec(),
            },
            None => pb::GetLogCheckpointResponse::default(),
        };
        Ok(Response::new(answer))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        use pb::get_inclusion_proof_request::Record as Which;
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let leaf = match r.record {
            Some(Which::RecordId(id)) if !id.trim().is_empty() => Leaf::Id(id.trim().to_owned()),
            Some(Which::LeafIndex(index)) => Leaf::Index(index),
            _ => {
                return Err(ApiError::invalid("record", "set record_id or leaf_index").into());
            }
        };
        let proof = self.audit.inclusion_proof(&user, leaf, r.tree_size).await?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_index: proof.index,
            tree_size: proof.size,
            entry: proof.entry,
            leaf_hash: proof.leaf.0.to_vec(),
            proof: proof.proof.iter().map(|h| h.0.to_vec()).collect(),
            checkpoint: proof.checkpoint.unwrap_or_default(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let proof = self
            .audit
            .consistency_proof(&user, r.first_size, r.second_size)
            .await?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            first_size: proof.first,
            second_size: proof.second,
            proof: proof.proof.iter().map(|h| h.0.to_vec()).collect(),
            first_checkpoint: proof.checkpoints.0.unwrap_or_default(),
            second_checkpoint: proof.checkpoints.1.unwrap_or_default(),
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
