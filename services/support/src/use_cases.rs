//! Support's use cases: each operation as one flow. A use case checks what
//! needs the database or a peer, applies the domain's rules, owns the
//! transaction (one storage call writes everything, outbox messages and
//! refund steps included) and wakes the relay and the refund workflow.
//! Handlers call exactly one of these; the refund workflow
//! ([`crate::refunds`]) carries refunds out in the background.

use std::sync::Arc;

use csp_kit::activity::Activity;
use csp_kit::clock::{Clock, Micros};
use csp_kit::identity::UserCaller;
use csp_kit::ids::{PartnerId, TicketId};
use csp_kit::roles::Role;
use csp_kit::{ApiError, ApiResult, paging};
use csp_proto::audit::v1::ActivityType;
use csp_store::idempotency::CreateOnce;
use csp_store::outbox::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use csp_content::{ContentStore, ObjectKey, Purpose};

use crate::domain::{
    self, Attachment, AttachmentQuota, Comment, IssueType, NewTicket, RefundAsked, Step, StepState,
    Ticket, TicketStatus, Usage,
};
use crate::peers::Peers;
use crate::storage::{Inserted, SupportStore, TICKET_REQUEST_KEY, Upload};

/// UNAVAILABLE for an object store that failed.
fn store_unavailable(error: csp_content::ContentError) -> ApiError {
    match error {
        // A row names an object the store no longer has: not a passing
        // outage, so not worth a retry.
        csp_content::ContentError::NotFound(_) => ApiError::Internal(anyhow::anyhow!(
            "an attachment's object is missing: {error}"
        )),
        error => {
            tracing::error!(%error, "the attachment store failed");
            ApiError::Unavailable(
                "the attachment store cannot be reached; nothing was changed, please try again shortly"
                    .to_owned(),
            )
        }
    }
}

/// A ticket with its comments and attachments (without content).
#[derive(Clone, Debug)]
pub struct TicketView {
    /// The ticket.
    pub ticket: Ticket,
    /// Its comments, oldest first.
    pub comments: Vec<Comment>,
    /// Its attachments.
    pub attachments: Vec<Attachment>,
}

/// Which tickets a list shows.
#[derive(Clone, Debug)]
pub struct TicketFilter {
    /// Only of this status.
    pub status: Option<TicketStatus>,
    /// Only of this issue type.
    pub issue_type: Option<IssueType>,
    /// The request's filter values, bound into page tokens.
    pub raw: (i32, i32),
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    at: Micros,
    id: String,
    status: i32,
    issue_type: i32,
}

/// Support's use cases.
#[derive(Clone)]
pub struct Support {
    store: SupportStore,
    peers: Peers,
    quota: AttachmentQuota,
    content: ContentStore,
    clock: Arc<dyn Clock>,
    refunds: Arc<Notify>,
    relay: Arc<Notify>,
}

/// Attachments up to this size come back inline from `GetAttachment` too;
/// every attachment comes with a short-lived signed URL.
pub const INLINE_ATTACHMENT_MAX: i64 = 1024 * 1024;

/// The largest chunk one `UploadAttachment` message may carry.
pub const MAX_UPLOAD_CHUNK: usize = 1024 * 1024;

/// How long an upload waits for a ticket to name it before it is deleted.
pub const UPLOAD_LIFETIME: Micros = csp_kit::clock::DAY;

/// An attachment uploaded before its ticket.
#[derive(Clone, Debug)]
pub struct Uploaded {
    /// The id a ticket names it by.
    pub id: String,
    /// Its size.
    pub size_bytes: i64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// When it is deleted unless a ticket names it.
    pub expires_at: Micros,
}

/// One attachment as `GetAttachment` hands it out.
#[derive(Clone, Debug)]
pub struct AttachmentDownload {
    /// Its description.
    pub attachment: Attachment,
    /// A URL that reads it for minutes (none for one still in the database).
    pub url: Option<csp_content::SignedUrl>,
    /// Its bytes, when at most [`INLINE_ATTACHMENT_MAX`].
    pub content: prost::bytes::Bytes,
}

