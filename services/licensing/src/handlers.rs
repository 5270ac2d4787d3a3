//! The gRPC handlers, public and internal: each decodes its request, takes
//! the caller, calls one use case and encodes the answer.

use csp_kit::Caller;
use csp_kit::clock::to_timestamp;
use csp_kit::ids::{PartnerId, SubscriptionId, TenantId};
use csp_proto::common::v1::RejectedEvent;
use csp_proto::licensing::v1 as pb;
use csp_proto::licensing::v1::licensing_internal_service_server::LicensingInternalService;
use csp_proto::licensing::v1::licensing_service_server::LicensingService;
use tonic::{Request, Response, Status};

use crate::domain::{self, Dead, EntitlementStatus, MAX_DOWNLOADS, Selection};
use crate::use_cases::{Inspection, Licensing, Redemption};

/// The licensing API (public and internal) over its use cases.
#[derive(Clone)]
pub struct LicensingApi {
    licensing: Licensing,
}

impl LicensingApi {
    /// The API over `licensing`.
    pub fn new(licensing: Licensing) -> Self {
        Self { licensing }
    }
}

#[tonic::async_trait]
impl LicensingService for LicensingApi {
    async fn list_software(
        &self,
        request: Request<pb::ListSoftwareRequest>,
    ) -> Result<Response<pb::ListSoftwareResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let customer =
            TenantId::parse("customer_tenant_id", &request.get_ref().customer_tenant_id)?;
        let software = self.licensing.list_software(partner, customer).await?;
        Ok(Response::new(pb::ListSoftwareResponse {
            software: software
                .into_iter()
                .map(|s| pb::Software {
                    subscription_id: s.entitlement.subscription_id.to_string(),
                    product_id: s.entitlement.product_id,
                    product_title: s.entitlement.product_title,
                    status: match s.entitlement.status {
                        EntitlementStatus::Active => pb::EntitlementStatus::Active,
                        EntitlementStatus::Revoked => pb::EntitlementStatus::Revoked,
                    } as i32,
                    download_options: Some(s.options),
                })
                .collect(),
        }))
    }

    async fn get_keys_and_downloads(
        &self,
        request: Request<pb::GetKeysAndDownloadsRequest>,
    ) -> Result<Response<pb::GetKeysAndDownloadsResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let customer = TenantId::parse("customer_tenant_id", &r.customer_tenant_id)?;
        let subscription = SubscriptionId::parse("subscription_id", &r.subscription_id)?;
        let selection = Selection {
            version: r.version.trim().to_owned(),
            language: r.language.trim().to_owned(),
            file_type: r.file_type.trim().to_owned(),
        };
        let issued = self
            .licensing
            .keys_and_downloads(&user, customer, subscription, selection)
            .await?;
        Ok(Response::new(pb::GetKeysAndDownloadsResponse {
            product_key: issued.product_key,
            download_link: Some(pb::DownloadLink {
                url: issued.url,
                expire_time: Some(to_timestamp(issued.expires_at)),
                downloads_remaining: u32::try_from(issued.downloads_remaining).unwrap_or(0),
                file_size_bytes: u64::try_from(issued.file.size_bytes).unwrap_or(0),
                file_sha256: issued.file.sha256,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LicensingInternalService for LicensingApi {
    async fn apply_ordering_events(
        &self,
        request: Request<pb::ApplyOrderingEventsRequest>,
    ) -> Result<Response<pb::ApplyOrderingEventsResponse>, Status> {
        Caller::service_of(&request)?;
        let outcome = self
            .licensing
            .apply_events(request.into_inner().events)
            .await?;
        Ok(Response::new(pb::ApplyOrderingEventsResponse {
            applied: outcome.applied,
            rejected: outcome
                .rejected
                .into_iter()
                .map(|(event_id, reason)| RejectedEvent { event_id, reason })
                .collect(),
        }))
    }

    async fn revoke_subscription(
        &self,
        request: Request<pb::RevokeSubscriptionRequest>,
    ) -> Result<Response<pb::RevokeSubscriptionResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.get_ref();
        let partner = PartnerId::parse("partner_id", &r.partner_id)?;
        let subscription = SubscriptionId::parse("subscription_id", &r.subscription_id)?;
        let revoked = self
            .licensing
            .revoke_subscription(partner, subscription)
            .await?;
        Ok(Response::new(pb::RevokeSubscriptionResponse {
            links_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn redeem_download_link(
        &self,
        request: Request<pb::RedeemDownloadLinkRequest>,
    ) -> Result<Response<pb::RedeemDownloadLinkResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.get_ref();
        let redemption = self
            .licensing
            .redeem(&r.token, &r.client_address, &r.user_agent)
            .await?;
        Ok(Response::new(redemption_to_pb(redemption)))
    }

    async fn inspect_download_link(
        &self,
        request: Request<pb::InspectDownloadLinkRequest>,
    ) -> Result<Response<pb::InspectDownloadLinkResponse>, Status> {
        Caller::service_of(&request)?;
        let inspection = self.licensing.inspect(&request.get_ref().token).await?;
        Ok(Response::new(inspection_to_pb(inspection)))
    }
}

fn inspection_to_pb(inspection: Inspection) -> pb::InspectDownloadLinkResponse {
    match inspection {
        Inspection::Works {
            remaining,
            max_downloads,
        } => pb::InspectDownloadLinkResponse {
            outcome: pb::RedeemOutcome::Redirect as i32,
            downloads_remaining: u32::try_from(remaining).unwrap_or(0),
            max_downloads: u32::try_from(max_downloads).unwrap_or(0),
            message: String::new(),
        },
        Inspection::Dead { why, max_downloads } => {
            let dead = redemption_to_pb(Redemption::Dead { why, max_downloads });
            pb::InspectDownloadLinkResponse {
                outcome: dead.outcome,
                downloads_remaining: 0,
                max_downloads: dead.max_downloads,
                message: dead.message,
            }
        }
        Inspection::Unknown => {
            let unknown = redemption_to_pb(Redemption::Unknown);
            pb::InspectDownloadLinkResponse {
                outcome: unknown.outcome,
                downloads_remaining: 0,
                max_downloads: unknown.max_downloads,
                message: unknown.message,
            }
        }
    }
}

fn redemption_to_pb(redemption: Redemption) -> pb::RedeemDownloadLinkResponse {
    match redemption {
        Redemption::Redirect {
            url,
            count,
            max_downloads,
        } => pb::RedeemDownloadLinkResponse {
            outcome: pb::RedeemOutcome::Redirect as i32,
            redirect_url: url,
            download_count: u32::try_from(count).unwrap_or(0),
            max_downloads: u32::try_from(max_downloads).unwrap_or(0),
            message: String::new(),
        },
        Redemption::Dead { why, max_downloads } => pb::RedeemDownloadLinkResponse {
            outcome: match why {
                Dead::Revoked => pb::RedeemOutcome::Revoked,
                Dead::UsedUp => pb::RedeemOutcome::UsedUp,
                Dead::Expired => pb::RedeemOutcome::Expired,
            } as i32,
            max_downloads: u32::try_from(max_downloads).unwrap_or(0),
            message: domain::dead_link_sentence(why).to_owned(),
            ..Default::default()
        },
        Redemption::Unknown => pb::RedeemDownloadLinkResponse {
            outcome: pb::RedeemOutcome::Unknown as i32,
            max_downloads: MAX_DOWNLOADS as u32,
            message: "This download link does not exist. Check that the whole link was copied; \
                      your partner can enable a new one."
                .to_owned(),
            ..Default::default()
        },
    }
}
