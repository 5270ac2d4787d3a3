//! Licensing storage: SQL over SQLite or PostgreSQL. Reads are scoped to a
//! partner; secrets arrive here already sealed. Ids and states are written
//! as text and read back typed.

use csp_kit::clock::Micros;
use csp_kit::ids::{PartnerId, SubscriptionId, TenantId};
use csp_store::db::{Db, DbTx, MigrationSource, Migrations, placeholders};
use csp_store::error::column;
use csp_store::outbox::{self, Message};
use csp_store::{StoreResult, on_db, on_tx};
use sqlx::Row as _;

use crate::domain::{
    ContentFile, Download, Entitlement, EntitlementStatus, Issued, LinkState, NewLink, Selection,
    StoredLink,
};

/// The licensing service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        LICENSING,
        outbox::sqlite_migration(2),
        outbox::due_index_migration(3),
        CONTENT_FILES,
    ],
    postgres: &[
        LICENSING,
        outbox::postgres_migration(2),
        outbox::due_index_migration(3),
        CONTENT_FILES,
        outbox::postgres_event_ids_not_unique_migration(5),
    ],
};

const CONTENT_FILES: MigrationSource = MigrationSource {
    version: 4,
    description: "content files",
    sql: include_str!("../migrations/0004_content_files.sql"),
};

const LICENSING: MigrationSource = MigrationSource {
    version: 1,
    description: "licensing",
    sql: include_str!("../migrations/0001_licensing.sql"),
};

const ENTITLEMENT_COLUMNS: &str = "subscription_id, partner_id, customer_tenant_id, order_id, product_id, \
                                   product_title, status, provisioned_at_us, revoked_at_us";

/// The link validity rule of [`crate::domain::link_status`] as SQL: not
/// revoked, not expired at `$now`, downloads left. Stated once, used by
/// every query that looks for a working link.
fn link_works(now: &str) -> String {
    link_works_in("", now)
}

/// [`link_works`] for the `download_links` row named `table` (an alias with
/// its dot, or empty).
fn link_works_in(table: &str, now: &str) -> String {
    format!(
        "{table}revoked_at_us IS NULL AND {table}expires_at_us > {now} AND {table}downloads < {table}max_downloads"
    )
}

/// Reads an entitlement row; evaluates to `StoreResult<Entitlement>`.
macro_rules! entitlement_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Entitlement> {
            let row = $row;
            Ok(Entitlement {
                subscription_id: column(row, "subscription_id")?,
                partner_id: column(row, "partner_id")?,
                customer_tenant_id: column(row, "customer_tenant_id")?,
                order_id: column(row, "order_id")?,
                product_id: row.try_get("product_id")?,
                product_title: row.try_get("product_title")?,
                status: column(row, "status")?,
                provisioned_at: row.try_get("provisioned_at_us")?,
                revoked_at: row.try_get("revoked_at_us")?,
            })
        })()
    };
}

/// Reads a counted download (the row `RETURNING` gave); evaluates to
/// `StoreResult<Download>`.
macro_rules! download_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Download> {
            let row = $row;
            Ok(Download {
                link_id: column(row, "id")?,
                count: row.try_get("downloads")?,
                max_downloads: row.try_get("max_downloads")?,
                partner_id: column(row, "partner_id")?,
                customer_tenant_id: column(row, "customer_tenant_id")?,
                subscription_id: column(row, "subscription_id")?,
                product_id: row.try_get("product_id")?,
                selection: Selection {
                    version: row.try_get("version")?,
                    language: row.try_get("language")?,
                    file_type: row.try_get("file_type")?,
                },
            })
        })()
    };
}