impl Support {
    /// Over `store`, keeping each partner's attachments within `quota`;
    /// `refunds` and `relay` are woken after a refund ticket is stored.
    pub fn new(
        store: SupportStore,
        peers: Peers,
        quota: AttachmentQuota,
        content: ContentStore,
        clock: Arc<dyn Clock>,
        refunds: Arc<Notify>,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            peers,
            quota,
            content,
            clock,
            refunds,
            relay,
        }
    }

    /// Files a ticket once per request id. A refund ticket (admin agents
    /// only) is checked with ordering at once and stored with one step per
    /// subscription and its "submitted" activity, in one transaction; the
    /// workflow then carries it out. A retry answers with the first ticket.
    pub async fn create_ticket(&self, user: &UserCaller, new: NewTicket) -> ApiResult<TicketView> {
        if new.issue_type == IssueType::PurchaseRefund && !user.roles.contains(Role::AdminAgent) {
            return Err(ApiError::PermissionDenied(
                "only an admin agent may file a CSP purchase/refund ticket; your roles allow other tickets".to_owned(),
            ));
        }
        let partner = user.partner_id;
        let once = CreateOnce::new("ticket", TICKET_REQUEST_KEY, &new.fingerprint);
        let first = self
            .store
            .ticket_by_request(partner, new.request_id, &new.request_id_as_sent)
            .await?;
        if let Some(first) = once.replay(first)? {
            return self.view(first).await;
        }
        let now = self.clock.now();
        let mut ticket = new_ticket(user, &new, now);
        let mut steps = Vec::new();
        let mut messages = Vec::new();
        if let Some(refund) = &new.refund {
            steps = self.plan_refund(&mut ticket, refund).await?;
            messages.push(submitted(&ticket, steps.len(), now));
        }
        // Uploaded attachments: the partner's uploads no ticket claimed yet.
        let uploaded: Vec<String> = new
            .attachments
            .iter()
            .filter_map(|a| a.upload_id.clone())
            .collect();
        let uploads = self.store.uploads(partner, &uploaded).await?;
        if uploads.len() < uploaded.len() {
            // Claimed by this same request a moment ago (a retry racing
            // the first call): its ticket answers.
            let first = self
                .store
                .ticket_by_request(partner, new.request_id, &new.request_id_as_sent)
                .await?;
            if let Some(first) = once.replay(first)? {
                return self.view(first).await;
            }
        }
        let mut attachments = Vec::with_capacity(new.attachments.len());
        let mut inline = Vec::new();
        for a in new.attachments {
            if let Some(upload_id) = a.upload_id {
                let upload = uploads
                    .iter()
                    .find(|u| u.id == upload_id)
                    .ok_or_else(|| ApiError::not_found("upload", upload_id.clone()))?;
                attachments.push(Attachment {
                    id: upload.id.clone(),
                    file_name: a.file_name,
                    content_type: a.content_type,
                    size_bytes: upload.size_bytes,
                    sha256: upload.sha256.clone(),
                    object_key: Some(upload.object_key.clone()),
                    content: Default::default(),
                });
                continue;
            }
            let id = uuid::Uuid::new_v4().to_string();
            let key = ObjectKey::attachment(&partner.to_string(), &ticket.id.to_string(), &id)
                .map_err(|e| ApiError::Internal(e.into()))?;
            inline.push((
                key,
                Attachment {
                    size_bytes: a.content.len() as i64,
                    sha256: domain::sha256(&a.content),
                    file_name: a.file_name,
                    content_type: a.content_type,
                    object_key: None,
                    content: a.content,
                    id,
                },
            ));
        }
        // Inline bytes go to the object store first; the row that names
        // them is written after, so a stored attachment always has its
        // object. Objects of a ticket that is then not stored are removed.
        let keys: Vec<ObjectKey> = inline.iter().map(|(key, _)| key.clone()).collect();
        let inline = self.store_objects(inline).await?;
        let adding = Usage::of(&inline);
        attachments.extend(inline);
        let id = ticket.id;
        let inserted = self
            .store
            .insert(
                &ticket,
                attachments,
                &uploaded,
                &self.quota,
                &steps,
                &messages,
                // Due at once on the clock the refund workflow runs by (the
                // system's; a test's business clock may be set ahead of it).
                csp_kit::clock::Clock::now(&csp_kit::clock::SystemClock),
            )
            .await;
        // The objects go when the ticket is surely not stored: refused here,
        // or another request's ticket answers below. After a failure whose
        // outcome is unknown (a commit cut off) they stay: an object no row
        // names is better than a row whose object is gone.
        if matches!(
            inserted,
            Ok(Inserted::OverQuota(_)) | Ok(Inserted::UploadGone(_))
        ) {
            self.remove_objects(&keys).await;
        }
        let inserted = match inserted {
            Ok(Inserted::Done) => Ok(ticket),
            Ok(Inserted::OverQuota(used)) => {
                return Err(match self.quota.admit(partner, used, adding) {
                    Err(refusal) => refusal,
                    Ok(()) => ApiError::Internal(anyhow::anyhow!(
                        "the store refused attachments the quota admits"
                    )),
                });
            }
            // Claimed a moment ago (by this same request, retried at once:
            // then its ticket answers), or by another ticket, or expired.
            Ok(Inserted::UploadGone(upload)) => {
                let first = self
                    .store
                    .ticket_by_request(partner, new.request_id, &new.request_id_as_sent)
                    .await?;
                if let Some(first) = once.replay(first)? {
                    return self.view(first).await;
                }
                return Err(ApiError::not_found("upload", upload));
            }
            Err(error) => Err(error),
        };
        let ticket = once
            .settle(inserted, || {
                self.store
                    .ticket_by_request(partner, new.request_id, &new.request_id_as_sent)
            })
            .await?;
        if ticket.id != id {
            // A retry raced this call and its ticket won: ours was not stored.
            self.remove_objects(&keys).await;
        }
        if ticket.id == id {
            if !steps.is_empty() {
                self.refunds.notify_one();
                self.relay.notify_one();
            }
            tracing::info!(ticket_id = %id, issue_type = %ticket.issue_type, "ticket filed");
        }
        self.view(ticket).await
    }

    /// Checks at once what can be known at once (the customer, the order or
    /// subscription, the window, the amount) and plans one step per
    /// subscription, with its share of the refund.
    async fn plan_refund(&self, ticket: &mut Ticket, refund: &RefundAsked) -> ApiResult<Vec<Step>> {
        let resolved = self
            .peers
            .resolve(ticket.partner_id, &refund.customer, &refund.target)
            .await?;
        if refund.requested_currency != resolved.currency_code {
            return Err(ApiError::invalid(
                "refund.requested_amount.currency_code",
                format!(
                    "the purchase was paid in {}, not {}",
                    resolved.currency_code, refund.requested_currency
                ),
            ));
        }
        let refundable: Vec<i64> = resolved
            .subscriptions
            .iter()
            .map(|s| s.refundable_minor)
            .collect();
        let shares = domain::allocate(refund.requested_minor, &refundable).ok_or_else(|| {
            ApiError::invalid(
                "refund.requested_amount.minor_units",
                format!(
                    "{} is more than the {} {} the cancellation policies refund now for what the ticket names \
                     ({} was paid; cancel before {})",
                    refund.requested_minor,
                    resolved.refundable_minor,
                    resolved.currency_code,
                    resolved.paid_minor,
                    csp_kit::clock::to_rfc3339(resolved.deadline)
                ),
            )
        })?;
        ticket.refund_refundable_minor = Some(resolved.refundable_minor);
        ticket.refund_deadline = Some(resolved.deadline);
        ticket.refund_reason = Some(refund.reason.clone());
        ticket.refund_currency_code = Some(resolved.currency_code.clone());
        ticket.refund_minor_unit_digits =
            Some(i32::try_from(resolved.minor_unit_digits).unwrap_or(2));
        ticket.refund_requested_minor = Some(refund.requested_minor);
        if ticket.refund_customer_tenant_id.is_none() {
            ticket.refund_customer_tenant_id = resolved
                .subscriptions
                .first()
                .map(|s| s.customer_tenant_id.clone());
        }
        Ok(resolved
            .subscriptions
            .iter()
            .zip(shares)
            .enumerate()
            .map(|(i, (s, share))| Step {
                ticket_id: ticket.id,
                position: i32::try_from(i).unwrap_or(i32::MAX),
                partner_id: ticket.partner_id,
                subscription_id: s.id,
                refund_minor: share,
                state: StepState::Pending,
                attempts: 0,
            })
            .collect())
    }

    /// A partner's ticket with its comments and attachments.
    pub async fn ticket(&self, partner: PartnerId, id: TicketId) -> ApiResult<TicketView> {
        let ticket = self.owned(partner, id).await?;
        self.view(ticket).await
    }

    /// A page of a partner's tickets, newest first, and the next page's token.
    pub async fn list_tickets(
        &self,
        partner: PartnerId,
        filter: &TicketFilter,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<TicketView>, String)> {
        let size = paging::page_size(page_size, paging::DEFAULT_PAGE_SIZE, paging::MAX_PAGE_SIZE)?;
        let cursor = paging::decode::<Cursor>(page_token)?;
        let (status, issue_type) = filter.raw;
        if cursor
            .as_ref()
            .is_some_and(|c| c.status != status || c.issue_type != issue_type)
        {
            return Err(ApiError::invalid(
                "page_token",
                "this page token belongs to a query with other filters; start again from an empty page_token",
            ));
        }
        let mut tickets = self
            .store
            .list(
                partner,
                filter.status,
                filter.issue_type,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next = paging::finish_page(&mut tickets, size, |t| Cursor {
            at: t.created_at,
            id: t.id.to_string(),
            status,
            issue_type,
        });
        let mut views = Vec::with_capacity(tickets.len());
        for ticket in tickets {
            views.push(self.view(ticket).await?);
        }
        Ok((views, next))
    }

    /// Adds a comment to an open ticket.
    pub async fn add_comment(
        &self,
        user: &UserCaller,
        id: TicketId,
        text: &str,
    ) -> ApiResult<TicketView> {
        let ticket = self.owned(user.partner_id, id).await?;
        if ticket.status == TicketStatus::Closed {
            return Err(domain::ticket_closed(ticket.id));
        }
        self.store
            .add_comment(ticket.id, &user.user_id, text, self.clock.now())
            .await?;
        self.ticket(user.partner_id, id).await
    }

    /// Closes a ticket (again: no change), but not while its refund runs.
    pub async fn close_ticket(&self, partner: PartnerId, id: TicketId) -> ApiResult<TicketView> {
        let ticket = self.owned(partner, id).await?;
        domain::check_closable(&ticket)?;
        if ticket.status != TicketStatus::Closed {
            self.store.close(ticket.id, self.clock.now()).await?;
        }
        self.ticket(partner, id).await
    }

    /// One attachment of a partner's ticket: a short-lived signed URL, and
    /// its bytes when small.
    pub async fn attachment(
        &self,
        partner: PartnerId,
        id: TicketId,
        attachment_id: &str,
    ) -> ApiResult<AttachmentDownload> {
        let ticket = self.owned(partner, id).await?;
        let mut attachment = self
            .store
            .attachment(ticket.id, attachment_id)
            .await?
            .ok_or_else(|| ApiError::not_found("attachment", attachment_id))?;
        let Some(key) = attachment.object_key.clone() else {
            // Still in the database (written by an older replica): inline.
            let content = std::mem::take(&mut attachment.content);
            return Ok(AttachmentDownload {
                attachment,
                url: None,
                content,
            });
        };
        let key = ObjectKey::parse(&key).map_err(|e| ApiError::Internal(e.into()))?;
        let url = self
            .content
            .signed_url(&key, Purpose::Attachment)
            .await
            .map_err(store_unavailable)?;
        let content = if attachment.size_bytes <= INLINE_ATTACHMENT_MAX {
            self.content
                .get_bytes(&key)
                .await
                .map_err(store_unavailable)?
        } else {
            prost::bytes::Bytes::new()
        };
        Ok(AttachmentDownload {
            attachment,
            url: Some(url),
            content,
        })
    }

    /// Streams one attachment's bytes (`chunks`) into the object store
    /// before its ticket, at most [`domain::MAX_ATTACHMENT_BYTES`], and
    /// records the upload under the partner's quota (checked before the
    /// bytes are taken, and again, under the lock, once their size is
    /// known). A refused or broken upload keeps nothing.
    pub async fn upload_attachment<S>(
        &self,
        user: &UserCaller,
        mut chunks: S,
    ) -> ApiResult<Uploaded>
    where
        S: tokio_stream::Stream<Item = Result<prost::bytes::Bytes, ApiError>> + Unpin,
    {
        use tokio_stream::StreamExt as _;
        let partner = user.partner_id;
        let used = self.store.usage(partner).await?;
        self.quota
            .admit(partner, used, Usage { files: 1, bytes: 1 })?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = ObjectKey::upload(&partner.to_string(), &id)
            .map_err(|e| ApiError::Internal(e.into()))?;
        let mut writer = self.content.writer(&key);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    writer.abort().await;
                    return Err(error);
                }
            };
            if chunk.len() > MAX_UPLOAD_CHUNK {
                writer.abort().await;
                return Err(ApiError::invalid(
                    "chunk",
                    format!(
                        "at most 1 MiB per message, not {} bytes; nothing was kept",
                        chunk.len()
                    ),
                ));
            }
            if writer.size() + chunk.len() as u64 > domain::MAX_ATTACHMENT_BYTES as u64 {
                writer.abort().await;
                return Err(ApiError::invalid(
                    "chunk",
                    "an attachment is at most 10 MiB in all; nothing was kept",
                ));
            }
            writer.write(&chunk).await.map_err(store_unavailable)?;
        }
        if writer.size() == 0 {
            writer.abort().await;
            return Err(ApiError::invalid(
                "chunk",
                "an attachment is 1 byte to 10 MiB; the upload sent no bytes",
            ));
        }
        let stored = writer.finish().await.map_err(store_unavailable)?;
        let now = self.clock.now();
        let upload = Upload {
            id,
            partner_id: partner,
            object_key: key.as_str().to_owned(),
            size_bytes: i64::try_from(stored.size).unwrap_or(i64::MAX),
            sha256: stored.sha256,
            created_at: now,
        };
        match self.store.record_upload(&upload, &self.quota).await {
            Ok(Inserted::Done) => {}
            Ok(Inserted::OverQuota(used)) => {
                self.remove_objects(std::slice::from_ref(&key)).await;
                let adding = Usage {
                    files: 1,
                    bytes: stored.size,
                };
                return Err(match self.quota.admit(partner, used, adding) {
                    Err(refusal) => refusal,
                    Ok(()) => ApiError::Internal(anyhow::anyhow!(
                        "the store refused an upload the quota admits"
                    )),
                });
            }
            Ok(Inserted::UploadGone(_)) => {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "recording an upload claimed one"
                )));
            }
            Err(error) => {
                self.remove_objects(std::slice::from_ref(&key)).await;
                return Err(error.into());
            }
        }
        tracing::info!(upload_id = %upload.id, size = upload.size_bytes, "attachment uploaded");
        Ok(Uploaded {
            id: upload.id,
            size_bytes: upload.size_bytes,
            sha256: upload.sha256,
            expires_at: now + UPLOAD_LIFETIME,
        })
    }

    /// Deletes uploads no ticket named within [`UPLOAD_LIFETIME`]; how
    /// many. The record goes first, so a ticket claiming one at the same
    /// moment either gets it whole or does not get it.
    pub async fn delete_expired_uploads(&self) -> anyhow::Result<usize> {
        let before = self.clock.now() - UPLOAD_LIFETIME;
        let mut deleted = 0;
        loop {
            let expired = self.store.expired_uploads(before, 100).await?;
            if expired.is_empty() {
                return Ok(deleted);
            }
            for upload in expired {
                if !self.store.forget_upload(&upload.id).await? {
                    continue;
                }
                deleted += 1;
                let removed = match ObjectKey::parse(&upload.object_key) {
                    Ok(key) => self.content.delete(&key).await.map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = removed {
                    // Logged with its key so an operator can remove it.
                    tracing::warn!(%error, object_key = %upload.object_key, "an expired upload's object stays behind");
                }
            }
        }
    }

    /// Puts each attachment's bytes at its key; on a failure removes what
    /// it stored and answers UNAVAILABLE.
    async fn store_objects(
        &self,
        attachments: Vec<(ObjectKey, Attachment)>,
    ) -> ApiResult<Vec<Attachment>> {
        let mut stored: Vec<Attachment> = Vec::with_capacity(attachments.len());
        for (key, mut a) in attachments {
            if let Err(error) = self.content.put_bytes(&key, a.content.clone()).await {
                let keys: Vec<ObjectKey> = stored
                    .iter()
                    .filter_map(|s| s.object_key.as_deref())
                    .filter_map(|k| ObjectKey::parse(k).ok())
                    .collect();
                self.remove_objects(&keys).await;
                return Err(store_unavailable(error));
            }
            a.object_key = Some(key.as_str().to_owned());
            a.content = prost::bytes::Bytes::new();
            stored.push(a);
        }
        Ok(stored)
    }

    /// Removes objects no row names (a ticket that was not stored).
    async fn remove_objects(&self, keys: &[ObjectKey]) {
        for key in keys {
            if let Err(error) = self.content.delete(key).await {
                tracing::warn!(%error, "an attachment object of a ticket not stored stays behind");
            }
        }
    }

    /// Moves attachments still kept in the database into the object store,
    /// in batches (at start: `support.db` kept every attachment's bytes
    /// before). Returns how many it moved.
    pub async fn move_attachments_to_store(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        loop {
            let batch = self.store.attachments_in_database(4).await?;
            if batch.is_empty() {
                break;
            }
            for (id, partner, ticket, content) in batch {
                let key = ObjectKey::attachment(&partner, &ticket, &id)?;
                self.content
                    .put_bytes(&key, prost::bytes::Bytes::from(content))
                    .await?;
                self.store.attachment_moved(&id, key.as_str()).await?;
                moved += 1;
            }
            tracing::info!(
                moved,
                "moving attachments from the database to the object store"
            );
        }
        Ok(moved)
    }

    async fn owned(&self, partner: PartnerId, id: TicketId) -> ApiResult<Ticket> {
        self.store
            .ticket(partner, id)
            .await?
            .ok_or_else(|| ApiError::not_found("ticket", id.to_string()))
    }

    async fn view(&self, ticket: Ticket) -> ApiResult<TicketView> {
        let comments = self.store.comments(ticket.id).await?;
        let attachments = self.store.attachments(ticket.id).await?;
        Ok(TicketView {
            ticket,
            comments,
            attachments,
        })
    }
}

