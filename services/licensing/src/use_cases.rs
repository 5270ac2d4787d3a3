//! Licensing's use cases: each operation as one flow. A use case checks
//! what needs the database or a peer, applies the domain's rules, owns the
//! transaction (one storage call writes the change with its outbox
//! messages) and wakes the relay. Handlers call exactly one of these.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::activity::Activity;
use csp_kit::clock::{Clock, Micros, to_rfc3339};
use csp_kit::identity::UserCaller;
use csp_kit::ids::{LinkId, PartnerId, SubscriptionId, TenantId};
use csp_kit::{ApiError, ApiResult};
use csp_proto::audit::v1::ActivityType;
use csp_proto::catalog::v1::ProductKind;
use csp_proto::ordering::v1::{OrderingEvent, ordering_event};
use csp_store::StoreError;
use csp_store::group::GroupCommit;
use csp_store::outbox::Message;
use tokio::sync::Notify;

use csp_content::{ContentStore, Purpose};

use crate::domain::{
    self, ContentFile, Dead, Download, Entitlement, EntitlementStatus, Issued, LINK_LIFETIME,
    MAX_DOWNLOADS, NewLink, Options, Selection,
};
use crate::peers::{DownloadOptions, Peers};
use crate::secrets::{self, Sealer};
use crate::storage::{EventChange, LicensingStore, LinkCount};

/// Where links point.
#[derive(Clone, Debug)]
pub struct Urls {
    /// The gateway's public download listener, for example
    /// `http://127.0.0.1:8080`.
    pub download_base: String,
}

/// Software bought for a customer, with what can be downloaded of it.
#[derive(Clone, Debug)]
pub struct Software {
    /// The entitlement.
    pub entitlement: Entitlement,
    /// Its product's download options.
    pub options: DownloadOptions,
}

/// A product key and a working download link, in the clear (its `Debug`
/// shows neither).
#[derive(Clone)]
pub struct KeysAndDownloads {
    /// The product key.
    pub product_key: String,
    /// The link's URL.
    pub url: String,
    /// When the link stops working.
    pub expires_at: Micros,
    /// Downloads left.
    pub downloads_remaining: i32,
    /// The file the link downloads (its size and SHA-256).
    pub file: ContentFile,
}

impl std::fmt::Debug for KeysAndDownloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysAndDownloads")
            .field("product_key", &"***")
            .field("url", &"***")
            .field("expires_at", &self.expires_at)
            .field("downloads_remaining", &self.downloads_remaining)
            .field("file", &self.file)
            .finish()
    }
}

/// What a redemption came to (its `Debug` hides the signed URL).
#[derive(Clone)]
pub enum Redemption {
    /// Counted: send the caller to the file.
    Redirect {
        /// Where the file is: a signed URL that works for minutes.
        url: String,
        /// This download's number.
        count: i32,
        /// Downloads the link allows.
        max_downloads: i32,
    },
    /// Refused: the link is dead.
    Dead {
        /// Why.
        why: Dead,
        /// Downloads the link allows.
        max_downloads: i32,
    },
    /// No such link.
    Unknown,
}

impl std::fmt::Debug for Redemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redemption::Redirect {
                count,
                max_downloads,
                ..
            } => f
                .debug_struct("Redirect")
                .field("url", &"***")
                .field("count", count)
                .field("max_downloads", max_downloads)
                .finish(),
            Redemption::Dead { why, max_downloads } => f
                .debug_struct("Dead")
                .field("why", why)
                .field("max_downloads", max_downloads)
                .finish(),
            Redemption::Unknown => f.write_str("Unknown"),
        }
    }
}

/// What a link's state is, as a HEAD request asks it.
#[derive(Clone, Debug)]
pub enum Inspection {
    /// It works: a download would count.
    Works {
        /// Downloads left.
        remaining: i32,
        /// Downloads the link allows.
        max_downloads: i32,
    },
    /// It does not work.
    Dead {
        /// Why.
        why: Dead,
        /// Downloads the link allows.
        max_downloads: i32,
    },
    /// No such link.
    Unknown,
}

