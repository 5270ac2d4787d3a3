//! Calling other csp services: lazily connected channels that sign every
//! call with this service's identity, and the outbox destination every
//! service shares, the audit log.

use std::sync::Arc;

use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;
use csp_proto::audit::v1::{ActivityRecord, RecordActivitiesRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{IdentityKey, ServiceIdentity};
use crate::outbox::{self, Destination, Envelope, Outcome};

/// A channel whose calls carry this service's signed identity.
pub type Signed = InterceptedService<Channel, ServiceIdentity>;

/// A lazily connected channel to `url` that signs calls as `service`.
pub fn signed_channel(url: &str, key: &Arc<IdentityKey>, service: &str) -> anyhow::Result<Signed> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("{url:?} is not a valid URL: {error}"))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .connect_lazy();
    Ok(InterceptedService::new(
        channel,
        ServiceIdentity::new(key.clone(), service),
    ))
}

/// The destination name of the audit service.
pub const AUDIT: &str = "audit";

/// Delivers activities to audit.
pub struct AuditDestination {
    client: AuditIntakeServiceClient<Signed>,
}

impl AuditDestination {
    /// Over `channel`.
    pub fn new(channel: Signed) -> Self {
        Self {
            client: AuditIntakeServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl Destination for AuditDestination {
    fn name(&self) -> &'static str {
        AUDIT
    }

    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let (records, mut rejected) = decode_all::<ActivityRecord>(batch);
        if records.is_empty() {
            return Outcome::Accepted { rejected };
        }
        match self
            .client
            .clone()
            .record_activities(RecordActivitiesRequest { records })
            .await
        {
            Ok(response) => {
                rejected.extend(
                    response
                        .into_inner()
                        .rejected
                        .into_iter()
                        .map(|r| (r.event_id, r.reason)),
                );
                Outcome::Accepted { rejected }
            }
            Err(status) => outbox::failed(&status),
        }
    }
}

/// Decodes payloads; one that does not decode is rejected (it never will).
pub fn decode_all<M: prost::Message + Default>(
    batch: &[Envelope],
) -> (Vec<M>, Vec<(String, String)>) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for envelope in batch {
        match M::decode(envelope.payload.as_slice()) {
            Ok(message) => decoded.push(message),
            Err(error) => rejected.push((
                envelope.event_id.clone(),
                format!("the payload does not decode: {error}"),
            )),
        }
    }
    (decoded, rejected)
}

/// Encodes a message for the outbox.
pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}