/// The ticket a new request becomes (a refund's details are filled in by
/// [`Support::plan_refund`]).
fn new_ticket(user: &UserCaller, new: &NewTicket, now: Micros) -> Ticket {
    let (mut tenant, mut domain_name, mut order, mut subscription) = (None, None, None, None);
    if let Some(refund) = &new.refund {
        match &refund.customer {
            domain::CustomerNamed::Tenant(id) => tenant = Some(id.clone()),
            domain::CustomerNamed::Domain(name) => domain_name = Some(name.clone()),
        }
        match &refund.target {
            domain::TargetNamed::Order(id) => order = Some(id.clone()),
            domain::TargetNamed::Subscription(id) => subscription = Some(id.clone()),
        }
    }
    Ticket {
        id: TicketId::new(),
        partner_id: user.partner_id,
        issue_type: new.issue_type,
        impact: new.impact,
        title: new.title.clone(),
        description: new.description.clone(),
        contact_name: new.contact_name.clone(),
        contact_email: new.contact_email.clone(),
        contact_phone: new.contact_phone.clone(),
        status: TicketStatus::Submitted,
        refund_customer_tenant_id: tenant,
        refund_customer_domain_name: domain_name,
        refund_order_id: order,
        refund_subscription_id: subscription,
        refund_reason: None,
        refund_currency_code: None,
        refund_minor_unit_digits: None,
        refund_requested_minor: None,
        refund_refundable_minor: None,
        refund_deadline: None,
        refunded_minor: None,
        rejection_reason: None,
        request_id: new.request_id,
        request_fingerprint: new.fingerprint.clone(),
        created_by_user_id: user.user_id.clone(),
        created_at: now,
        updated_at: now,
    }
}

