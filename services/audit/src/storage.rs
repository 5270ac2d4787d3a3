//! Audit storage: appending records and their tree hashes to each
//! partner's log (one writer at a time per partner, on any number of
//! replicas), signed checkpoints, reading by time range, and the stored
//! hashes proofs and verification read.

use csp_kit::clock::Micros;
use csp_kit::ids::PartnerId;
use csp_store::db::{Db, MigrationSource, Migrations};
use csp_store::error::{StoreError, column};
use csp_store::{StoreResult, on_db, on_tx};
use sqlx::Row as _;

use tlog_tiles::Hash;

use crate::domain::Record;
use crate::log::{self, Fetched};

/// The audit service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[AUDIT, MERKLE_LOG],
    postgres: &[AUDIT, MERKLE_LOG],
};

const AUDIT: MigrationSource = MigrationSource {
    version: 1,
    description: "audit",
    sql: include_str!("../migrations/0001_audit.sql"),
};

const MERKLE_LOG: MigrationSource = MigrationSource {
    version: 2,
    description: "merkle log",
    sql: include_str!("../migrations/0002_merkle_log.sql"),
};

const COLUMNS: &str = "partner_id, seq, id, kind, occur_at_us, recorded_at_us, user_id, user_display_name, \
                       customer_tenant_id, subscription_id, product_id, details";

/// `head ($first, ..., $n)`: an IN list of `count` placeholders from `$first`.
fn in_list(head: &str, first: usize, count: usize) -> String {
    format!("{head} {}", csp_store::db::placeholders(first, count))
}

/// The query reading `count` stored hashes of a partner by index.
fn hashes_sql(count: usize) -> String {
    in_list(
        "SELECT idx, hash FROM tree_hashes WHERE partner_id = $1 AND idx IN",
        2,
        count,
    )
}