/// What a batch of ordering's events came to.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Events applied now (not before).
    pub applied: u32,
    /// Events that can never be applied: (event id, reason).
    pub rejected: Vec<(String, String)>,
}

/// Licensing's use cases.
#[derive(Clone)]
pub struct Licensing {
    store: LicensingStore,
    peers: Peers,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    urls: Arc<Urls>,
    content: ContentStore,
    relay: Arc<Notify>,
    /// Redemptions arriving while one group commits are counted together in
    /// the next group: one durable commit (one transaction, or on PostgreSQL
    /// often one statement) for many downloads.
    /// (One group at a time per lane: one lane on SQLite, three on
    /// PostgreSQL; see `LicensingStore::redemption_lanes`.)
    redemptions: Arc<GroupCommit<u8, RedeemRequest, LinkCount>>,
}

/// One download being redeemed, with what its activity records.
struct RedeemRequest {
    token_hash: String,
    now: Micros,
    client_address: String,
    user_agent: String,
}

impl Licensing {
    /// Over `store`; `relay` is woken after events are written.
    pub fn new(
        store: LicensingStore,
        peers: Peers,
        sealer: Sealer,
        clock: Arc<dyn Clock>,
        urls: Urls,
        content: ContentStore,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            peers,
            sealer: Arc::new(sealer),
            clock,
            urls: Arc::new(urls),
            content,
            relay,
            redemptions: Arc::default(),
        }
    }

    /// The software bought for a partner's customer. A customer with nothing
    /// bought lists nothing; an unknown one (or another partner's) is
    /// NOT_FOUND, as ordering says.
    pub async fn list_software(
        &self,
        partner: PartnerId,
        customer: TenantId,
    ) -> ApiResult<Vec<Software>> {
        let entitlements = self.store.entitlements_of(partner, customer).await?;
        if entitlements.is_empty() && !self.peers.has_customer(partner, customer).await? {
            return Err(ApiError::not_found("customer", customer.to_string()));
        }
        let mut options: HashMap<String, DownloadOptions> = HashMap::new();
        let mut software = Vec::with_capacity(entitlements.len());
        for entitlement in entitlements {
            if !options.contains_key(&entitlement.product_id) {
                let found = self.peers.download_options(&entitlement.product_id).await?;
                options.insert(entitlement.product_id.clone(), found);
            }
            software.push(Software {
                options: options
                    .get(&entitlement.product_id)
                    .cloned()
                    .unwrap_or_default(),
                entitlement,
            });
        }
        Ok(software)
    }

    /// The subscription's product key for the version and a working link
    /// for the selection, made when missing, in one transaction with the
    /// "key accessed" (and "download link issued") activities.
    pub async fn keys_and_downloads(
        &self,
        user: &UserCaller,
        customer: TenantId,
        subscription: SubscriptionId,
        selection: Selection,
    ) -> ApiResult<KeysAndDownloads> {
        let entitlement = self
            .store
            .entitlement(user.partner_id, subscription)
            .await?
            .filter(|e| e.customer_tenant_id == customer)
            .ok_or_else(|| ApiError::not_found("subscription", subscription.to_string()))?;
        if entitlement.status != EntitlementStatus::Active {
            return Err(domain::revoked_error(&subscription.to_string()));
        }
        let options = self.peers.download_options(&entitlement.product_id).await?;
        let options = Options {
            versions: options.versions,
            languages: options.languages,
            file_types: options.file_types.into_iter().map(|f| f.id).collect(),
        };
        domain::check_selection(
            &options,
            &selection.version,
            &selection.language,
            &selection.file_type,
        )?;
        let file = self
            .store
            .content_file(&entitlement.product_id, &selection)
            .await?
            .ok_or_else(|| domain::no_file_error(&entitlement.product_id, &selection))?;
        let now = self.clock.now();
        let key_context = format!("{subscription}/{}", selection.version);
        let fresh_key = self
            .sealer
            .seal(&secrets::new_product_key()?, &key_context)?;
        let token = secrets::new_token()?;
        let link_id = LinkId::new();
        let fresh_link = NewLink {
            id: link_id,
            token_hash: secrets::token_hash(&token),
            sealed_token: self.sealer.seal(&token, &link_id.to_string())?,
            expires_at: now + LINK_LIFETIME,
            max_downloads: MAX_DOWNLOADS,
            issued_by_user_id: user.user_id.clone(),
        };
        let (key_accessed, link_issued) =
            issue_messages(user, &entitlement, &selection, &fresh_link, now);
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
            .ok_or_else(|| domain::revoked_error(&subscription.to_string()))?;
        self.relay.notify_one();
        tracing::info!(
            subscription_id = %subscription,
            link_id = %issued.link.id,
            new_link = issued.link_is_new,
            "keys and download link handed out"
        );
        self.reveal(&issued, &key_context, file)
    }

    /// The key and link of `issued`, unsealed.
    fn reveal(
        &self,
        issued: &Issued,
        key_context: &str,
        file: ContentFile,
    ) -> ApiResult<KeysAndDownloads> {
        let product_key = self.sealer.open(&issued.sealed_key, key_context)?;
        let token = self
            .sealer
            .open(&issued.link.sealed_token, &issued.link.id.to_string())?;
        Ok(KeysAndDownloads {
            product_key,
            url: format!(
                "{}/download/{token}",
                self.urls.download_base.trim_end_matches('/')
            ),
            expires_at: issued.link.expires_at,
            downloads_remaining: issued.link.max_downloads - issued.link.downloads,
            file,
        })
    }

    /// Applies ordering's events, each once. An event that can never apply
    /// is rejected with its reason; a storage failure fails the whole batch
    /// (UNAVAILABLE, so the sender retries it).
    pub async fn apply_events(&self, events: Vec<OrderingEvent>) -> ApiResult<Applied> {
        let now = self.clock.now();
        let mut outcome = Applied::default();
        let mut changes = Vec::with_capacity(events.len());
        for event in events {
            let event_id = csp_kit::error::shortened(&event.event_id);
            // Each event within its documented limits (the codec leaves
            // batches to us, so one bad event does not refuse the others).
            if let Some(v) = csp_proto::bounds::item_violations(&event).first() {
                outcome
                    .rejected
                    .push((event_id, format!("{}: {}", v.field, v.description)));
                continue;
            }
            let full_id = event.event_id.clone();
            match change_of(event, now) {
                Ok(change) => changes.push((full_id, change)),
                Err(reason) => outcome.rejected.push((event_id, reason.to_owned())),
            }
        }
        if changes.is_empty() {
            return Ok(outcome);
        }
        let applied = self
            .store
            .apply_events(&changes, now)
            .await
            .map_err(|error| {
                tracing::warn!(error = %anyhow::Error::new(error), "cannot store ordering events; the sender retries");
                ApiError::Unavailable(
                    "licensing cannot store events now; send the batch again later".to_owned(),
                )
            })?;
        for ((_, change), applied) in changes.iter().zip(applied) {
            if !applied {
                continue;
            }
            outcome.applied += 1;
            if let EventChange::Revoke(tombstone) = change {
                tracing::info!(subscription_id = %tombstone.subscription_id, "entitlement revoked: subscription cancelled");
            }
        }
        Ok(outcome)
    }

    /// Revokes a subscription's keys and links for the refund workflow;
    /// NOT_FOUND when nothing was provisioned for it. Returns the links
    /// revoked now.
    pub async fn revoke_subscription(
        &self,
        partner: PartnerId,
        subscription: SubscriptionId,
    ) -> ApiResult<u64> {
        self.store
            .revoke(partner, subscription, self.clock.now())
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", subscription.to_string()))
    }

    /// Counts one download of the link with `token` if it still works, with
    /// its "software downloaded" activity in the same transaction.
    pub async fn redeem(
        &self,
        token: &str,
        client_address: &str,
        user_agent: &str,
    ) -> ApiResult<Redemption> {
        if !secrets::is_token(token) {
            return Ok(Redemption::Unknown);
        }
        let now = self.clock.now();
        let request = RedeemRequest {
            token_hash: secrets::token_hash(token),
            now,
            client_address: client_address.to_owned(),
            user_agent: user_agent.to_owned(),
        };
        // The hash is hex: its first byte of value picks the lane.
        let lane = request
            .token_hash
            .get(..2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .map_or(0, |b| b % self.store.redemption_lanes());
        let store = self.store.clone();
        let outcome = self
            .redemptions
            .submit(lane, request, move |_, group: Vec<RedeemRequest>| {
                let store = store.clone();
                async move {
                    let requests: Vec<(String, Micros)> = group
                        .iter()
                        .map(|r| (r.token_hash.clone(), r.now))
                        .collect();
                    let messages = |download: &Download, index: usize| {
                        let r = &group[index];
                        let activity =
                            downloaded(download, r.now, &r.client_address, &r.user_agent);
                        vec![Message::activity(download.subscription_id, activity)]
                    };
                    // A revocation locking the same links in another order
                    // can make PostgreSQL abort the group as a deadlock: an
                    // error from `redeem_all` means nothing of the group was
                    // written, so it runs once more.
                    match store.redeem_all(&requests, messages).await {
                        Err(StoreError::Busy(error)) => {
                            tracing::info!(%error, "a redemption group met a lock conflict; running it again");
                            store.redeem_all(&requests, messages).await
                        }
                        other => other,
                    }
                }
            })
            .await?;
        match outcome {
            LinkCount::Counted(download) => {
                self.relay.notify_one();
                // The count is durable; the URL is signed for this one
                // object and works for minutes only, so the counter, expiry
                // and revocation stay the only way to the file.
                let key = crate::content::key_of(&download.product_id, &download.selection)
                    .map_err(ApiError::Internal)?;
                let signed = self
                    .content
                    .signed_url(&key, Purpose::Software)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot sign a download URL");
                        ApiError::Unavailable(
                            "the file store cannot be reached; the download was counted, please try the link again shortly"
                                .to_owned(),
                        )
                    })?;
                Ok(Redemption::Redirect {
                    url: signed.url,
                    count: download.count,
                    max_downloads: download.max_downloads,
                })
            }
            LinkCount::Refused(state) => Ok(Redemption::Dead {
                // Expired, or it stopped working between the two reads.
                why: domain::link_status(state, now)
                    .err()
                    .unwrap_or(Dead::Expired),
                max_downloads: state.max_downloads,
            }),
            LinkCount::Unknown => Ok(Redemption::Unknown),
            LinkCount::Failed(error) => Err(error.to_api_error()),
        }
    }
}