/// What one redemption of a group came to (committed).
#[derive(Debug)]
pub enum LinkCount {
    /// Counted and committed with its activity.
    Counted(Download),
    /// Not counted: the link's state says why.
    Refused(LinkState),
    /// No such link.
    Unknown,
    /// Not counted: its group's other links were counted in one statement,
    /// and the transaction that would have counted this one failed (nothing
    /// of it was written). Only its own caller sees the failure, so no one
    /// retries, and counts again, a download already counted.
    Failed(std::sync::Arc<csp_store::StoreError>),
}

/// Reads and writes the licensing tables.
#[derive(Clone, Debug)]
pub struct LicensingStore {
    db: Db,
    /// On PostgreSQL, the last download this process counted of each link
    /// (at most [`REMEMBERED_LINKS`]): what a link's next download records
    /// never changes but its count, so a group of remembered links is
    /// counted, and its activities written, in one statement (see
    /// [`LicensingStore::redeem_all`]). A count another replica moved on
    /// only sends that link the longer way.
    remembered: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Download>>>,
    /// Downloads counted in one statement so far.
    one_statement_downloads: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Links remembered for one-statement redemptions; past it the memory
/// starts again (a few hundred bytes a link).
const REMEMBERED_LINKS: usize = 10_000;

impl LicensingStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self {
            db,
            remembered: Default::default(),
            one_statement_downloads: Default::default(),
        }
    }

    /// How many downloads this store counted in one statement (see
    /// [`LicensingStore::redeem_all`]); always 0 on SQLite.
    pub fn one_statement_downloads(&self) -> u64 {
        self.one_statement_downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Download>> {
        // Nothing runs under the lock that can panic half-way; a poisoned
        // map is still consistent.
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, counted: impl IntoIterator<Item = (String, Download)>) {
        if !matches!(self.db, Db::Postgres(_)) {
            return;
        }
        let mut remembered = self.remembered();
        for (hash, download) in counted {
            if remembered.len() >= REMEMBERED_LINKS && !remembered.contains_key(&hash) {
                remembered.clear();
            }
            remembered.insert(hash, download);
        }
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
        let change = EventChange::Provision(entitlements.to_vec());
        let applied = self
            .apply_events(&[(event_id.to_owned(), change)], now)
            .await?;
        Ok(applied.first().copied().unwrap_or(false))
    }

    /// Applies a "subscription cancelled" event once: revokes the
    /// entitlement and its links (recording the revoked `tombstone` when it
    /// was never provisioned, so a late "order placed" cannot bring it
    /// back). Returns false when the event was applied before.
    pub async fn revoke_from_event(
        &self,
        event_id: &str,
        tombstone: &Entitlement,
        now: Micros,
    ) -> StoreResult<bool> {
        let change = EventChange::Revoke(tombstone.clone());
        let applied = self
            .apply_events(&[(event_id.to_owned(), change)], now)
            .await?;
        Ok(applied.first().copied().unwrap_or(false))
    }

    /// Applies ordering's events in order, each once. Consecutive orders
    /// placed share one transaction: one durable commit for a delivered
    /// batch, where a commit per event made licensing's share of a busy hour
    /// of orders mostly commits. A cancellation keeps a transaction of its
    /// own: it locks its subscription's links, which redemption groups lock
    /// too, and holding several subscriptions' links until a batch commits
    /// would make deadlocks with them likelier. For each event, whether it
    /// was applied now (false: before). On a failure the transactions
    /// committed before stay (the sender sends the batch again, and events
    /// applied are skipped).
    pub async fn apply_events(
        &self,
        events: &[(String, EventChange)],
        now: Micros,
    ) -> StoreResult<Vec<bool>> {
        let mut applied = Vec::with_capacity(events.len());
        let mut rest = events;
        while let Some((_, first)) = rest.first() {
            let together = match first {
                EventChange::Revoke(_) => 1,
                EventChange::Provision(_) => rest
                    .iter()
                    .take_while(|(_, change)| matches!(change, EventChange::Provision(_)))
                    .count(),
            };
            let (now_applied, later) = rest.split_at(together);
            applied.extend(self.apply_together(now_applied, now).await?);
            rest = later;
        }
        Ok(applied)
    }

    /// Applies `events` in one transaction (see [`Self::apply_events`]).
    async fn apply_together(
        &self,
        events: &[(String, EventChange)],
        now: Micros,
    ) -> StoreResult<Vec<bool>> {
        let mut applied = Vec::with_capacity(events.len());
        let mut tx = self.db.begin().await?;
        for (event_id, change) in events {
            if !first_time(&mut tx, event_id, now).await? {
                applied.push(false);
                continue;
            }
            match change {
                EventChange::Provision(entitlements) => {
                    for e in entitlements {
                        insert_entitlement(&mut tx, e).await?;
                    }
                }
                EventChange::Revoke(tombstone) => {
                    insert_entitlement(&mut tx, tombstone).await?;
                    revoke_in(
                        &mut tx,
                        tombstone.partner_id,
                        tombstone.subscription_id,
                        now,
                    )
                    .await?;
                }
            }
            applied.push(true);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Revokes a subscription's entitlement and links. Returns the links
    /// revoked now, or `None` when the partner has no such entitlement.
    pub async fn revoke(
        &self,
        partner_id: PartnerId,
        subscription_id: SubscriptionId,
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
        partner_id: PartnerId,
        customer: TenantId,
    ) -> StoreResult<Vec<Entitlement>> {
        let sql = format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE partner_id = $1 AND customer_tenant_id = $2 \
             ORDER BY product_title, subscription_id"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(customer.to_string())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| entitlement_from_row!(r)).collect()
        })
    }

    /// A partner's entitlement for a subscription.
    pub async fn entitlement(
        &self,
        partner_id: PartnerId,
        subscription_id: SubscriptionId,
    ) -> StoreResult<Option<Entitlement>> {
        let sql = format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE partner_id = $1 AND subscription_id = $2"
        );
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(subscription_id.to_string())
                .fetch_optional(pool)
                .await?;
            row.map(|r| entitlement_from_row!(&r)).transpose()
        })
    }

    /// In one transaction: checks the entitlement is still active (`None`
    /// when it is not), takes the subscription's key for the version
    /// (storing `fresh_key` when there is none), takes the current working
    /// link for the selection (storing `fresh_link` when there is none), and
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
        let subscription = e.subscription_id.to_string();
        // Touching the row serializes concurrent calls for one subscription
        // (a row lock on PostgreSQL; SQLite writers are serialized anyway).
        let lock = format!(
            "UPDATE entitlements SET status = status WHERE subscription_id = $1 AND status = '{}'",
            EntitlementStatus::Active.as_db()
        );
        let active = on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(lock.as_str()))
            .bind(&subscription)
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
                .bind(&subscription)
                .bind(&selection.version)
                .bind(fresh_key)
                .bind(now)
                .execute(&mut **t)
                .await?;
            sqlx::query_scalar(KEY).bind(&subscription).bind(&selection.version).fetch_one(&mut **t).await
        })?;

        let current = format!(
            "SELECT id, sealed_token, expires_at_us, downloads, max_downloads FROM download_links \
             WHERE subscription_id = $1 AND version = $2 AND language = $3 AND file_type = $4 \
             AND {} ORDER BY issued_at_us DESC, id LIMIT 1",
            link_works("$5")
        );
        let current: Option<StoredLink> = on_tx!(&mut tx, t => {
            let row = sqlx::query(sqlx::AssertSqlSafe(current.as_str()))
                .bind(&subscription)
                .bind(&selection.version)
                .bind(&selection.language)
                .bind(&selection.file_type)
                .bind(now)
                .fetch_optional(&mut **t)
                .await?;
            row.map(|row| -> StoreResult<StoredLink> {
                Ok(StoredLink {
                    id: column(&row, "id")?,
                    sealed_token: row.try_get("sealed_token")?,
                    expires_at: row.try_get("expires_at_us")?,
                    downloads: row.try_get("downloads")?,
                    max_downloads: row.try_get("max_downloads")?,
                })
            })
            .transpose()
        })?;
        let (link, link_is_new) = match current {
            Some(link) => (link, false),
            None => {
                insert_link(&mut tx, e, selection, fresh_link, now).await?;
                let l = fresh_link;
                let link = StoredLink {
                    id: l.id,
                    sealed_token: l.sealed_token.clone(),
                    expires_at: l.expires_at,
                    downloads: 0,
                    max_downloads: l.max_downloads,
                };
                (link, true)
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

    /// How many redemption groups may commit at once: one on SQLite (one
    /// writer per file), three on PostgreSQL (each on its own connection; a
    /// link always falls in the same lane). While one group commits the
    /// others gather; every lane more splits the same calls into smaller
    /// groups. Measured with 32 callers (`cargo bench -p csp-tests --bench
    /// performance`, 2 vCPU): 2 lanes 5,090-5,130 redirects/s, 3 lanes
    /// 5,360-5,630, 4 lanes 5,010-5,210; 8 lanes made groups of about two
    /// (4 statements and a commit for every two downloads).
    pub fn redemption_lanes(&self) -> u8 {
        match self.db {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => 3,
        }
    }

    /// Redeems many links with few durable commits: each `(token_hash, now)`
    /// counted once if its link still works, the messages `messages` gives
    /// for each counted download (with its index in `requests`) written to
    /// the outbox in the same commit. Every link is judged at the latest
    /// `now` of the group. The outcomes are in `requests`' order.
    ///
    /// The general way is one transaction: the links are counted set by set
    /// (one UPDATE for every distinct link, again for links named twice), the
    /// hashes sorted, so PostgreSQL's index scan locks a set's rows in index
    /// order (a deadlock with a revocation aborts the group, which writes
    /// nothing, and its caller runs it once more).
    ///
    /// On PostgreSQL a group of distinct links this store counted before is
    /// first tried in one statement instead of four round trips (BEGIN,
    /// UPDATE, INSERT, COMMIT): each link is counted only if its count is
    /// still the one remembered, with the activities made for that next
    /// count. Links it did not count (a count moved on elsewhere, a link that
    /// no longer works) are forgotten and then take the transaction. If that
    /// transaction fails, its links answer [`LinkCount::Failed`] while the
    /// downloads already counted keep their answers. So an `Err` always
    /// means nothing was written.
    pub async fn redeem_all(
        &self,
        requests: &[(String, Micros)],
        messages: impl Fn(&Download, usize) -> Vec<Message>,
    ) -> StoreResult<Vec<LinkCount>> {
        let now = requests.iter().map(|(_, now)| *now).max().unwrap_or(0);
        let Some(mut outcomes) = self.redeem_remembered(requests, now, &messages).await? else {
            return self.redeem_in_rounds(requests, now, &messages).await;
        };
        let rest: Vec<usize> = (0..requests.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if !rest.is_empty() {
            let subset: Vec<(String, Micros)> = rest.iter().map(|&i| requests[i].clone()).collect();
            match self
                .redeem_in_rounds(&subset, now, |download, j| messages(download, rest[j]))
                .await
            {
                Ok(counted) => {
                    for (&i, outcome) in rest.iter().zip(counted) {
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, links = rest.len(), "redemptions after a one-statement count failed; only their callers are answered with it");
                    let error = std::sync::Arc::new(error);
                    for &i in &rest {
                        outcomes[i] = Some(LinkCount::Failed(error.clone()));
                    }
                }
            }
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// The one-statement redemption of [`LicensingStore::redeem_all`]: `None`
    /// when the group is not all distinct remembered links (or not on
    /// PostgreSQL), otherwise the outcome of each request it counted.
    async fn redeem_remembered(
        &self,
        requests: &[(String, Micros)],
        now: Micros,
        messages: &impl Fn(&Download, usize) -> Vec<Message>,
    ) -> StoreResult<Option<Vec<Option<LinkCount>>>> {
        use csp_kit::clock::Clock as _;
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        // Each link's next download, and the count it is counted at.
        let mut links: Vec<(&str, i32)> = Vec::with_capacity(requests.len());
        let next: Vec<Download> = {
            let remembered = self.remembered();
            let mut next = Vec::with_capacity(requests.len());
            for (hash, _) in requests {
                match remembered.get(hash) {
                    Some(last) if !links.iter().any(|(seen, _)| seen == hash) => {
                        links.push((hash, last.count));
                        next.push(Download {
                            count: last.count.saturating_add(1),
                            ..last.clone()
                        });
                    }
                    _ => return Ok(None),
                }
            }
            next
        };
        // Sorted by hash, as the transaction's are, so an index scan locks
        // the rows in index order (a deadlock aborts the statement, which
        // then wrote nothing).
        links.sort_unstable();
        let (hashes, expected): (Vec<&str>, Vec<i32>) = links.into_iter().unzip();
        let (mut of, mut destinations, mut event_ids, mut streams, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, ((hash, _), download)) in requests.iter().zip(&next).enumerate() {
            for message in messages(download, i) {
                of.push(hash.as_str());
                destinations.push(message.destination);
                event_ids.push(message.event_id);
                streams.push(message.stream);
                payloads.push(message.payload);
            }
        }
        // The UPDATE counts a link only at its remembered count; the INSERT
        // writes the messages of the links it counted (in request order, so
        // in seq order), in the same statement, so in the same commit.
        static REDEEM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH expected AS (SELECT * FROM unnest($3::text[], $4::int4[]) AS e(token_hash, downloads)), \
                 counted AS (UPDATE download_links l SET downloads = l.downloads + 1 FROM expected e \
                     WHERE l.token_hash = ANY($3) AND l.token_hash = e.token_hash AND l.downloads = e.downloads AND {} \
                     RETURNING l.token_hash), \
                 sent AS ({} \
                     SELECT m.destination, m.event_id, m.stream, m.payload, $2, $2 \
                     FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[]) WITH ORDINALITY \
                         AS m(token_hash, destination, event_id, stream, payload, n) \
                     JOIN counted c ON c.token_hash = m.token_hash ORDER BY m.n) \
                 SELECT token_hash FROM counted",
                link_works_in("l.", "$1"),
                outbox::INSERT,
            )
        });
        let counted: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(REDEEM.as_str()))
            .bind(now)
            .bind(csp_kit::clock::SystemClock.now())
            .bind(&hashes)
            .bind(&expected)
            .bind(&of)
            .bind(&destinations)
            .bind(&event_ids)
            .bind(&streams)
            .bind(&payloads)
            .fetch_all(pool)
            .await?;
        let counted: std::collections::HashSet<String> =
            counted.into_iter().map(|(hash,)| hash).collect();
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut newly = Vec::new();
        {
            // A link not counted is forgotten (the transaction remembers it
            // again if it counts it), so a link that stopped working does
            // not send every later group through both ways.
            let mut remembered = self.remembered();
            for ((hash, _), download) in requests.iter().zip(next) {
                if counted.contains(hash) {
                    newly.push((hash.clone(), download.clone()));
                    outcomes.push(Some(LinkCount::Counted(download)));
                } else {
                    remembered.remove(hash);
                    outcomes.push(None);
                }
            }
        }
        self.remember(newly);
        self.one_statement_downloads.fetch_add(
            outcomes.iter().flatten().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Some(outcomes))
    }

    /// The transaction of [`LicensingStore::redeem_all`], judging every link
    /// at `now`.
    async fn redeem_in_rounds(
        &self,
        requests: &[(String, Micros)],
        now: Micros,
        messages: impl Fn(&Download, usize) -> Vec<Message>,
    ) -> StoreResult<Vec<LinkCount>> {
        let mut outcomes: Vec<Option<LinkCount>> = (0..requests.len()).map(|_| None).collect();
        let mut undecided: Vec<usize> = (0..requests.len()).collect();
        let mut outbox_messages = Vec::new();
        let mut tx = self.db.begin().await?;
        while !undecided.is_empty() {
            // This round: the first request of each link still undecided.
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = undecided
                .iter()
                .partition(|&&i| seen.insert(requests[i].0.as_str()));
            let mut hashes: Vec<&str> = round.iter().map(|&i| requests[i].0.as_str()).collect();
            hashes.sort_unstable();
            let mut counted = count_downloads(&mut tx, &hashes, now).await?;
            let mut not_counted = Vec::new();
            for &i in &round {
                match counted.remove(requests[i].0.as_str()) {
                    Some(download) => {
                        outbox_messages.extend(messages(&download, i));
                        outcomes[i] = Some(LinkCount::Counted(download));
                    }
                    None => not_counted.push(i),
                }
            }
            // A link not counted now is not counted for its later requests
            // either: they get its state with it.
            let refused: std::collections::HashSet<&str> = not_counted
                .iter()
                .map(|&i| requests[i].0.as_str())
                .collect();
            let (also_refused, next): (Vec<usize>, Vec<usize>) = later
                .into_iter()
                .partition(|&i| refused.contains(requests[i].0.as_str()));
            if !refused.is_empty() {
                let states =
                    read_link_states(&mut tx, &refused.iter().copied().collect::<Vec<_>>()).await?;
                for i in not_counted.into_iter().chain(also_refused) {
                    outcomes[i] = Some(match states.get(requests[i].0.as_str()) {
                        Some(state) => LinkCount::Refused(*state),
                        None => LinkCount::Unknown,
                    });
                }
            }
            undecided = next;
        }
        outbox::enqueue_all(&mut tx, &outbox_messages).await?;
        tx.commit().await?;
        self.remember(outcomes.iter().zip(requests).filter_map(
            |(outcome, (hash, _))| match outcome {
                Some(LinkCount::Counted(download)) => Some((hash.clone(), download.clone())),
                _ => None,
            },
        ));
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// The state of the link with `token_hash`, counting nothing; `None`
    /// when no link has it.
    pub async fn link_state(&self, token_hash: &str) -> StoreResult<Option<LinkState>> {
        let state: Option<LinkStateRow> = on_db!(&self.db, pool => sqlx::query_as(LINK_STATE)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)?;
        Ok(state.map(link_state_from_row))
    }
}

