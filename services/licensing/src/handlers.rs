//! gRPC handlers, public and internal.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::activity::Activity;
use csp_kit::clock::{Clock, Micros, to_rfc3339, to_timestamp};
use csp_kit::ids::{PartnerId, SubscriptionId, TenantId};
use csp_kit::peer::{PeerResult as _, Signed};
use csp_kit::{ApiError, ApiResult, Caller};
use csp_proto::audit::v1::ActivityType;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::catalog::v1::{DownloadOptions, GetProductRequest, ProductKind};
use csp_proto::common::v1::RejectedEvent;
use csp_proto::licensing::v1 as pb;
use csp_proto::licensing::v1::licensing_internal_service_server::LicensingInternalService;
use csp_proto::licensing::v1::licensing_service_server::LicensingService;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_proto::ordering::v1::{CheckCustomerRequest, OrderingEvent, ordering_event};
use csp_store::outbox::Message;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::EntitlementStatus;
use crate::domain::{self, LINK_LIFETIME, MAX_DOWNLOADS, Options};
use crate::secrets::{self, Sealer};
use crate::storage::{Entitlement, LicensingStore, NewLink, Redeemed, Selection};
use csp_store::StoreError;

/// Where links point and files live.
#[derive(Clone, Debug)]
pub struct Urls {
    /// The gateway's public download listener, for example
    /// `http://127.0.0.1:8080`.
    pub download_base: String,
    /// Where files are served from.
    pub content_origin: String,
}

/// The licensing API (public and internal).
#[derive(Clone)]
pub struct LicensingApi {
    store: LicensingStore,
    catalog: CatalogServiceClient<Signed>,
    ordering: OrderingInternalServiceClient<Signed>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    urls: Arc<Urls>,
    relay: Arc<Notify>,
}

