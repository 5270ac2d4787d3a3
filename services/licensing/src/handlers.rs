//! gRPC handlers, public and internal.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::{Clock, Micros, to_rfc3339, to_timestamp};
use csp_kit::outbox::Message;
use csp_kit::upstream::{AUDIT, Signed, encode};
use csp_kit::{ApiError, ApiResult, Caller};
use csp_proto::audit::v1::{Activity, ActivityRecord, ActivityType};
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::catalog::v1::{DownloadOptions, GetProductRequest, ProductKind};
use csp_proto::common::v1::RejectedEvent;
use csp_proto::licensing::v1 as pb;
use csp_proto::licensing::v1::licensing_internal_service_server::LicensingInternalService;
use csp_proto::licensing::v1::licensing_service_server::LicensingService;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_proto::ordering::v1::{CheckCustomerRequest, OrderingEvent, ordering_event};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, LINK_LIFETIME, MAX_DOWNLOADS, Options};
use crate::secrets::{self, Sealer};
use crate::storage::{Download, Entitlement, LicensingStore, NewLink, Redeemed, Selection};

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
        {
            Ok(response) => Ok(response
                .into_inner()
                .product
                .and_then(|p| p.download_options)
                .unwrap_or_default()),
            Err(status) if status.code() == Code::NotFound => Ok(DownloadOptions::default()),
            Err(status) => Err(ApiError::Unavailable(format!(
                "the catalog is unavailable ({}); try again",
                status.message()
            ))),
        }
    }

    async fn get_keys_and_downloads(
        &self,
        user: &csp_kit::identity::UserCaller,
        r: pb::GetKeysAndDownloadsRequest,
    ) -> ApiResult<pb::GetKeysAndDownloadsResponse> {
        let partner = user.partner_id.to_string();
        let customer = parse_uuid("customer_tenant_id", &r.customer_tenant_id)?;
        let subscription = parse_uuid("subscription_id", &r.subscription_id)?;
        let entitlement = self
            .store
            .entitlement(&partner, &subscription)
            .await?
            .filter(|e| e.customer_tenant_id == customer)
            .ok_or_else(|| ApiError::not_found("subscription", &subscription))?;
        if entitlement.status != "active" {
            return Err(crate::storage::revoked_error(&subscription));
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
        let issued = self
            .store
            .issue(
                &entitlement,
                &selection,
                now,
                &fresh_key,
                &fresh_link,
                |issued| {
                    let details = |extra: &[(&str, String)]| {
                        let mut map = HashMap::from([
                            ("version".to_owned(), selection.version.clone()),
                            ("language".to_owned(), selection.language.clone()),
                            ("file_type".to_owned(), selection.file_type.clone()),
                        ]);
                        map.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
                        map
                    };
                    let mut messages = vec![self.activity(
                        ActivityType::KeyAccessed,
                        &entitlement,
                        now,
                        &user.user_id,
                        &user.display_name,
                        details(&[]),
                    )];
                    if issued.link_is_new {
                        messages.push(self.activity(
                            ActivityType::DownloadLinkIssued,
                            &entitlement,
                            now,
                            &user.user_id,
                            &user.display_name,
                            details(&[
                                ("link_id", issued.link.id.clone()),
                                ("expires_at", to_rfc3339(issued.link.expires_at)),
                                ("max_downloads", issued.link.max_downloads.to_string()),
                            ]),
                        ));
                    }
                    messages
                },
            )
            .await?;
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

    /// An activity for the audit log, through the outbox, in the
    /// subscription's stream.
    fn activity(
        &self,
        kind: ActivityType,
        e: &Entitlement,
        at: Micros,
        user_id: &str,
        user_name: &str,
        details: HashMap<String, String>,
    ) -> Message {
        let event_id = Uuid::new_v4().to_string();
        Message {
            destination: AUDIT,
            event_id: event_id.clone(),
            stream: e.subscription_id.clone(),
            payload: encode(&ActivityRecord {
                partner_id: e.partner_id.clone(),
                activity: Some(Activity {
                    id: event_id,
                    r#type: kind as i32,
                    occur_time: Some(to_timestamp(at)),
                    user_id: user_id.to_owned(),
                    user_display_name: user_name.to_owned(),
                    customer_tenant_id: e.customer_tenant_id.clone(),
                    subscription_id: e.subscription_id.clone(),
                    product_id: e.product_id.clone(),
                    details,
                }),
            }),
        }
    }

    async fn apply(&self, event: OrderingEvent) -> Result<bool, String> {
        let now = self.clock.now();
        if Uuid::parse_str(&event.event_id).is_err() {
            return Err("event_id is not a UUID".to_owned());
        }
        match event.payload {
            Some(ordering_event::Payload::OrderPlaced(placed)) => {
                let order = placed
                    .order
                    .ok_or("an OrderPlaced event without its order")?;
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
                        partner_id: event.partner_id.clone(),
                        customer_tenant_id: s.customer_tenant_id.clone(),
                        order_id: s.order_id.clone(),
                        product_id: s.product_id.clone(),
                        product_title: titles
                            .get(s.id.as_str())
                            .copied()
                            .unwrap_or(&s.product_id)
                            .to_owned(),
                        status: "active".to_owned(),
                        provisioned_at: now,
                        revoked_at: None,
                    })
                    .collect();
                if entitlements.iter().any(|e| {
                    Uuid::parse_str(&e.subscription_id).is_err() || e.partner_id.is_empty()
                }) {
                    return Err("a subscription id or the partner id is missing".to_owned());
                }
                self.store
                    .provision(&event.event_id, &entitlements, now)
                    .await
                    .map_err(|e| format!("retry: {e}"))
            }
            Some(ordering_event::Payload::SubscriptionCancelled(cancelled)) => {
                let s = cancelled
                    .subscription
                    .ok_or("a SubscriptionCancelled event without its subscription")?;
                let tombstone = Entitlement {
                    subscription_id: s.id.clone(),
                    partner_id: event.partner_id.clone(),
                    customer_tenant_id: s.customer_tenant_id.clone(),
                    order_id: s.order_id.clone(),
                    product_id: s.product_id.clone(),
                    product_title: s.product_id.clone(),
                    status: "revoked".to_owned(),
                    provisioned_at: now,
                    revoked_at: Some(now),
                };
                let applied = self
                    .store
                    .revoke_from_event(&event.event_id, &tombstone, now)
                    .await
                    .map_err(|e| format!("retry: {e}"))?;
                if applied {
                    tracing::info!(subscription_id = %s.id, "entitlement revoked: subscription cancelled");
                }
                Ok(applied)
            }
            None => Err("the event carries no payload".to_owned()),
        }
    }
}

