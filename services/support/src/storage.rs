//! Support storage: tickets, comments, attachments and refund steps, scoped
//! to a partner. Ids and states are written as text and read back typed.

use csp_kit::clock::Micros;
use csp_kit::ids::{PartnerId, RequestId, TicketId};
use csp_store::db::{Db, DbTx, MigrationSource, Migrations};
use csp_store::error::column;
use csp_store::outbox::{self, Message};
use csp_store::{StoreResult, lock, on_db, on_tx};
use prost::bytes::Bytes;
use sqlx::Row as _;

use crate::domain::{
    Attachment, AttachmentQuota, Comment, IssueType, RefundOutcome, Step, StepResult, StepState,
    Ticket, TicketStatus, Usage,
};

/// What [`SupportStore::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The ticket is stored.
    Done,
    /// Nothing is stored: the attachments would pass the quota; the
    /// partner's usage before.
    OverQuota(Usage),
    /// Nothing is stored: an upload it names is not (or no longer) the
    /// partner's to attach; its id.
    UploadGone(String),
}

/// An attachment uploaded before its ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Its id (the attachment's id once a ticket names it).
    pub id: String,
    /// The partner that uploaded it.
    pub partner_id: PartnerId,
    /// Where its bytes are.
    pub object_key: String,
    /// Its size.
    pub size_bytes: i64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// When it was stored.
    pub created_at: Micros,
}

const UPLOAD_COLUMNS: &str = "id, partner_id, object_key, size_bytes, sha256, created_at_us";

type UploadRow = (String, String, String, i64, String, i64);

fn upload_from_row(
    (id, partner_id, object_key, size_bytes, sha256, created_at): UploadRow,
) -> StoreResult<Upload> {
    Ok(Upload {
        id,
        partner_id: partner_id
            .parse()
            .map_err(|_| csp_store::StoreError::Corrupt {
                column: "attachment_uploads.partner_id",
                value: partner_id.clone(),
            })?,
        object_key,
        size_bytes,
        sha256,
        created_at,
    })
}

/// What a partner keeps (attachments and unclaimed uploads), read under a
/// per-partner lock on PostgreSQL (SQLite's writer lock serializes the
/// rest), so concurrent tickets and uploads cannot pass the quota together.
async fn usage_locked(tx: &mut DbTx, partner: PartnerId) -> StoreResult<Usage> {
    if let DbTx::Postgres(x) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock::key(&format!("csp-attachments:{partner}")))
            .execute(&mut **x)
            .await?;
    }
    usage_of(tx, partner).await
}

/// A partner's attachments and unclaimed uploads: (files, bytes).
const USAGE: &str = "SELECT \
        (SELECT COUNT(*) FROM ticket_attachments a JOIN tickets t ON t.id = a.ticket_id WHERE t.partner_id = $1) \
        + (SELECT COUNT(*) FROM attachment_uploads WHERE partner_id = $1), \
        CAST((SELECT COALESCE(SUM(a.size_bytes), 0) FROM ticket_attachments a JOIN tickets t ON t.id = a.ticket_id WHERE t.partner_id = $1) \
        + (SELECT COALESCE(SUM(size_bytes), 0) FROM attachment_uploads WHERE partner_id = $1) AS BIGINT)";

async fn usage_of(tx: &mut DbTx, partner: PartnerId) -> StoreResult<Usage> {
    let (files, bytes): (i64, i64) = on_tx!(tx, x => sqlx::query_as(USAGE)
        .bind(partner.to_string())
        .fetch_one(&mut **x)
        .await)?;
    Ok(usage_from(files, bytes))
}

fn usage_from(files: i64, bytes: i64) -> Usage {
    Usage {
        files: u64::try_from(files).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    }
}

/// The support service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        SUPPORT,
        MigrationSource {
            version: 2,
            description: "attachments",
            sql: include_str!("../migrations/0002_attachments_sqlite.sql"),
        },
        outbox::sqlite_migration(3),
        outbox::due_index_migration(4),
        ATTACHMENT_OBJECTS,
        ATTACHMENT_UPLOADS,
        REFUNDABLE,
    ],
    postgres: &[
        SUPPORT,
        MigrationSource {
            version: 2,
            description: "attachments",
            sql: include_str!("../migrations/0002_attachments_postgres.sql"),
        },
        outbox::postgres_migration(3),
        outbox::due_index_migration(4),
        ATTACHMENT_OBJECTS,
        ATTACHMENT_UPLOADS,
        REFUNDABLE,
        outbox::postgres_event_ids_not_unique_migration(8),
    ],
};