impl Licensing {
    /// Whether the link with `token` works now, counting and recording
    /// nothing.
    pub async fn inspect(&self, token: &str) -> ApiResult<Inspection> {
        if !secrets::is_token(token) {
            return Ok(Inspection::Unknown);
        }
        let Some(state) = self.store.link_state(&secrets::token_hash(token)).await? else {
            return Ok(Inspection::Unknown);
        };
        Ok(match domain::link_status(state, self.clock.now()) {
            Ok(()) => Inspection::Works {
                remaining: state.max_downloads - state.downloads,
                max_downloads: state.max_downloads,
            },
            Err(why) => Inspection::Dead {
                why,
                max_downloads: state.max_downloads,
            },
        })
    }
}

/// Why an event can never be applied (it is rejected with this reason).
type Invalid = &'static str;

fn read_id<T: std::str::FromStr>(value: &str) -> Result<T, Invalid> {
    value
        .parse()
        .map_err(|_| "a subscription, customer or order id is not a UUID")
}

/// What an ordering event changes in licensing.
fn change_of(event: OrderingEvent, now: Micros) -> Result<EventChange, Invalid> {
    if uuid::Uuid::parse_str(&event.event_id).is_err() {
        return Err("event_id is not a UUID");
    }
    let partner_id: PartnerId = event
        .partner_id
        .parse()
        .map_err(|_| "the partner id is missing or not a UUID")?;
    match event.payload {
        Some(ordering_event::Payload::OrderPlaced(placed)) => Ok(EventChange::Provision(
            provisioned(partner_id, placed, now)?,
        )),
        Some(ordering_event::Payload::SubscriptionCancelled(cancelled)) => {
            let s = cancelled
                .subscription
                .ok_or("a SubscriptionCancelled event without its subscription")?;
            Ok(EventChange::Revoke(Entitlement {
                subscription_id: read_id(&s.id)?,
                partner_id,
                customer_tenant_id: read_id(&s.customer_tenant_id)?,
                order_id: read_id(&s.order_id)?,
                product_id: s.product_id.clone(),
                product_title: s.product_id.clone(),
                status: EntitlementStatus::Revoked,
                provisioned_at: now,
                revoked_at: Some(now),
            }))
        }
        None => Err("the event carries no payload"),
    }
}