/// Runs [`hashes_sql`] for `indexes` on an executor; evaluates to
/// `Result<Vec<(i64, String)>, sqlx::Error>`.
macro_rules! read_hashes {
    ($executor:expr, $partner:expr, $indexes:expr) => {{
        let sql = hashes_sql($indexes.len());
        let mut query =
            sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql.as_str())).bind($partner);
        for idx in $indexes {
            query = query.bind(*idx as i64);
        }
        query.fetch_all($executor).await
    }};
}

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

    /// Appends `records` to `partner_id`'s log in one transaction: each new
    /// record gets the next sequence number (its leaf index plus one) and
    /// its leaf, and the tree's new stored hashes are written with it; ids
    /// already recorded (before or earlier in the batch) are skipped.
    /// Returns how many were new.
    pub async fn append(&self, partner_id: PartnerId, records: Vec<Record>) -> StoreResult<u32> {
        Ok(self.append_ids(partner_id, records).await?.len() as u32)
    }

    /// [`Self::append`], returning the ids of the records that were new.
    pub async fn append_ids(
        &self,
        partner_id: PartnerId,
        records: Vec<Record>,
    ) -> StoreResult<Vec<String>> {
        let partner = partner_id.to_string();
        let mut tx = self.db.begin().await?;
        let size = lock_head(&mut tx, &partner).await?;
        // Ids recorded before: one query per 500.
        let mut seen = std::collections::HashSet::new();
        for chunk in records.chunks(500) {
            let sql = in_list("SELECT id FROM activities WHERE id IN", 1, chunk.len());
            let found: Vec<String> = on_tx!(&mut tx, t => {
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()));
                for r in chunk {
                    query = query.bind(&r.id);
                }
                query.fetch_all(&mut **t).await
            })?;
            seen.extend(found);
        }
        let mut fresh: Vec<Record> = Vec::with_capacity(records.len());
        for record in records {
            // `insert` also drops a repeat within the batch.
            if seen.insert(record.id.clone()) {
                fresh.push(record);
            }
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        for (k, record) in fresh.iter_mut().enumerate() {
            record.partner_id = partner_id;
            record.seq = size as i64 + k as i64 + 1;
        }
        let leaves: Vec<Hash> = fresh.iter().map(log::leaf_hash).collect();
        add_leaves(&mut tx, &partner, size, &leaves).await?;
        // Many rows per statement (12 values each, well under both
        // databases' limits on bound values).
        for chunk in fresh.chunks(200) {
            let sql = csp_store::db::value_rows(
                &format!("INSERT INTO activities ({COLUMNS}) VALUES"),
                12,
                chunk.len(),
            );
            on_tx!(&mut tx, t => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for r in chunk {
                    query = query
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
                        .bind(&r.details);
                }
                query.execute(&mut **t).await.map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(fresh.into_iter().map(|r| r.id).collect())
    }

    /// Builds the leaves of records stored without them (logged before the
    /// tree existed), in order, `chunk` records per transaction; returns
    /// how many were added. Safe to run on several replicas at once.
    pub async fn build_missing_leaves(&self, chunk: u32) -> StoreResult<u64> {
        const BEHIND: &str = "SELECT a.partner_id FROM activities a LEFT JOIN log_heads h \
                              ON h.partner_id = a.partner_id GROUP BY a.partner_id \
                              HAVING MAX(a.seq) > COALESCE(MAX(h.size), 0)";
        let partners: Vec<String> =
            on_db!(&self.db, pool => sqlx::query_scalar(BEHIND).fetch_all(pool).await)?;
        let mut added = 0u64;
        for partner in partners {
            match self.build_leaves_of(&partner, chunk).await {
                Ok(n) => added += n,
                // One partner's damaged log does not keep the others (or
                // the service) from working; verification names it.
                Err(error) => {
                    tracing::error!(partner_id = %partner, error = %anyhow::Error::new(error), "cannot build this activity log's tree from its stored records");
                }
            }
        }
        Ok(added)
    }

    /// Builds one partner's missing leaves (see [`Self::build_missing_leaves`]).
    async fn build_leaves_of(&self, partner: &str, chunk: u32) -> StoreResult<u64> {
        let mut added = 0u64;
        loop {
            let mut tx = self.db.begin().await?;
            let size = lock_head(&mut tx, partner).await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM activities WHERE partner_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            );
            let records: Vec<Record> = on_tx!(&mut tx, t => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(partner)
                    .bind(size as i64)
                    .bind(i64::from(chunk))
                    .fetch_all(&mut **t)
                    .await?;
                rows.iter().map(|r| record_from_row!(r)).collect::<StoreResult<Vec<Record>>>()
            })?;
            if records.is_empty() {
                break;
            }
            // Leaves follow the stored order; a gap would shift every
            // later leaf, so the records must number on from the tree.
            for (k, r) in records.iter().enumerate() {
                if r.seq != size as i64 + k as i64 + 1 {
                    return Err(StoreError::corrupt("activities.seq", r.seq.to_string()));
                }
            }
            let leaves: Vec<Hash> = records.iter().map(log::leaf_hash).collect();
            add_leaves(&mut tx, partner, size, &leaves).await?;
            tx.commit().await?;
            added += records.len() as u64;
            tracing::info!(partner_id = %partner, leaves = size + records.len() as u64, "building the activity log's tree from stored records");
        }
        Ok(added)
    }

    /// Partners whose tree grew since their newest signed checkpoint, with
    /// their size now.
    pub async fn unsigned_heads(&self) -> StoreResult<Vec<(PartnerId, u64)>> {
        const SQL: &str = "SELECT partner_id, size FROM log_heads WHERE size > signed_size";
        let rows: Vec<(String, i64)> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        rows.into_iter()
            .map(|(partner, size)| {
                let partner = partner
                    .parse()
                    .map_err(|_| StoreError::corrupt("log_heads.partner_id", partner))?;
                Ok((partner, size as u64))
            })
            .collect()
    }

    /// A partner's tree size (0 when it has no record).
    pub async fn tree_size(&self, partner_id: PartnerId) -> StoreResult<u64> {
        const SQL: &str = "SELECT COALESCE(MAX(size), 0) FROM log_heads WHERE partner_id = $1";
        let size: i64 = on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(partner_id.to_string()).fetch_one(pool).await)?;
        Ok(size as u64)
    }

    /// The stored hashes at `indexes` of a partner's tree (those missing are
    /// left out; the tree math then says what is missing).
    pub async fn hashes(&self, partner_id: PartnerId, indexes: &[u64]) -> StoreResult<Fetched> {
        let partner = partner_id.to_string();
        let mut fetched = Fetched::default();
        for chunk in indexes.chunks(500) {
            let rows = on_db!(&self.db, pool => read_hashes!(pool, &partner, chunk))?;
            for (idx, hex) in rows {
                let hash = log::from_hex(&hex)
                    .ok_or_else(|| StoreError::corrupt("tree_hashes.hash", hex.clone()))?;
                fetched.0.insert(idx as u64, hash);
            }
        }
        Ok(fetched)
    }

    /// A partner's stored hashes with index in `from..to` (what appending
    /// the leaves of such a range wrote: contiguous in tlog's order).
    pub async fn hashes_between(
        &self,
        partner_id: PartnerId,
        from: u64,
        to: u64,
    ) -> StoreResult<Fetched> {
        const SQL: &str =
            "SELECT idx, hash FROM tree_hashes WHERE partner_id = $1 AND idx >= $2 AND idx < $3";
        let rows: Vec<(i64, String)> = on_db!(&self.db, pool => sqlx::query_as(SQL)
            .bind(partner_id.to_string())
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(pool)
            .await)?;
        let mut fetched = Fetched::default();
        for (idx, hex) in rows {
            let hash = log::from_hex(&hex)
                .ok_or_else(|| StoreError::corrupt("tree_hashes.hash", hex.clone()))?;
            fetched.0.insert(idx as u64, hash);
        }
        Ok(fetched)
    }

    /// Stores a signed checkpoint and marks the partner's head signed up to
    /// its size (a checkpoint of that size stored before is kept).
    pub async fn save_checkpoint(
        &self,
        partner_id: PartnerId,
        size: u64,
        root: &Hash,
        note: &str,
        now: Micros,
    ) -> StoreResult<()> {
        self.save_checkpoints(&[(partner_id, size, *root, note.to_owned())], now)
            .await
    }

    /// Stores signed checkpoints (partner, size, root, note) in one
    /// transaction, as [`Self::save_checkpoint`] does each.
    pub async fn save_checkpoints(
        &self,
        checkpoints: &[(PartnerId, u64, Hash, String)],
        now: Micros,
    ) -> StoreResult<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        const INSERT: &str = "INSERT INTO log_checkpoints (partner_id, size, root, note, created_at_us) \
                              VALUES ($1, $2, $3, $4, $5) ON CONFLICT (partner_id, size) DO NOTHING";
        const SIGNED: &str =
            "UPDATE log_heads SET signed_size = $2 WHERE partner_id = $1 AND signed_size < $2";
        for (partner_id, size, root, note) in checkpoints {
            let partner = partner_id.to_string();
            on_tx!(&mut tx, t => {
                sqlx::query(INSERT)
                    .bind(&partner)
                    .bind(*size as i64)
                    .bind(log::to_hex(root))
                    .bind(note)
                    .bind(now)
                    .execute(&mut **t)
                    .await?;
                sqlx::query(SIGNED).bind(&partner).bind(*size as i64).execute(&mut **t).await.map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A partner's signed checkpoints in the database: (size, note), by size.
    pub async fn checkpoints(&self, partner_id: PartnerId) -> StoreResult<Vec<(u64, String)>> {
        const SQL: &str =
            "SELECT size, note FROM log_checkpoints WHERE partner_id = $1 ORDER BY size";
        let rows: Vec<(i64, String)> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(partner_id.to_string()).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(size, note)| (size as u64, note))
            .collect())
    }

    /// A partner's newest signed checkpoint: (size, note).
    pub async fn latest_checkpoint(
        &self,
        partner_id: PartnerId,
    ) -> StoreResult<Option<(u64, String)>> {
        const SQL: &str = "SELECT size, note FROM log_checkpoints WHERE partner_id = $1 \
                           ORDER BY size DESC LIMIT 1";
        let row: Option<(i64, String)> = on_db!(&self.db, pool => sqlx::query_as(SQL).bind(partner_id.to_string()).fetch_optional(pool).await)?;
        Ok(row.map(|(size, note)| (size as u64, note)))
    }

    /// The signed checkpoint of one size: its note.
    pub async fn checkpoint_at(
        &self,
        partner_id: PartnerId,
        size: u64,
    ) -> StoreResult<Option<String>> {
        const SQL: &str = "SELECT note FROM log_checkpoints WHERE partner_id = $1 AND size = $2";
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(partner_id.to_string()).bind(size as i64).fetch_optional(pool).await)?,
        )
    }

    /// How many of a partner's records up to `max_seq` lie outside
    /// [start, end).
    pub async fn count_outside(
        &self,
        partner_id: PartnerId,
        start: Micros,
        end: Micros,
        max_seq: i64,
    ) -> StoreResult<i64> {
        const SQL: &str = "SELECT COUNT(*) FROM activities WHERE partner_id = $1 AND seq <= $2 \
                           AND (occur_at_us < $3 OR occur_at_us >= $4)";
        Ok(on_db!(&self.db, pool => sqlx::query_scalar(SQL)
            .bind(partner_id.to_string())
            .bind(max_seq)
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await)?)
    }

    /// The record of a partner with id `id`.
    pub async fn record_by_id(
        &self,
        partner_id: PartnerId,
        id: &str,
    ) -> StoreResult<Option<Record>> {
        let sql = format!("SELECT {COLUMNS} FROM activities WHERE partner_id = $1 AND id = $2");
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| record_from_row!(&r)).transpose()
        })
    }

    /// The record of a partner at sequence number `seq`.
    pub async fn record_at(&self, partner_id: PartnerId, seq: i64) -> StoreResult<Option<Record>> {
        Ok(self
            .chain(partner_id, seq - 1, 1)
            .await?
            .into_iter()
            .find(|r| r.seq == seq))
    }

    /// The newest sequence number of a partner's log (0 when empty).
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

    /// Records of a partner's log after `after_seq`, in sequence order.
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
}