/// The software files stored.
impl LicensingStore {
    /// The file stored for `product_id` and `selection`, when there is one.
    pub async fn content_file(
        &self,
        product_id: &str,
        selection: &Selection,
    ) -> StoreResult<Option<ContentFile>> {
        const SQL: &str = "SELECT product_id, version, language, file_type, object_key, size_bytes, sha256, stored_at_us \
                           FROM content_files WHERE product_id = $1 AND version = $2 AND language = $3 AND file_type = $4";
        let row: Option<ContentRow> = on_db!(&self.db, pool => sqlx::query_as(SQL)
            .bind(product_id)
            .bind(&selection.version)
            .bind(&selection.language)
            .bind(&selection.file_type)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(content_from_row))
    }

    /// Every stored file, by product, version, language and file type.
    pub async fn content_files(&self) -> StoreResult<Vec<ContentFile>> {
        const SQL: &str = "SELECT product_id, version, language, file_type, object_key, size_bytes, sha256, stored_at_us \
                           FROM content_files ORDER BY product_id, version, language, file_type";
        let rows: Vec<ContentRow> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(content_from_row).collect())
    }

    /// Records `file` (replacing the record of the same selection).
    pub async fn record_content_file(&self, file: &ContentFile) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO content_files (product_id, version, language, file_type, object_key, size_bytes, sha256, stored_at_us) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                           ON CONFLICT (product_id, version, language, file_type) DO UPDATE SET \
                           object_key = excluded.object_key, size_bytes = excluded.size_bytes, \
                           sha256 = excluded.sha256, stored_at_us = excluded.stored_at_us";
        on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(&file.product_id)
            .bind(&file.selection.version)
            .bind(&file.selection.language)
            .bind(&file.selection.file_type)
            .bind(&file.object_key)
            .bind(file.size_bytes)
            .bind(&file.sha256)
            .bind(file.stored_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Forgets the file of `product_id` and `selection`; whether there was
    /// one.
    pub async fn forget_content_file(
        &self,
        product_id: &str,
        selection: &Selection,
    ) -> StoreResult<bool> {
        const SQL: &str = "DELETE FROM content_files WHERE product_id = $1 AND version = $2 AND language = $3 AND file_type = $4";
        let done = on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(product_id)
            .bind(&selection.version)
            .bind(&selection.language)
            .bind(&selection.file_type)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }
}

