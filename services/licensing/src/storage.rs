//! Licensing storage: SQL over SQLite or PostgreSQL. Reads are scoped to a
//! partner; secrets arrive here already sealed.

use csp_kit::clock::Micros;
use csp_kit::ids::PartnerId;
use csp_store::error::parse;

use crate::domain::EntitlementStatus;
use csp_store::db::{Db, DbTx, MigrationSource, Migrations};
use csp_store::outbox::{self, Message};
use csp_store::{StoreError, StoreResult, on_db, on_tx};

/// The licensing service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[LICENSING, outbox::sqlite_migration(2)],
    postgres: &[LICENSING, outbox::postgres_migration(2)],
};

const LICENSING: MigrationSource = MigrationSource {
    version: 1,
    description: "licensing",
    sql: include_str!("../migrations/0001_licensing.sql"),
};

/// Software bought for a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    /// The subscription.
    pub subscription_id: String,
    /// The partner.
    pub partner_id: PartnerId,
    /// The customer.
    pub customer_tenant_id: String,
    /// The order.
    pub order_id: String,
    /// The product.
    pub product_id: String,
    /// Its title.
    pub product_title: String,
    /// Active, or revoked.
    pub status: EntitlementStatus,
    /// When it was provisioned.
    pub provisioned_at: Micros,
    /// When it was revoked.
    pub revoked_at: Option<Micros>,
}

type EntitlementRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

fn entitlement(row: EntitlementRow) -> StoreResult<Entitlement> {
    let (
        subscription_id,
        partner_id,
        customer_tenant_id,
        order_id,
        product_id,
        product_title,
        status,
        at,
        revoked,
    ) = row;
    Ok(Entitlement {
        subscription_id,
        partner_id: parse("entitlements.partner_id", &partner_id)?,
        customer_tenant_id,
        order_id,
        product_id,
        product_title,
        status: EntitlementStatus::from_db(&status)
            .ok_or_else(|| StoreError::corrupt("entitlements.status", status))?,
        provisioned_at: at,
        revoked_at: revoked,
    })
}

const ENTITLEMENT_COLUMNS: &str = "subscription_id, partner_id, customer_tenant_id, order_id, product_id, \
                                   product_title, status, provisioned_at_us, revoked_at_us";

/// What was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Version.
    pub version: String,
    /// Language.
    pub language: String,
    /// File type id.
    pub file_type: String,
}

/// A link to create when no valid one exists.
#[derive(Clone, Debug)]
pub struct NewLink {
    /// Its id.
    pub id: String,
    /// SHA-256 of its token.
    pub token_hash: String,
    /// Its token, sealed.
    pub sealed_token: String,
    /// When it stops working.
    pub expires_at: Micros,
    /// Downloads it allows.
    pub max_downloads: i32,
    /// Who asked for it.
    pub issued_by_user_id: String,
}

/// A stored link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLink {
    /// Its id.
    pub id: String,
    /// Its token, sealed.
    pub sealed_token: String,
    /// When it stops working.
    pub expires_at: Micros,
    /// Downloads so far.
    pub downloads: i32,
    /// Downloads it allows.
    pub max_downloads: i32,
}

/// What [`LicensingStore::issue`] settled on.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The product key, sealed.
    pub sealed_key: String,
    /// The current link.
    pub link: StoredLink,
    /// Whether the link was made by this call.
    pub link_is_new: bool,
}

/// A counted download.
#[derive(Clone, Debug)]
pub struct Download {
    /// The link.
    pub link_id: String,
    /// This download's number.
    pub count: i32,
    /// Downloads the link allows.
    pub max_downloads: i32,
    /// Partner.
    pub partner_id: PartnerId,
    /// Customer.
    pub customer_tenant_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// Product.
    pub product_id: String,
    /// The selection.
    pub selection: Selection,
}

/// What redeeming a token came to.
#[derive(Debug)]
pub enum Redeemed {
    /// Counted, to be committed with its activity.
    Counted(Box<(Download, PendingDownload)>),
    /// Not counted: the link's state says why.
    Refused(crate::domain::LinkState),
    /// No such link.
    Unknown,
}