/// Creates a partner's head row when missing, locks it until the
/// transaction ends (appends never interleave) and reads the tree size, in
/// one statement (an upsert that touches the row takes its lock).
async fn lock_head(tx: &mut csp_store::db::DbTx, partner: &str) -> StoreResult<u64> {
    const HEAD: &str = "INSERT INTO log_heads (partner_id, size, signed_size) VALUES ($1, 0, 0) \
                        ON CONFLICT (partner_id) DO UPDATE SET size = log_heads.size RETURNING size";
    let size: i64 =
        on_tx!(tx, t => sqlx::query_scalar(HEAD).bind(partner).fetch_one(&mut **t).await)?;
    Ok(size as u64)
}

/// Appends `leaves` to a partner's tree of `size` leaves inside `tx`: reads
/// the stored hashes appending needs, writes the new ones and the new size.
async fn add_leaves(
    tx: &mut csp_store::db::DbTx,
    partner: &str,
    size: u64,
    leaves: &[Hash],
) -> StoreResult<()> {
    let reads = log::append_reads(size, leaves.len() as u64);
    let mut known = Fetched::default();
    for chunk in reads.chunks(500) {
        let rows = on_tx!(tx, t => read_hashes!(&mut **t, partner, chunk))?;
        for (idx, hex) in rows {
            let hash = log::from_hex(&hex)
                .ok_or_else(|| StoreError::corrupt("tree_hashes.hash", hex.clone()))?;
            known.0.insert(idx as u64, hash);
        }
    }
    let stored = log::append(size, leaves, &known).map_err(|_| {
        StoreError::corrupt("tree_hashes", format!("hashes missing below leaf {size}"))
    })?;
    for chunk in stored.chunks(500) {
        let sql = csp_store::db::value_rows(
            "INSERT INTO tree_hashes (partner_id, idx, hash) VALUES",
            3,
            chunk.len(),
        );
        on_tx!(tx, t => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for (idx, hash) in chunk {
                query = query.bind(partner).bind(*idx as i64).bind(log::to_hex(hash));
            }
            query.execute(&mut **t).await.map(drop)
        })?;
    }
    const SIZE: &str = "UPDATE log_heads SET size = $2 WHERE partner_id = $1";
    on_tx!(tx, t => sqlx::query(SIZE).bind(partner).bind((size + leaves.len() as u64) as i64).execute(&mut **t).await.map(drop))?;
    Ok(())
}