impl LicensingApi {
    /// The API.
    pub fn new(
        store: LicensingStore,
        catalog: Signed,
        ordering: Signed,
        sealer: Sealer,
        clock: Arc<dyn Clock>,
        urls: Urls,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            catalog: CatalogServiceClient::new(catalog),
            ordering: OrderingInternalServiceClient::new(ordering),
            sealer: Arc::new(sealer),
            clock,
            urls: Arc::new(urls),
            relay,
        }
    }

    async fn options(&self, product_id: &str) -> ApiResult<DownloadOptions> {
        match self
            .catalog
            .clone()
            .get_product(GetProductRequest {
                product_id: product_id.to_owned(),
                market: String::new(),
            })
            .await
            .peer("catalog")
        {
            Ok(answer) => Ok(answer
                .product
                .and_then(|p| p.download_options)
                .unwrap_or_default()),
            Err(error) if error.is_not_found() => Ok(DownloadOptions::default()),
            Err(error) => Err(error.into()),
        }
    }

    async fn get_keys_and_downloads(
        &self,
        user: &csp_kit::identity::UserCaller,
        r: pb::GetKeysAndDownloadsRequest,
    ) -> ApiResult<pb::GetKeysAndDownloadsResponse> {
        let partner = user.partner_id.to_string();
        let customer = TenantId::parse("customer_tenant_id", &r.customer_tenant_id)?.to_string();
        let subscription =
            SubscriptionId::parse("subscription_id", &r.subscription_id)?.to_string();
        let entitlement = self
            .store
            .entitlement(&partner, &subscription)
            .await?
            .filter(|e| e.customer_tenant_id == customer)
            .ok_or_else(|| ApiError::not_found("subscription", &subscription))?;
        if entitlement.status != EntitlementStatus::Active {
            return Err(domain::revoked_error(&subscription));
        }
        let options = self.options(&entitlement.product_id).await?;
        let options = Options {
            versions: options.versions,
            languages: options.languages,
            file_types: options.file_types.into_iter().map(|f| f.id).collect(),
        };
        let selection = Selection {
            version: r.version.trim().to_owned(),
            language: r.language.trim().to_owned(),
            file_type: r.file_type.trim().to_owned(),
        };
        domain::check_selection(
            &options,
            &selection.version,
            &selection.language,
            &selection.file_type,
        )?;

        let now = self.clock.now();
        let key_context = format!("{subscription}/{}", selection.version);
        let fresh_key = self
            .sealer
            .seal(&secrets::new_product_key()?, &key_context)?;
        let link_id = Uuid::new_v4().to_string();
        let token = secrets::new_token()?;
        let fresh_link = NewLink {
            id: link_id.clone(),
            token_hash: secrets::token_hash(&token),
            sealed_token: self.sealer.seal(&token, &link_id)?,
            expires_at: now + LINK_LIFETIME,
            max_downloads: MAX_DOWNLOADS,
            issued_by_user_id: user.user_id.clone(),
        };
        let activity = |kind| {
            self.activity(kind, &entitlement, now)
                .by_user(user)
                .detail("version", &selection.version)
                .detail("language", &selection.language)
                .detail("file_type", &selection.file_type)
        };
        let key_accessed = Message::activity(
            &entitlement.subscription_id,
            activity(ActivityType::KeyAccessed),
        );
        let link_issued = Message::activity(
            &entitlement.subscription_id,
            activity(ActivityType::DownloadLinkIssued)
                .detail("link_id", &fresh_link.id)
                .detail("expires_at", to_rfc3339(fresh_link.expires_at))
                .detail("max_downloads", fresh_link.max_downloads),
        );
        let issued = self
            .store
            .issue(
                &entitlement,
                &selection,
                now,
                &fresh_key,
                &fresh_link,
                &[key_accessed],
                &[link_issued],
            )
            .await?
            .ok_or_else(|| domain::revoked_error(&subscription))?;
        self.relay.notify_one();
        let product_key = self.sealer.open(&issued.sealed_key, &key_context)?;
        let token = self
            .sealer
            .open(&issued.link.sealed_token, &issued.link.id)?;
        tracing::info!(
            subscription_id = %subscription,
            link_id = %issued.link.id,
            new_link = issued.link_is_new,
            "keys and download link handed out"
        );
        Ok(pb::GetKeysAndDownloadsResponse {
            product_key,
            download_link: Some(pb::DownloadLink {
                url: format!(
                    "{}/download/{token}",
                    self.urls.download_base.trim_end_matches('/')
                ),
                expire_time: Some(to_timestamp(issued.link.expires_at)),
                downloads_remaining: u32::try_from(
                    issued.link.max_downloads - issued.link.downloads,
                )
                .unwrap_or(0),
            }),
        })
    }

    /// An activity about an entitlement, for the audit log.
    fn activity(&self, kind: ActivityType, e: &Entitlement, at: Micros) -> Activity {
        Activity::new(e.partner_id, kind, at)
            .customer(&e.customer_tenant_id)
            .subscription(&e.subscription_id)
            .product(&e.product_id)
    }

    /// Applies one of ordering's events once; `Ok(false)` when it was
    /// applied before.
    async fn apply(&self, event: OrderingEvent) -> Result<bool, ApplyError> {
        let now = self.clock.now();
        if Uuid::parse_str(&event.event_id).is_err() {
            return Err(ApplyError::Invalid("event_id is not a UUID"));
        }
        let partner_id: PartnerId = event
            .partner_id
            .parse()
            .map_err(|_| ApplyError::Invalid("the partner id is missing or not a UUID"))?;
        match event.payload {
            Some(ordering_event::Payload::OrderPlaced(placed)) => {
                let order = placed.order.ok_or(ApplyError::Invalid(
                    "an OrderPlaced event without its order",
                ))?;
                let titles: HashMap<&str, &str> = order
                    .lines
                    .iter()
                    .map(|l| (l.subscription_id.as_str(), l.product_title.as_str()))
                    .collect();
                let entitlements: Vec<Entitlement> = placed
                    .subscriptions
                    .iter()
                    .filter(|s| s.product_kind == ProductKind::ServerSubscription as i32)
                    .map(|s| Entitlement {
                        subscription_id: s.id.clone(),
                        partner_id,
                        customer_tenant_id: s.customer_tenant_id.clone(),
                        order_id: s.order_id.clone(),
                        product_id: s.product_id.clone(),
                        product_title: titles
                            .get(s.id.as_str())
                            .copied()
                            .unwrap_or(&s.product_id)
                            .to_owned(),
                        status: EntitlementStatus::Active,
                        provisioned_at: now,
                        revoked_at: None,
                    })
                    .collect();
                if entitlements
                    .iter()
                    .any(|e| Uuid::parse_str(&e.subscription_id).is_err())
                {
                    return Err(ApplyError::Invalid("a subscription id is missing"));
                }
                Ok(self
                    .store
                    .provision(&event.event_id, &entitlements, now)
                    .await?)
            }
            Some(ordering_event::Payload::SubscriptionCancelled(cancelled)) => {
                let s = cancelled.subscription.ok_or(ApplyError::Invalid(
                    "a SubscriptionCancelled event without its subscription",
                ))?;
                let tombstone = Entitlement {
                    subscription_id: s.id.clone(),
                    partner_id,
                    customer_tenant_id: s.customer_tenant_id.clone(),
                    order_id: s.order_id.clone(),
                    product_id: s.product_id.clone(),
                    product_title: s.product_id.clone(),
                    status: EntitlementStatus::Revoked,
                    provisioned_at: now,
                    revoked_at: Some(now),
                };
                let applied = self
                    .store
                    .revoke_from_event(&event.event_id, &tombstone, now)
                    .await?;
                if applied {
                    tracing::info!(subscription_id = %s.id, "entitlement revoked: subscription cancelled");
                }
                Ok(applied)
            }
            None => Err(ApplyError::Invalid("the event carries no payload")),
        }
    }
}