/// Reads and writes the licensing tables.
#[derive(Clone, Debug)]
pub struct LicensingStore {
    db: Db,
}

impl LicensingStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Applies a "order placed" event once: inserts the entitlements (an
    /// existing one, even revoked, is left as it is). Returns false when the
    /// event was applied before.
    pub async fn provision(
        &self,
        event_id: &str,
        entitlements: &[Entitlement],
        now: Micros,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        if !first_time(&mut tx, event_id, now).await? {
            return Ok(false);
        }
        for e in entitlements {
            let sql = format!(
                "INSERT INTO entitlements ({ENTITLEMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, NULL) \
                 ON CONFLICT (subscription_id) DO NOTHING"
            );
            on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&e.subscription_id)
                .bind(e.partner_id.to_string())
                .bind(&e.customer_tenant_id)
                .bind(&e.order_id)
                .bind(&e.product_id)
                .bind(&e.product_title)
                .bind(e.provisioned_at)
                .execute(&mut **t)
                .await
                .map(drop))?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Applies a "subscription cancelled" event once: revokes the
    /// entitlement and its links (recording a revoked entitlement when it was
    /// never provisioned, so a late "order placed" cannot bring it back).
    /// Returns false when the event was applied before.
    pub async fn revoke_from_event(
        &self,
        event_id: &str,
        tombstone: &Entitlement,
        now: Micros,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        if !first_time(&mut tx, event_id, now).await? {
            return Ok(false);
        }
        let sql = format!(
            "INSERT INTO entitlements ({ENTITLEMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 'revoked', $7, $7) \
             ON CONFLICT (subscription_id) DO NOTHING"
        );
        let e = tombstone;
        on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&e.subscription_id)
            .bind(e.partner_id.to_string())
            .bind(&e.customer_tenant_id)
            .bind(&e.order_id)
            .bind(&e.product_id)
            .bind(&e.product_title)
            .bind(now)
            .execute(&mut **t)
            .await
            .map(drop))?;
        revoke_in(&mut tx, &e.partner_id.to_string(), &e.subscription_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a subscription's entitlement and links. Returns the links
    /// revoked now, or `None` when the partner has no such entitlement.
    pub async fn revoke(
        &self,
        partner_id: &str,
        subscription_id: &str,
        now: Micros,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.db.begin().await?;
        let found = revoke_in(&mut tx, partner_id, subscription_id, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// A partner's entitlements for a customer.
    pub async fn entitlements_of(
        &self,
        partner_id: &str,
        customer: &str,
    ) -> StoreResult<Vec<Entitlement>> {
        let sql = format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE partner_id = $1 AND customer_tenant_id = $2 \
             ORDER BY product_title, subscription_id"
        );
        let rows: Vec<EntitlementRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(partner_id)
            .bind(customer)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(entitlement).collect()
    }

    /// A partner's entitlement for a subscription.
    pub async fn entitlement(
        &self,
        partner_id: &str,
        subscription_id: &str,
    ) -> StoreResult<Option<Entitlement>> {
        let sql = format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE partner_id = $1 AND subscription_id = $2"
        );
        let row: Option<EntitlementRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(partner_id)
            .bind(subscription_id)
            .fetch_optional(pool)
            .await)?;
        row.map(entitlement).transpose()
    }

    /// In one transaction: checks the entitlement is still active (`None`
    /// when it is not), takes the subscription's key for the version
    /// (storing `fresh_key` when there is none), takes the current valid link
    /// for the selection (storing `fresh_link` when there is none), and
    /// writes `messages` to the outbox, and `new_link_messages` too when
    /// `fresh_link` was stored.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue(
        &self,
        e: &Entitlement,
        selection: &Selection,
        now: Micros,
        fresh_key: &str,
        fresh_link: &NewLink,
        messages: &[Message],
        new_link_messages: &[Message],
    ) -> StoreResult<Option<Issued>> {
        let mut tx = self.db.begin().await?;
        // Touching the row serializes concurrent calls for one subscription
        // (a row lock on PostgreSQL; SQLite writers are serialized anyway).
        const LOCK: &str = "UPDATE entitlements SET status = status WHERE subscription_id = $1 AND status = 'active'";
        let active = on_tx!(&mut tx, t => sqlx::query(LOCK)
            .bind(&e.subscription_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()))?;
        if active == 0 {
            return Ok(None);
        }

        const INSERT_KEY: &str = "INSERT INTO product_keys (subscription_id, version, sealed_key, created_at_us) \
                                  VALUES ($1, $2, $3, $4) ON CONFLICT (subscription_id, version) DO NOTHING";
        const KEY: &str =
            "SELECT sealed_key FROM product_keys WHERE subscription_id = $1 AND version = $2";
        let sealed_key: String = on_tx!(&mut tx, t => {
            sqlx::query(INSERT_KEY)
                .bind(&e.subscription_id)
                .bind(&selection.version)
                .bind(fresh_key)
                .bind(now)
                .execute(&mut **t)
                .await?;
            sqlx::query_scalar(KEY).bind(&e.subscription_id).bind(&selection.version).fetch_one(&mut **t).await
        })?;

        const CURRENT: &str = "SELECT id, sealed_token, expires_at_us, downloads, max_downloads FROM download_links \
                               WHERE subscription_id = $1 AND version = $2 AND language = $3 AND file_type = $4 \
                               AND revoked_at_us IS NULL AND expires_at_us > $5 AND downloads < max_downloads \
                               ORDER BY issued_at_us DESC, id LIMIT 1";
        let current: Option<(String, String, i64, i32, i32)> = on_tx!(&mut tx, t => sqlx::query_as(CURRENT)
            .bind(&e.subscription_id)
            .bind(&selection.version)
            .bind(&selection.language)
            .bind(&selection.file_type)
            .bind(now)
            .fetch_optional(&mut **t)
            .await)?;
        let (link, link_is_new) = match current {
            Some((id, sealed_token, expires_at, downloads, max_downloads)) => (
                StoredLink {
                    id,
                    sealed_token,
                    expires_at,
                    downloads,
                    max_downloads,
                },
                false,
            ),
            None => {
                const INSERT_LINK: &str = "INSERT INTO download_links (id, token_hash, sealed_token, partner_id, \
                    customer_tenant_id, subscription_id, product_id, version, language, file_type, issued_by_user_id, \
                    issued_at_us, expires_at_us, downloads, max_downloads, revoked_at_us) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, NULL)";
                let l = fresh_link;
                on_tx!(&mut tx, t => sqlx::query(INSERT_LINK)
                    .bind(&l.id)
                    .bind(&l.token_hash)
                    .bind(&l.sealed_token)
                    .bind(e.partner_id.to_string())
                    .bind(&e.customer_tenant_id)
                    .bind(&e.subscription_id)
                    .bind(&e.product_id)
                    .bind(&selection.version)
                    .bind(&selection.language)
                    .bind(&selection.file_type)
                    .bind(&l.issued_by_user_id)
                    .bind(now)
                    .bind(l.expires_at)
                    .bind(l.max_downloads)
                    .execute(&mut **t)
                    .await
                    .map(drop))?;
                (
                    StoredLink {
                        id: l.id.clone(),
                        sealed_token: l.sealed_token.clone(),
                        expires_at: l.expires_at,
                        downloads: 0,
                        max_downloads: l.max_downloads,
                    },
                    true,
                )
            }
        };
        let extra = if link_is_new { new_link_messages } else { &[] };
        for message in messages.iter().chain(extra) {
            outbox::enqueue(&mut tx, message).await?;
        }
        tx.commit().await?;
        Ok(Some(Issued {
            sealed_key,
            link,
            link_is_new,
        }))
    }

    /// Counts one download of the link with `token_hash` if it still works,
    /// atomically. A counted download is not committed yet: the caller
    /// finishes it with [`PendingDownload::commit`], which writes its outbox
    /// messages in the same transaction.
    pub async fn redeem(&self, token_hash: &str, now: Micros) -> StoreResult<Redeemed> {
        const COUNT: &str = "UPDATE download_links SET downloads = downloads + 1 \
                             WHERE token_hash = $1 AND revoked_at_us IS NULL AND expires_at_us > $2 \
                             AND downloads < max_downloads \
                             RETURNING id, downloads, max_downloads, partner_id, customer_tenant_id, subscription_id, \
                             product_id, version, language, file_type";
        type Row = (
            String,
            i32,
            i32,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
        );
        let mut tx = self.db.begin().await?;
        let counted: Option<Row> = on_tx!(&mut tx, t => sqlx::query_as(COUNT)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut **t)
            .await)?;
        let Some((
            link_id,
            count,
            max_downloads,
            partner_id,
            customer,
            subscription,
            product,
            version,
            language,
            file_type,
        )) = counted
        else {
            drop(tx);
            const STATE: &str = "SELECT expires_at_us, downloads, max_downloads, revoked_at_us FROM download_links \
                                 WHERE token_hash = $1";
            let state: Option<(i64, i32, i32, Option<i64>)> = on_db!(&self.db, pool => sqlx::query_as(STATE).bind(token_hash).fetch_optional(pool).await)?;
            return Ok(match state {
                Some((expires_at, downloads, max_downloads, revoked)) => {
                    Redeemed::Refused(crate::domain::LinkState {
                        expires_at,
                        downloads,
                        max_downloads,
                        revoked: revoked.is_some(),
                    })
                }
                None => Redeemed::Unknown,
            });
        };
        let download = Download {
            link_id,
            count,
            max_downloads,
            partner_id: parse("download_links.partner_id", &partner_id)?,
            customer_tenant_id: customer,
            subscription_id: subscription,
            product_id: product,
            selection: Selection {
                version,
                language,
                file_type,
            },
        };
        Ok(Redeemed::Counted(Box::new((download, PendingDownload(tx)))))
    }
}