/// What one ordering event changes in licensing.
#[derive(Clone, Debug)]
pub enum EventChange {
    /// An order was placed: its entitlements (an existing one, even
    /// revoked, is left as it is).
    Provision(Vec<Entitlement>),
    /// A subscription was cancelled: its entitlement and links are revoked
    /// (the tombstone is recorded when it was never provisioned, so a late
    /// "order placed" cannot bring it back).
    Revoke(Entitlement),
}

type ContentRow = (String, String, String, String, String, i64, String, i64);

fn content_from_row(
    (product_id, version, language, file_type, object_key, size_bytes, sha256, stored_at): ContentRow,
) -> ContentFile {
    ContentFile {
        product_id,
        selection: Selection {
            version,
            language,
            file_type,
        },
        object_key,
        size_bytes,
        sha256,
        stored_at,
    }
}

const LINK_STATE: &str = "SELECT expires_at_us, downloads, max_downloads, revoked_at_us FROM download_links \
                          WHERE token_hash = $1";

type LinkStateRow = (i64, i32, i32, Option<i64>);

fn link_state_from_row((expires_at, downloads, max_downloads, revoked): LinkStateRow) -> LinkState {
    LinkState {
        expires_at,
        downloads,
        max_downloads,
        revoked: revoked.is_some(),
    }
}