fn parse_uuid(field: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    Uuid::parse_str(value)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::invalid(field, format!("{value:?} is not a UUID")))
}

#[tonic::async_trait]
impl LicensingService for LicensingApi {
    async fn list_software(
        &self,
        request: Request<pb::ListSoftwareRequest>,
    ) -> Result<Response<pb::ListSoftwareResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let customer = parse_uuid("customer_tenant_id", &request.get_ref().customer_tenant_id)?;
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
                .await;
            match checked {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => {
                    return Err(ApiError::not_found("customer", &customer).into());
                }
                Err(status) => {
                    return Err(ApiError::Unavailable(format!(
                        "ordering is unavailable ({}); try again",
                        status.message()
                    ))
                    .into());
                }
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
                status: if e.status == "active" {
                    pb::EntitlementStatus::Active
                } else {
                    pb::EntitlementStatus::Revoked
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
                Err(reason) if reason.starts_with("retry: ") => {
                    // A storage failure: the whole batch comes again.
                    return Err(Status::unavailable(reason));
                }
                Err(reason) => rejected.push(RejectedEvent { event_id, reason }),
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
        let partner = parse_uuid("partner_id", &r.partner_id)?;
        let subscription = parse_uuid("subscription_id", &r.subscription_id)?;
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
            .redeem(&secrets::token_hash(&r.token), now, |d: &Download| {
                let e = Entitlement {
                    subscription_id: d.subscription_id.clone(),
                    partner_id: d.partner_id.clone(),
                    customer_tenant_id: d.customer_tenant_id.clone(),
                    order_id: String::new(),
                    product_id: d.product_id.clone(),
                    product_title: String::new(),
                    status: "active".to_owned(),
                    provisioned_at: now,
                    revoked_at: None,
                };
                let details = HashMap::from([
                    ("link_id".to_owned(), d.link_id.clone()),
                    (
                        "download_count".to_owned(),
                        format!("{} of {}", d.count, d.max_downloads),
                    ),
                    ("client_address".to_owned(), r.client_address.clone()),
                    ("user_agent".to_owned(), r.user_agent.clone()),
                    ("version".to_owned(), d.selection.version.clone()),
                    ("language".to_owned(), d.selection.language.clone()),
                    ("file_type".to_owned(), d.selection.file_type.clone()),
                ]);
                vec![self.activity(ActivityType::SoftwareDownloaded, &e, now, "", "", details)]
            })
            .await?;
        let response = match redeemed {
            Redeemed::Counted(d) => {
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