/// A counted download whose transaction is still open.
#[derive(Debug)]
pub struct PendingDownload(DbTx);

impl PendingDownload {
    /// Writes `messages` to the outbox and commits the count with them.
    pub async fn commit(mut self, messages: &[Message]) -> StoreResult<()> {
        for message in messages {
            outbox::enqueue(&mut self.0, message).await?;
        }
        self.0.commit().await?;
        Ok(())
    }
}

/// Records `event_id`; false when it was recorded before.
async fn first_time(tx: &mut DbTx, event_id: &str, now: Micros) -> StoreResult<bool> {
    const SQL: &str = "INSERT INTO processed_events (event_id, processed_at_us) VALUES ($1, $2) \
                       ON CONFLICT (event_id) DO NOTHING";
    let inserted = on_tx!(tx, t => sqlx::query(SQL)
        .bind(event_id)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Revokes inside `tx`; `None` when the partner has no such entitlement.
async fn revoke_in(
    tx: &mut DbTx,
    partner_id: &str,
    subscription_id: &str,
    now: Micros,
) -> StoreResult<Option<u64>> {
    const ENTITLEMENT: &str = "UPDATE entitlements SET status = 'revoked', \
                               revoked_at_us = COALESCE(revoked_at_us, $3) \
                               WHERE partner_id = $1 AND subscription_id = $2";
    const LINKS: &str = "UPDATE download_links SET revoked_at_us = $2 \
                         WHERE subscription_id = $1 AND revoked_at_us IS NULL";
    let found = on_tx!(tx, t => sqlx::query(ENTITLEMENT)
        .bind(partner_id)
        .bind(subscription_id)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected()))?;
    if found == 0 {
        return Ok(None);
    }
    let links = on_tx!(tx, t => sqlx::query(LINKS)
        .bind(subscription_id)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(Some(links))
}
