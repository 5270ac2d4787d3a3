//! Audit storage: appending to each partner's chain (one writer at a time
//! per partner, on any number of replicas), reading by time range, and
//! walking a chain for verification.

use csp_kit::clock::Micros;
use csp_kit::ids::PartnerId;
use csp_store::db::{Db, MigrationSource, Migrations};
use csp_store::error::column;
use csp_store::{StoreResult, on_db, on_tx};
use sqlx::Row as _;

use crate::domain::{self, Checkpoint, GENESIS, Record, Signer};

/// The audit service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[AUDIT],
    postgres: &[AUDIT],
};

const AUDIT: MigrationSource = MigrationSource {
    version: 1,
    description: "audit",
    sql: include_str!("../migrations/0001_audit.sql"),
};

const COLUMNS: &str = "partner_id, seq, id, kind, occur_at_us, recorded_at_us, user_id, user_display_name, \
                       customer_tenant_id, subscription_id, product_id, details, prev_hash, hash";

/// Reads a record row; evaluates to `StoreResult<Record>`.
macro_rules! record_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Record> {
            Ok(Record {
                partner_id: column($row, "partner_id")?,
                seq: $row.try_get("seq")?,
                id: $row.try_get("id")?,
                kind: $row.try_get("kind")?,
                occur_at: $row.try_get("occur_at_us")?,
                recorded_at: $row.try_get("recorded_at_us")?,
                user_id: $row.try_get("user_id")?,
                user_display_name: $row.try_get("user_display_name")?,
                customer_tenant_id: $row.try_get("customer_tenant_id")?,
                subscription_id: $row.try_get("subscription_id")?,
                product_id: $row.try_get("product_id")?,
                details: $row.try_get("details")?,
                prev_hash: $row.try_get("prev_hash")?,
                hash: $row.try_get("hash")?,
            })
        })()
    };
}

/// A filter for reading the log.
#[derive(Clone, Debug)]
pub struct Query {
    /// The partner.
    pub partner_id: PartnerId,
    /// First instant included.
    pub start: Micros,
    /// First instant excluded.
    pub end: Micros,
    /// Only this kind (stored spelling); empty for all.
    pub kind: String,
    /// Only this customer; empty for all.
    pub customer_tenant_id: String,
    /// Only this user; empty for all.
    pub user_id: String,
    /// Only records up to this sequence number (a snapshot).
    pub max_seq: i64,
}

impl Query {
    /// Every record of a partner's log: no range, filter or snapshot limit
    /// (narrow it with struct update syntax).
    pub fn all(partner_id: PartnerId) -> Self {
        Self {
            partner_id,
            start: Micros::MIN,
            end: Micros::MAX,
            kind: String::new(),
            customer_tenant_id: String::new(),
            user_id: String::new(),
            max_seq: i64::MAX,
        }
    }
}

/// Reads and writes the log.
#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Db,
}