/// The states of the links with `hashes`, inside `tx`, by token hash.
async fn read_link_states(
    tx: &mut DbTx,
    hashes: &[&str],
) -> StoreResult<std::collections::HashMap<String, LinkState>> {
    let sql = format!(
        "SELECT token_hash, expires_at_us, downloads, max_downloads, revoked_at_us FROM download_links \
         WHERE token_hash IN {}",
        placeholders(1, hashes.len())
    );
    let rows: Vec<(String, i64, i32, i32, Option<i64>)> = on_tx!(tx, t => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
        for hash in hashes {
            query = query.bind(*hash);
        }
        query.fetch_all(&mut **t).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(hash, expires_at, downloads, max_downloads, revoked)| {
            (
                hash,
                link_state_from_row((expires_at, downloads, max_downloads, revoked)),
            )
        })
        .collect())
}

/// Counts one download of each link in `hashes` (distinct, sorted) that
/// still works at `now`, inside `tx`: the downloads counted, by token hash.
async fn count_downloads(
    tx: &mut DbTx,
    hashes: &[&str],
    now: Micros,
) -> StoreResult<std::collections::HashMap<String, Download>> {
    const RETURNING: &str = "RETURNING token_hash, id, downloads, max_downloads, partner_id, customer_tenant_id, \
         subscription_id, product_id, version, language, file_type";
    // The rows of either backend, by token hash.
    macro_rules! by_hash {
        ($rows:expr) => {
            $rows
                .iter()
                .map(|r| {
                    let hash: String = r.try_get("token_hash")?;
                    Ok((hash, download_from_row!(r)?))
                })
                .collect::<StoreResult<_>>()
        };
    }
    match tx {
        // One statement text whatever the group's size (the hashes as an
        // array), so PostgreSQL plans it once per connection.
        DbTx::Postgres(t) => {
            static COUNT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                format!(
                    "UPDATE download_links SET downloads = downloads + 1 WHERE token_hash = ANY($2) AND {} {RETURNING}",
                    link_works("$1")
                )
            });
            let rows = sqlx::query(sqlx::AssertSqlSafe(COUNT.as_str()))
                .bind(now)
                .bind(hashes)
                .fetch_all(&mut **t)
                .await?;
            by_hash!(rows)
        }
        DbTx::Sqlite(t, _) => {
            let count = format!(
                "UPDATE download_links SET downloads = downloads + 1 WHERE token_hash IN {} AND {} {RETURNING}",
                placeholders(2, hashes.len()),
                link_works("$1")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(count.as_str())).bind(now);
            for hash in hashes {
                query = query.bind(*hash);
            }
            let rows = query.fetch_all(&mut **t).await?;
            by_hash!(rows)
        }
    }
}