const REFUNDABLE: MigrationSource = MigrationSource {
    version: 7,
    description: "refund tickets keep what was refundable and until when",
    sql: include_str!("../migrations/0007_refundable.sql"),
};

const ATTACHMENT_UPLOADS: MigrationSource = MigrationSource {
    version: 6,
    description: "attachment uploads",
    sql: include_str!("../migrations/0006_attachment_uploads.sql"),
};

const ATTACHMENT_OBJECTS: MigrationSource = MigrationSource {
    version: 5,
    description: "attachment objects",
    sql: include_str!("../migrations/0005_attachment_objects.sql"),
};

const SUPPORT: MigrationSource = MigrationSource {
    version: 1,
    description: "support",
    sql: include_str!("../migrations/0001_support.sql"),
};

const TICKET_COLUMNS: &str = "id, partner_id, issue_type, impact, title, description, contact_name, contact_email, \
    contact_phone, status, refund_customer_tenant_id, refund_customer_domain_name, refund_order_id, \
    refund_subscription_id, refund_reason, refund_currency_code, refund_minor_unit_digits, refund_requested_minor, \
    refunded_minor, rejection_reason, request_id, request_fingerprint, created_by_user_id, created_at_us, updated_at_us, \
    refund_refundable_minor, refund_deadline_us";

/// The unique constraint on a partner's request ids (`CreateTicket` retries).
pub const TICKET_REQUEST_KEY: &str = "tickets_partner_request_key";

/// Reads a ticket row; evaluates to `StoreResult<Ticket>`.
macro_rules! ticket_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Ticket> {
            let r = $row;
            Ok(Ticket {
                id: column(r, "id")?,
                partner_id: column(r, "partner_id")?,
                issue_type: column(r, "issue_type")?,
                impact: column(r, "impact")?,
                title: r.try_get("title")?,
                description: r.try_get("description")?,
                contact_name: r.try_get("contact_name")?,
                contact_email: r.try_get("contact_email")?,
                contact_phone: r.try_get("contact_phone")?,
                status: column(r, "status")?,
                refund_customer_tenant_id: r.try_get("refund_customer_tenant_id")?,
                refund_customer_domain_name: r.try_get("refund_customer_domain_name")?,
                refund_order_id: r.try_get("refund_order_id")?,
                refund_subscription_id: r.try_get("refund_subscription_id")?,
                refund_reason: r.try_get("refund_reason")?,
                refund_currency_code: r.try_get("refund_currency_code")?,
                refund_minor_unit_digits: r.try_get("refund_minor_unit_digits")?,
                refund_requested_minor: r.try_get("refund_requested_minor")?,
                refunded_minor: r.try_get("refunded_minor")?,
                rejection_reason: r.try_get("rejection_reason")?,
                request_id: column(r, "request_id")?,
                request_fingerprint: r.try_get("request_fingerprint")?,
                created_by_user_id: r.try_get("created_by_user_id")?,
                created_at: r.try_get("created_at_us")?,
                updated_at: r.try_get("updated_at_us")?,
                refund_refundable_minor: r.try_get("refund_refundable_minor")?,
                refund_deadline: r.try_get("refund_deadline_us")?,
            })
        })()
    };
}

/// Reads and writes the support tables.
#[derive(Clone, Debug)]
pub struct SupportStore {
    db: Db,
}