/// Why an event was not applied.
#[derive(Debug)]
enum ApplyError {
    /// The event can never be applied: rejected, with the reason.
    Invalid(&'static str),
    /// Storage failed: the whole batch comes again.
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> Self {
        ApplyError::Store(error)
    }
}

#[tonic::async_trait]
impl LicensingService for LicensingApi {
    async fn list_software(
        &self,
        request: Request<pb::ListSoftwareRequest>,
    ) -> Result<Response<pb::ListSoftwareResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let customer =
            TenantId::parse("customer_tenant_id", &request.get_ref().customer_tenant_id)?
                .to_string();
        let entitlements = self.store.entitlements_of(&partner, &customer).await?;
        if entitlements.is_empty() {
            // Nothing bought, or no such customer for this partner: ordering knows.
            let checked = self
                .ordering
                .clone()
                .check_customer(CheckCustomerRequest {
                    partner_id: partner.clone(),
                    tenant_id: customer.clone(),
                })
                .await
                .peer("ordering");
            match checked {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {
                    return Err(ApiError::not_found("customer", &customer).into());
                }
                Err(error) => return Err(ApiError::from(error).into()),
            }
        }
        let mut options: HashMap<String, DownloadOptions> = HashMap::new();
        let mut software = Vec::with_capacity(entitlements.len());
        for e in entitlements {
            if !options.contains_key(&e.product_id) {
                let found = self.options(&e.product_id).await?;
                options.insert(e.product_id.clone(), found);
            }
            software.push(pb::Software {
                subscription_id: e.subscription_id.clone(),
                product_id: e.product_id.clone(),
                product_title: e.product_title.clone(),
                status: match e.status {
                    EntitlementStatus::Active => pb::EntitlementStatus::Active,
                    EntitlementStatus::Revoked => pb::EntitlementStatus::Revoked,
                } as i32,
                download_options: options.get(&e.product_id).cloned(),
            });
        }
        Ok(Response::new(pb::ListSoftwareResponse { software }))
    }

    async fn get_keys_and_downloads(
        &self,
        request: Request<pb::GetKeysAndDownloadsRequest>,
    ) -> Result<Response<pb::GetKeysAndDownloadsResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        Ok(Response::new(
            self.get_keys_and_downloads(&user, request.into_inner())
                .await?,
        ))
    }
}