/// "Refund ticket submitted", for the audit log.
fn submitted(ticket: &Ticket, subscriptions: usize, now: Micros) -> Message {
    let activity = ticket_activity(ticket, ActivityType::RefundTicketSubmitted, now)
        .detail(
            "requested_minor",
            ticket.refund_requested_minor.unwrap_or(0),
        )
        .detail(
            "currency_code",
            ticket.refund_currency_code.as_deref().unwrap_or_default(),
        )
        .detail(
            "reason",
            ticket.refund_reason.as_deref().unwrap_or_default(),
        )
        .detail("subscriptions", subscriptions);
    Message::activity(ticket.id, activity)
}

/// An activity about a ticket, for the audit log: by its filer, about its
/// refund's customer and subscription.
pub fn ticket_activity(ticket: &Ticket, kind: ActivityType, at: Micros) -> Activity {
    let mut activity = Activity::new(ticket.partner_id, kind, at)
        .by(&ticket.created_by_user_id, &ticket.contact_name)
        .customer(
            ticket
                .refund_customer_tenant_id
                .as_deref()
                .unwrap_or_default(),
        )
        .subscription(ticket.refund_subscription_id.as_deref().unwrap_or_default())
        .detail("ticket_id", ticket.id);
    if let Some(order) = &ticket.refund_order_id {
        activity = activity.detail("order_id", order);
    }
    activity
}

csp_store::replayable!(Ticket {
    fingerprint: request_fingerprint,
    request_id: request_id,
    id: id
});