/// Inserts an entitlement unless one exists for its subscription.
async fn insert_entitlement(tx: &mut DbTx, e: &Entitlement) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO entitlements ({ENTITLEMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (subscription_id) DO NOTHING"
    );
    on_tx!(tx, t => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(e.subscription_id.to_string())
        .bind(e.partner_id.to_string())
        .bind(e.customer_tenant_id.to_string())
        .bind(e.order_id.to_string())
        .bind(&e.product_id)
        .bind(&e.product_title)
        .bind(e.status.as_db())
        .bind(e.provisioned_at)
        .bind(e.revoked_at)
        .execute(&mut **t)
        .await
        .map(drop))?;
    Ok(())
}

/// Stores a new link for `e`'s selection.
async fn insert_link(
    tx: &mut DbTx,
    e: &Entitlement,
    selection: &Selection,
    l: &NewLink,
    now: Micros,
) -> StoreResult<()> {
    const INSERT_LINK: &str = "INSERT INTO download_links (id, token_hash, sealed_token, partner_id, \
        customer_tenant_id, subscription_id, product_id, version, language, file_type, issued_by_user_id, \
        issued_at_us, expires_at_us, downloads, max_downloads, revoked_at_us) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, NULL)";
    on_tx!(tx, t => sqlx::query(INSERT_LINK)
        .bind(l.id.to_string())
        .bind(&l.token_hash)
        .bind(&l.sealed_token)
        .bind(e.partner_id.to_string())
        .bind(e.customer_tenant_id.to_string())
        .bind(e.subscription_id.to_string())
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
    Ok(())
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
    partner_id: PartnerId,
    subscription_id: SubscriptionId,
    now: Micros,
) -> StoreResult<Option<u64>> {
    let entitlement = format!(
        "UPDATE entitlements SET status = '{}', revoked_at_us = COALESCE(revoked_at_us, $3) \
         WHERE partner_id = $1 AND subscription_id = $2",
        EntitlementStatus::Revoked.as_db()
    );
    const LINKS: &str = "UPDATE download_links SET revoked_at_us = $2 \
                         WHERE subscription_id = $1 AND revoked_at_us IS NULL";
    let found = on_tx!(tx, t => sqlx::query(sqlx::AssertSqlSafe(entitlement.as_str()))
        .bind(partner_id.to_string())
        .bind(subscription_id.to_string())
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected()))?;
    if found == 0 {
        return Ok(None);
    }
    let links = on_tx!(tx, t => sqlx::query(LINKS)
        .bind(subscription_id.to_string())
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(Some(links))
}