#[tonic::async_trait]
impl LicensingInternalService for LicensingApi {
    async fn apply_ordering_events(
        &self,
        request: Request<pb::ApplyOrderingEventsRequest>,
    ) -> Result<Response<pb::ApplyOrderingEventsResponse>, Status> {
        Caller::service_of(&request)?;
        let mut applied = 0;
        let mut rejected = Vec::new();
        for event in request.into_inner().events {
            let event_id = event.event_id.clone();
            match self.apply(event).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(ApplyError::Store(error)) => {
                    // The whole batch comes again; the cause stays in this log.
                    tracing::warn!(error = %anyhow::Error::new(error), "cannot store ordering events; the sender retries");
                    return Err(Status::unavailable(
                        "licensing cannot store events now; send the batch again later",
                    ));
                }
                Err(ApplyError::Invalid(reason)) => rejected.push(RejectedEvent {
                    event_id,
                    reason: reason.to_owned(),
                }),
            }
        }
        Ok(Response::new(pb::ApplyOrderingEventsResponse {
            applied,
            rejected,
        }))
    }

    async fn revoke_subscription(
        &self,
        request: Request<pb::RevokeSubscriptionRequest>,
    ) -> Result<Response<pb::RevokeSubscriptionResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.into_inner();
        let partner = PartnerId::parse("partner_id", &r.partner_id)?.to_string();
        let subscription =
            SubscriptionId::parse("subscription_id", &r.subscription_id)?.to_string();
        let revoked = self
            .store
            .revoke(&partner, &subscription, self.clock.now())
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", &subscription))?;
        Ok(Response::new(pb::RevokeSubscriptionResponse {
            links_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn redeem_download_link(
        &self,
        request: Request<pb::RedeemDownloadLinkRequest>,
    ) -> Result<Response<pb::RedeemDownloadLinkResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.into_inner();
        let unknown = pb::RedeemDownloadLinkResponse {
            outcome: pb::RedeemOutcome::Unknown as i32,
            max_downloads: MAX_DOWNLOADS as u32,
            message: "This download link does not exist. Check that the whole link was copied; \
                      your partner can enable a new one."
                .to_owned(),
            ..Default::default()
        };
        if !secrets::is_token(&r.token) {
            return Ok(Response::new(unknown));
        }
        let now = self.clock.now();
        let redeemed = self
            .store
            .redeem(&secrets::token_hash(&r.token), now)
            .await?;
        let response = match redeemed {
            Redeemed::Counted(counted) => {
                let (d, pending) = *counted;
                let downloaded = Activity::new(d.partner_id, ActivityType::SoftwareDownloaded, now)
                    .customer(&d.customer_tenant_id)
                    .subscription(&d.subscription_id)
                    .product(&d.product_id)
                    .detail("link_id", &d.link_id)
                    .detail(
                        "download_count",
                        format!("{} of {}", d.count, d.max_downloads),
                    )
                    .detail("client_address", &r.client_address)
                    .detail("user_agent", &r.user_agent)
                    .detail("version", &d.selection.version)
                    .detail("language", &d.selection.language)
                    .detail("file_type", &d.selection.file_type);
                pending
                    .commit(&[Message::activity(&d.subscription_id, downloaded)])
                    .await?;
                self.relay.notify_one();
                pb::RedeemDownloadLinkResponse {
                    outcome: pb::RedeemOutcome::Redirect as i32,
                    redirect_url: domain::content_url(
                        &self.urls.content_origin,
                        &d.product_id,
                        &d.selection.version,
                        &d.selection.language,
                        &d.selection.file_type,
                    ),
                    download_count: u32::try_from(d.count).unwrap_or(0),
                    max_downloads: u32::try_from(d.max_downloads).unwrap_or(0),
                    message: String::new(),
                }
            }
            Redeemed::Refused(state) => {
                // Expired, or it stopped working between the two reads.
                let dead = domain::link_status(state, now)
                    .err()
                    .unwrap_or(domain::Dead::Expired);
                pb::RedeemDownloadLinkResponse {
                    outcome: match dead {
                        domain::Dead::Revoked => pb::RedeemOutcome::Revoked,
                        domain::Dead::UsedUp => pb::RedeemOutcome::UsedUp,
                        domain::Dead::Expired => pb::RedeemOutcome::Expired,
                    } as i32,
                    max_downloads: u32::try_from(state.max_downloads).unwrap_or(0),
                    message: domain::dead_link_sentence(dead).to_owned(),
                    ..Default::default()
                }
            }
            Redeemed::Unknown => unknown,
        };
        Ok(Response::new(response))
    }
}