impl SupportStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database (the refund workflow holds its advisory lock on it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a ticket with its attachments, refund steps and outbox
    /// messages in one transaction, unless its attachments would take the
    /// partner past `quota`: then nothing is written and the partner's usage
    /// before is returned. The usage is read under the write lock (SQLite)
    /// or a per-partner advisory lock (PostgreSQL), so tickets filed at the
    /// same moment cannot pass the quota together.
    ///
    /// Attachments whose id is in `uploaded` were uploaded before (already
    /// counted in the quota): their upload records are claimed in the same
    /// transaction, and a record that is gone (another ticket took it, or
    /// it expired) stores nothing. The refund steps are first due at
    /// `steps_due_at` (system time, as [`Self::due_steps`] is asked).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        t: &Ticket,
        attachments: Vec<Attachment>,
        uploaded: &[String],
        quota: &AttachmentQuota,
        steps: &[Step],
        messages: &[Message],
        steps_due_at: Micros,
    ) -> StoreResult<Inserted> {
        let mut tx = self.db.begin().await?;
        let inline: Vec<&Attachment> = attachments
            .iter()
            .filter(|a| !uploaded.contains(&a.id))
            .collect();
        if !inline.is_empty() {
            let used = usage_locked(&mut tx, t.partner_id).await?;
            if quota
                .admit(t.partner_id, used, Usage::of(inline.iter().copied()))
                .is_err()
            {
                return Ok(Inserted::OverQuota(used));
            }
        }
        for id in uploaded {
            const SQL: &str = "DELETE FROM attachment_uploads WHERE id = $1 AND partner_id = $2";
            let claimed = on_tx!(&mut tx, x => sqlx::query(SQL)
                .bind(id)
                .bind(t.partner_id.to_string())
                .execute(&mut **x)
                .await
                .map(|r| r.rows_affected()))?;
            if claimed != 1 {
                return Ok(Inserted::UploadGone(id.clone()));
            }
        }
        let sql = format!(
            "INSERT INTO tickets ({TICKET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)"
        );
        let inserted = on_tx!(&mut tx, x => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(t.id.to_string())
            .bind(t.partner_id.to_string())
            .bind(t.issue_type.as_db())
            .bind(t.impact.as_db())
            .bind(&t.title)
            .bind(&t.description)
            .bind(&t.contact_name)
            .bind(&t.contact_email)
            .bind(&t.contact_phone)
            .bind(t.status.as_db())
            .bind(&t.refund_customer_tenant_id)
            .bind(&t.refund_customer_domain_name)
            .bind(&t.refund_order_id)
            .bind(&t.refund_subscription_id)
            .bind(&t.refund_reason)
            .bind(&t.refund_currency_code)
            .bind(t.refund_minor_unit_digits)
            .bind(t.refund_requested_minor)
            .bind(t.refunded_minor)
            .bind(&t.rejection_reason)
            .bind(t.request_id.to_string())
            .bind(&t.request_fingerprint)
            .bind(&t.created_by_user_id)
            .bind(t.created_at)
            .bind(t.updated_at)
            .bind(t.refund_refundable_minor)
            .bind(t.refund_deadline)
            .execute(&mut **x)
            .await
            .map(drop));
        inserted?;
        // The bytes are in the object store already; the row keeps where.
        for (position, a) in attachments.into_iter().enumerate() {
            const SQL: &str = "INSERT INTO ticket_attachments (id, ticket_id, position, file_name, content_type, \
                               size_bytes, sha256, content, object_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
            on_tx!(&mut tx, x => sqlx::query(SQL)
                .bind(&a.id)
                .bind(t.id.to_string())
                .bind(position as i32)
                .bind(&a.file_name)
                .bind(&a.content_type)
                .bind(a.size_bytes)
                .bind(a.sha256)
                .bind(&[] as &[u8])
                .bind(&a.object_key)
                .execute(&mut **x)
                .await
                .map(drop))?;
        }
        for s in steps {
            const SQL: &str = "INSERT INTO refund_steps (ticket_id, position, partner_id, subscription_id, \
                               refund_minor, state, attempts, next_attempt_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
            on_tx!(&mut tx, x => sqlx::query(SQL)
                .bind(s.ticket_id.to_string())
                .bind(s.position)
                .bind(s.partner_id.to_string())
                .bind(s.subscription_id.to_string())
                .bind(s.refund_minor)
                .bind(s.state.as_db())
                .bind(s.attempts)
                .bind(steps_due_at)
                .execute(&mut **x)
                .await
                .map(drop))?;
        }
        for m in messages {
            outbox::enqueue(&mut tx, m).await?;
        }
        tx.commit().await?;
        Ok(Inserted::Done)
    }

    /// Records an upload of `upload.partner_id`, unless it would take the
    /// partner past `quota` (then nothing is written and the usage before is
    /// returned), under the same lock as [`SupportStore::insert`].
    pub async fn record_upload(
        &self,
        upload: &Upload,
        quota: &AttachmentQuota,
    ) -> StoreResult<Inserted> {
        let mut tx = self.db.begin().await?;
        let used = usage_locked(&mut tx, upload.partner_id).await?;
        let adding = Usage {
            files: 1,
            bytes: u64::try_from(upload.size_bytes).unwrap_or(0),
        };
        if quota.admit(upload.partner_id, used, adding).is_err() {
            return Ok(Inserted::OverQuota(used));
        }
        const SQL: &str = "INSERT INTO attachment_uploads (id, partner_id, object_key, size_bytes, sha256, created_at_us) \
                           VALUES ($1, $2, $3, $4, $5, $6)";
        on_tx!(&mut tx, x => sqlx::query(SQL)
            .bind(&upload.id)
            .bind(upload.partner_id.to_string())
            .bind(&upload.object_key)
            .bind(upload.size_bytes)
            .bind(&upload.sha256)
            .bind(upload.created_at)
            .execute(&mut **x)
            .await
            .map(drop))?;
        tx.commit().await?;
        Ok(Inserted::Done)
    }

    /// What a partner keeps now: its tickets' attachments and its uploads
    /// not attached yet (read without the lock: a first check before an
    /// upload's bytes are taken).
    pub async fn usage(&self, partner: PartnerId) -> StoreResult<Usage> {
        let (files, bytes): (i64, i64) = on_db!(&self.db, pool => sqlx::query_as(USAGE)
            .bind(partner.to_string())
            .fetch_one(pool)
            .await)?;
        Ok(usage_from(files, bytes))
    }

    /// The partner's uploads among `ids` that no ticket has claimed.
    pub async fn uploads(&self, partner: PartnerId, ids: &[String]) -> StoreResult<Vec<Upload>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM attachment_uploads WHERE id = $1 AND partner_id = $2"
            );
            let row: Option<UploadRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id)
                .bind(partner.to_string())
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                found.push(upload_from_row(row)?);
            }
        }
        Ok(found)
    }

    /// Up to `limit` uploads stored before `before` that no ticket claimed.
    pub async fn expired_uploads(&self, before: Micros, limit: i64) -> StoreResult<Vec<Upload>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM attachment_uploads WHERE created_at_us < $1 \
             ORDER BY created_at_us LIMIT $2"
        );
        let rows: Vec<UploadRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(upload_from_row).collect()
    }

    /// Forgets an upload no ticket claimed; whether it was still there.
    pub async fn forget_upload(&self, id: &str) -> StoreResult<bool> {
        const SQL: &str = "DELETE FROM attachment_uploads WHERE id = $1";
        let gone = on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(gone > 0)
    }

    /// A partner's ticket.
    pub async fn ticket(&self, partner_id: PartnerId, id: TicketId) -> StoreResult<Option<Ticket>> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE partner_id = $1 AND id = $2");
        self.one(&sql, partner_id, &id.to_string()).await
    }

    /// The ticket a partner filed with `request_id`, stored in its normal
    /// form or, by tickets filed before ids were normalized, as the client
    /// sent it (`as_sent`).
    pub async fn ticket_by_request(
        &self,
        partner_id: PartnerId,
        request_id: RequestId,
        as_sent: &str,
    ) -> StoreResult<Option<Ticket>> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE partner_id = $1 AND request_id IN ($2, $3) \
             ORDER BY created_at_us, id LIMIT 1"
        );
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(request_id.to_string())
                .bind(as_sent)
                .fetch_optional(pool)
                .await?;
            row.map(|r| ticket_from_row!(&r)).transpose()
        })
    }

    async fn one(
        &self,
        sql: &str,
        partner_id: PartnerId,
        key: &str,
    ) -> StoreResult<Option<Ticket>> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(partner_id.to_string())
                .bind(key)
                .fetch_optional(pool)
                .await?;
            row.map(|r| ticket_from_row!(&r)).transpose()
        })
    }

    /// A page of a partner's tickets, newest first, after the cursor,
    /// optionally of one status and one issue type.
    pub async fn list(
        &self,
        partner_id: PartnerId,
        status: Option<TicketStatus>,
        issue_type: Option<IssueType>,
        before: Option<(Micros, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<Ticket>> {
        let (before_at, before_id) = before.unwrap_or((Micros::MAX, ""));
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE partner_id = $1 AND ($2 = '' OR status = $2) \
             AND ($3 = '' OR issue_type = $3) \
             AND (created_at_us, id) < ($4, $5) \
             ORDER BY created_at_us DESC, id DESC LIMIT $6"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(status.map_or("", TicketStatus::as_db))
                .bind(issue_type.map_or("", IssueType::as_db))
                .bind(before_at)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| ticket_from_row!(r)).collect()
        })
    }

    /// A ticket's comments, oldest first.
    pub async fn comments(&self, ticket_id: TicketId) -> StoreResult<Vec<Comment>> {
        const SQL: &str = "SELECT author_user_id, text, created_at_us FROM ticket_comments WHERE ticket_id = $1 \
                           ORDER BY position";
        let rows: Vec<(String, String, i64)> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(ticket_id.to_string()).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(author_user_id, text, created_at)| Comment {
                author_user_id,
                text,
                created_at,
            })
            .collect())
    }

    /// A ticket's attachments; with content only when `content` is set.
    pub async fn attachments(&self, ticket_id: TicketId) -> StoreResult<Vec<Attachment>> {
        const SQL: &str = "SELECT id, file_name, content_type, size_bytes, sha256, object_key FROM ticket_attachments \
                           WHERE ticket_id = $1 ORDER BY position";
        let rows: Vec<(String, String, String, i64, String, Option<String>)> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(ticket_id.to_string()).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, file_name, content_type, size_bytes, sha256, object_key)| Attachment {
                    id,
                    file_name,
                    content_type,
                    size_bytes,
                    sha256,
                    object_key,
                    content: Bytes::new(),
                },
            )
            .collect())
    }

    /// One attachment; with its content only when it is still in the
    /// database (written before attachments moved to the object store).
    pub async fn attachment(
        &self,
        ticket_id: TicketId,
        id: &str,
    ) -> StoreResult<Option<Attachment>> {
        const SQL: &str = "SELECT id, file_name, content_type, size_bytes, sha256, object_key, \
                           CASE WHEN object_key IS NULL THEN content END \
                           FROM ticket_attachments WHERE ticket_id = $1 AND id = $2";
        type Row = (
            String,
            String,
            String,
            i64,
            String,
            Option<String>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(ticket_id.to_string()).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(
            |(id, file_name, content_type, size_bytes, sha256, object_key, content)| Attachment {
                id,
                file_name,
                content_type,
                size_bytes,
                sha256,
                object_key,
                content: content.map(Bytes::from).unwrap_or_default(),
            },
        ))
    }

    /// Up to `limit` attachments still kept in the database: (id, partner,
    /// ticket, content).
    pub async fn attachments_in_database(
        &self,
        limit: i64,
    ) -> StoreResult<Vec<(String, String, String, Vec<u8>)>> {
        const SQL: &str = "SELECT a.id, t.partner_id, a.ticket_id, a.content FROM ticket_attachments a \
                           JOIN tickets t ON t.id = a.ticket_id WHERE a.object_key IS NULL ORDER BY a.id LIMIT $1";
        let rows = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(limit).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Records that attachment `id` is in the object store at `key`, and
    /// drops its bytes from the database.
    pub async fn attachment_moved(&self, id: &str, key: &str) -> StoreResult<()> {
        const SQL: &str = "UPDATE ticket_attachments SET object_key = $2, content = $3 \
                           WHERE id = $1 AND object_key IS NULL";
        on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(id)
            .bind(key)
            .bind(&[] as &[u8])
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Adds a comment.
    pub async fn add_comment(
        &self,
        ticket_id: TicketId,
        author: &str,
        text: &str,
        now: Micros,
    ) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO ticket_comments (ticket_id, position, author_user_id, text, created_at_us) \
                           SELECT $1, COALESCE(MAX(position), 0) + 1, $2, $3, $4 FROM ticket_comments WHERE ticket_id = $1";
        const TOUCH: &str = "UPDATE tickets SET updated_at_us = $2 WHERE id = $1";
        let ticket_id = ticket_id.to_string();
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, x => {
            sqlx::query(SQL).bind(&ticket_id).bind(author).bind(text).bind(now).execute(&mut **x).await?;
            sqlx::query(TOUCH).bind(&ticket_id).bind(now).execute(&mut **x).await.map(drop)
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a ticket (any status but closed).
    pub async fn close(&self, ticket_id: TicketId, now: Micros) -> StoreResult<()> {
        let sql = format!(
            "UPDATE tickets SET status = '{}', updated_at_us = $2 WHERE id = $1",
            TicketStatus::Closed.as_db()
        );
        on_db!(&self.db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(ticket_id.to_string())
            .bind(now)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Refund steps due now (pending or half done), oldest first.
    pub async fn due_steps(&self, now: Micros, limit: u32) -> StoreResult<Vec<Step>> {
        let sql = format!(
            "SELECT ticket_id, position, partner_id, subscription_id, refund_minor, state, attempts \
             FROM refund_steps WHERE state IN ('{}', '{}') AND next_attempt_at_us <= $1 \
             ORDER BY next_attempt_at_us, ticket_id, position LIMIT $2",
            StepState::Pending.as_db(),
            StepState::Cancelled.as_db()
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| -> StoreResult<Step> {
                    Ok(Step {
                        ticket_id: column(r, "ticket_id")?,
                        position: r.try_get("position")?,
                        partner_id: column(r, "partner_id")?,
                        subscription_id: column(r, "subscription_id")?,
                        refund_minor: r.try_get("refund_minor")?,
                        state: column(r, "state")?,
                        attempts: r.try_get("attempts")?,
                    })
                })
                .collect()
        })
    }

    /// Moves a step on.
    pub async fn set_step(
        &self,
        s: &Step,
        state: StepState,
        error: Option<&str>,
    ) -> StoreResult<()> {
        const SQL: &str = "UPDATE refund_steps SET state = $3, last_error = $4 WHERE ticket_id = $1 AND position = $2";
        on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(s.ticket_id.to_string())
            .bind(s.position)
            .bind(state.as_db())
            .bind(error)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Puts a step off until `next`.
    pub async fn retry_step(&self, s: &Step, next: Micros, error: &str) -> StoreResult<()> {
        const SQL: &str = "UPDATE refund_steps SET attempts = attempts + 1, next_attempt_at_us = $3, last_error = $4 \
                           WHERE ticket_id = $1 AND position = $2";
        on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(s.ticket_id.to_string())
            .bind(s.position)
            .bind(next)
            .bind(error)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Every step of a ticket, in order.
    pub async fn steps_of(&self, ticket_id: TicketId) -> StoreResult<Vec<StepResult>> {
        const SQL: &str = "SELECT state, refund_minor, last_error FROM refund_steps WHERE ticket_id = $1 ORDER BY position";
        on_db!(&self.db, pool => {
            let rows = sqlx::query(SQL).bind(ticket_id.to_string()).fetch_all(pool).await?;
            rows.iter()
                .map(|r| -> StoreResult<StepResult> {
                    Ok(StepResult {
                        state: column(r, "state")?,
                        refund_minor: r.try_get("refund_minor")?,
                        last_error: r.try_get("last_error")?,
                    })
                })
                .collect()
        })
    }

    /// Ends a refund ticket once (only while it is submitted), writing the
    /// outbox messages in the same transaction. Returns whether it ended now.
    pub async fn finish(
        &self,
        ticket_id: TicketId,
        outcome: &RefundOutcome,
        messages: &[Message],
        now: Micros,
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE tickets SET status = $2, refunded_minor = $3, rejection_reason = $4, updated_at_us = $5 \
             WHERE id = $1 AND status = '{}'",
            TicketStatus::Submitted.as_db()
        );
        let mut tx = self.db.begin().await?;
        let changed = on_tx!(&mut tx, x => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(ticket_id.to_string())
            .bind(outcome.status.as_db())
            .bind(outcome.refunded_minor)
            .bind(outcome.rejection.as_deref())
            .bind(now)
            .execute(&mut **x)
            .await
            .map(|r| r.rows_affected()))?;
        if changed == 0 {
            return Ok(false);
        }
        for m in messages {
            outbox::enqueue(&mut tx, m).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