/// The entitlements an "order placed" event provisions: one per software
/// subscription (reservations have no software).
fn provisioned(
    partner_id: PartnerId,
    placed: csp_proto::ordering::v1::OrderPlaced,
    now: Micros,
) -> Result<Vec<Entitlement>, Invalid> {
    let order = placed
        .order
        .ok_or("an OrderPlaced event without its order")?;
    let titles: HashMap<&str, &str> = order
        .lines
        .iter()
        .map(|l| (l.subscription_id.as_str(), l.product_title.as_str()))
        .collect();
    placed
        .subscriptions
        .iter()
        .filter(|s| s.product_kind == ProductKind::ServerSubscription as i32)
        .map(|s| {
            Ok(Entitlement {
                subscription_id: read_id(&s.id)?,
                partner_id,
                customer_tenant_id: read_id(&s.customer_tenant_id)?,
                order_id: read_id(&s.order_id)?,
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
        })
        .collect()
}

/// "Key accessed", and "download link issued" for when the fresh link is
/// stored, in the subscription's stream.
fn issue_messages(
    user: &UserCaller,
    e: &Entitlement,
    selection: &Selection,
    fresh_link: &NewLink,
    now: Micros,
) -> (Message, Message) {
    let activity = |kind| {
        Activity::new(e.partner_id, kind, now)
            .by_user(user)
            .customer(e.customer_tenant_id)
            .subscription(e.subscription_id)
            .product(&e.product_id)
            .detail("version", &selection.version)
            .detail("language", &selection.language)
            .detail("file_type", &selection.file_type)
    };
    let key_accessed = Message::activity(e.subscription_id, activity(ActivityType::KeyAccessed));
    let link_issued = Message::activity(
        e.subscription_id,
        activity(ActivityType::DownloadLinkIssued)
            .detail("link_id", fresh_link.id)
            .detail("expires_at", to_rfc3339(fresh_link.expires_at))
            .detail("max_downloads", fresh_link.max_downloads),
    );
    (key_accessed, link_issued)
}

/// "Software downloaded": which link, the n-th of how many, from where.
fn downloaded(d: &Download, now: Micros, client_address: &str, user_agent: &str) -> Activity {
    Activity::new(d.partner_id, ActivityType::SoftwareDownloaded, now)
        .customer(d.customer_tenant_id)
        .subscription(d.subscription_id)
        .product(&d.product_id)
        .detail("link_id", d.link_id)
        .detail(
            "download_count",
            format!("{} of {}", d.count, d.max_downloads),
        )
        .detail("client_address", client_address)
        .detail("user_agent", user_agent)
        .detail("version", &d.selection.version)
        .detail("language", &d.selection.language)
        .detail("file_type", &d.selection.file_type)
}