impl AuditStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Appends `records` (their `partner_id`, `seq`, `prev_hash` and `hash`
    /// are set here) to `partner_id`'s chain in one transaction, skipping
    /// ids already recorded, and checkpoints the new head. Returns how many
    /// were new and the checkpoint (when any was).
    pub async fn append(
        &self,
        partner_id: PartnerId,
        records: Vec<Record>,
        signer: &Signer,
        now: Micros,
    ) -> StoreResult<(u32, Option<Checkpoint>)> {
        let partner = partner_id.to_string();
        let mut tx = self.db.begin().await?;
        const HEAD_INIT: &str = "INSERT INTO chain_heads (partner_id, seq, hash) VALUES ($1, 0, $2) \
                                 ON CONFLICT (partner_id) DO NOTHING";
        // Locks the partner's head row until commit: appends never interleave.
        const HEAD_LOCK: &str = "UPDATE chain_heads SET seq = seq WHERE partner_id = $1";
        const HEAD: &str = "SELECT seq, hash FROM chain_heads WHERE partner_id = $1";
        let (mut seq, mut hash): (i64, String) = on_tx!(&mut tx, t => {
            sqlx::query(HEAD_INIT).bind(&partner).bind(GENESIS).execute(&mut **t).await?;
            sqlx::query(HEAD_LOCK).bind(&partner).execute(&mut **t).await?;
            sqlx::query_as(HEAD).bind(&partner).fetch_one(&mut **t).await
        })?;
        let mut added = 0u32;
        for mut record in records {
            const SEEN: &str = "SELECT COUNT(*) FROM activities WHERE id = $1";
            let seen: i64 = on_tx!(&mut tx, t => sqlx::query_scalar(SEEN).bind(&record.id).fetch_one(&mut **t).await)?;
            if seen > 0 {
                continue;
            }
            record.partner_id = partner_id;
            record.seq = seq + 1;
            record.prev_hash = hash.clone();
            record.hash = domain::record_hash(&hash, &record);
            let insert = format!(
                "INSERT INTO activities ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            );
            let r = &record;
            on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(&partner)
                .bind(r.seq)
                .bind(&r.id)
                .bind(&r.kind)
                .bind(r.occur_at)
                .bind(r.recorded_at)
                .bind(&r.user_id)
                .bind(&r.user_display_name)
                .bind(&r.customer_tenant_id)
                .bind(&r.subscription_id)
                .bind(&r.product_id)
                .bind(&r.details)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .execute(&mut **t)
                .await
                .map(drop))?;
            seq = record.seq;
            hash = record.hash;
            added += 1;
        }
        if added == 0 {
            return Ok((0, None));
        }
        let checkpoint = signer.checkpoint(partner_id, seq, &hash);
        const HEAD_SET: &str = "UPDATE chain_heads SET seq = $2, hash = $3 WHERE partner_id = $1";
        const CHECKPOINT: &str = "INSERT INTO checkpoints (partner_id, seq, hash, mac, created_at_us) \
                                  VALUES ($1, $2, $3, $4, $5)";
        on_tx!(&mut tx, t => {
            sqlx::query(HEAD_SET).bind(&partner).bind(seq).bind(&hash).execute(&mut **t).await?;
            sqlx::query(CHECKPOINT)
                .bind(&partner)
                .bind(seq)
                .bind(&hash)
                .bind(&checkpoint.mac)
                .bind(now)
                .execute(&mut **t)
                .await
                .map(drop)
        })?;
        tx.commit().await?;
        Ok((added, Some(checkpoint)))
    }

    /// The newest sequence number of a partner's chain (0 when empty).
    pub async fn head_seq(&self, partner_id: PartnerId) -> StoreResult<i64> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0) FROM activities WHERE partner_id = $1";
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(SQL).bind(partner_id.to_string()).fetch_one(pool).await)?,
        )
    }

    /// A page of records matching `q`, newest first, after the cursor
    /// (occur_at, seq) of the previous page's last record.
    pub async fn page(
        &self,
        q: &Query,
        before: Option<(Micros, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        // One upper bound, (occur_at, seq) below the cursor or below the range's
        // end: databases start the backward index scan right there. (With two
        // bounds, PostgreSQL starts from the looser one and filters its way
        // down.)
        let (upper_at, upper_seq) = match before {
            Some((at, seq)) if at < q.end => (at, seq),
            _ => (q.end, i64::MIN),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM activities WHERE partner_id = $1 AND occur_at_us >= $2 \
             AND (occur_at_us, seq) < ($3, $4) \
             AND seq <= $5 AND ($6 = '' OR kind = $6) AND ($7 = '' OR customer_tenant_id = $7) \
             AND ($8 = '' OR user_id = $8) \
             ORDER BY occur_at_us DESC, seq DESC LIMIT $9"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(q.partner_id.to_string())
                .bind(q.start)
                .bind(upper_at)
                .bind(upper_seq)
                .bind(q.max_seq)
                .bind(&q.kind)
                .bind(&q.customer_tenant_id)
                .bind(&q.user_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| record_from_row!(r)).collect()
        })
    }

    /// Records of a partner's chain after `after_seq`, in sequence order.
    pub async fn chain(
        &self,
        partner_id: PartnerId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM activities WHERE partner_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| record_from_row!(r)).collect()
        })
    }

    /// A partner's checkpoints kept in the database.
    pub async fn checkpoints(&self, partner_id: PartnerId) -> StoreResult<Vec<Checkpoint>> {
        const SQL: &str =
            "SELECT seq, hash, mac FROM checkpoints WHERE partner_id = $1 ORDER BY seq";
        let rows: Vec<(i64, String, String)> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(partner_id.to_string()).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, mac)| Checkpoint {
                partner_id,
                seq,
                hash,
                mac,
            })
            .collect())
    }
}
