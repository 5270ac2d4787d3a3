//! The transactional outbox and its relay.
//!
//! A service writes a message for each destination in the same transaction
//! as the change it announces ([`enqueue`]), so a committed change always has
//! its messages and a rolled-back one never does. The [`Relay`] delivers them
//! at least once, oldest first, and never delivers a message of a stream
//! (for example one order and its subscriptions) before the earlier messages
//! of that stream: only the oldest pending message of each stream is
//! eligible, except for destinations that take each message on its own
//! (the activity log), which get each stream's pending messages in order in
//! one batch. Failures are retried with exponential backoff; the messages
//! wait in the table across restarts. A message the destination rejects as
//! permanently invalid moves to `outbox_dead_letters` with the reason, is
//! logged, holds back only its own stream, and can be replayed.
//!
//! With several replicas on PostgreSQL, a relay pass for a destination runs
//! under a session advisory lock, so no two replicas deliver the same
//! destination at once and none skips a message.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;

use csp_kit::backoff::Backoff;
use csp_kit::clock::{Clock, Micros};
use csp_kit::ids::RecordId;
use csp_kit::peer::{Failure, PeerError, PeerResult as _};
use csp_kit::shutdown::Shutdown;
use csp_proto::audit::v1::ActivityRecord;
use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;

use crate::db::{Db, DbTx, MigrationSource};
use crate::{on_db, on_tx};

/// The outbox tables on SQLite; add to a service's migrations under its own
/// version number.
pub const SQLITE_MIGRATION: &str = include_str!("../migrations/outbox_sqlite.sql");
/// The outbox tables on PostgreSQL.
pub const POSTGRES_MIGRATION: &str = include_str!("../migrations/outbox_postgres.sql");

/// The outbox migration for SQLite as version `version`.
pub const fn sqlite_migration(version: i64) -> MigrationSource {
    MigrationSource {
        version,
        description: "outbox",
        sql: SQLITE_MIGRATION,
    }
}

/// The outbox migration for PostgreSQL as version `version`.
pub const fn postgres_migration(version: i64) -> MigrationSource {
    MigrationSource {
        version,
        description: "outbox",
        sql: POSTGRES_MIGRATION,
    }
}

/// The index the relay reads a destination's due messages in order by
/// (added after the outbox tables; the same on both backends), as version
/// `version`.
pub const fn due_index_migration(version: i64) -> MigrationSource {
    MigrationSource {
        version,
        description: "outbox due index",
        sql: "CREATE INDEX outbox_due ON outbox (destination, seq);",
    }
}

/// Drops the outbox's `UNIQUE (destination, event_id)` on PostgreSQL, as
/// version `version`. Event ids are unique by construction (random record
/// ids, or one per event), and every receiver deduplicates by them anyway,
/// so the index only cost a random insert into a text btree, and a
/// uniqueness check, for every message: with pgbench, transactions of 20
/// inserts and 20 deletes went from 4,100 to 4,470 per second without it.
/// SQLite keeps the constraint: dropping it there means rebuilding the
/// table, and SQLite's redemptions are not short of their goal.
pub const fn postgres_event_ids_not_unique_migration(version: i64) -> MigrationSource {
    MigrationSource {
        version,
        description: "outbox event ids not indexed",
        sql: "ALTER TABLE outbox DROP CONSTRAINT outbox_destination_event_id_key;",
    }
}

/// A message to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Where it goes, for example `licensing`.
    pub destination: &'static str,
    /// Unique per destination; receivers deduplicate by it.
    pub event_id: String,
    /// Messages of one stream are delivered in the order they were written.
    pub stream: String,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// An activity record for the audit log, in `stream`; its event id is the
    /// record's id.
    pub fn audit(stream: impl std::fmt::Display, id: RecordId, record: &ActivityRecord) -> Self {
        Message {
            destination: AUDIT,
            event_id: id.to_string(),
            stream: stream.to_string(),
            payload: prost::Message::encode_to_vec(record),
        }
    }

    /// A built activity for the audit log, in `stream`.
    pub fn activity(stream: impl std::fmt::Display, activity: csp_kit::activity::Activity) -> Self {
        let id = activity.id();
        Self::audit(stream, id, &activity.record())
    }
}

/// The destination name of the audit service.
pub const AUDIT: &str = "audit";

/// The head of a statement that writes outbox rows, as [`enqueue`] does:
/// what follows (`VALUES` or a `SELECT`) gives the destination, event id,
/// stream, payload, then the time twice (written, first due).
pub const INSERT: &str = "INSERT INTO outbox (destination, event_id, stream, payload, created_at_us, next_attempt_at_us)";

/// Writes `message` in `tx`; it is relayed once `tx` commits. Its timestamps
/// come from the system clock (relay timing is not business time).
pub async fn enqueue(tx: &mut DbTx, message: &Message) -> Result<(), sqlx::Error> {
    let now = csp_kit::clock::SystemClock.now();
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{INSERT} VALUES ($1, $2, $3, $4, $5, $5)"));
    on_tx!(tx, t => sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(message.destination)
        .bind(&message.event_id)
        .bind(&message.stream)
        .bind(&message.payload)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|_| ()))
}

/// Writes `messages` to the outbox in `tx`, in order, in as few statements
/// as possible (many rows per INSERT): for a group commit's many messages.
pub async fn enqueue_all(tx: &mut DbTx, messages: &[Message]) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 6;
    // Well under SQLite's 32,766 bound parameters per statement.
    const ROWS: usize = 500;
    let now = csp_kit::clock::SystemClock.now();
    for chunk in messages.chunks(ROWS) {
        let sql = crate::db::value_rows(&format!("{INSERT} VALUES"), COLUMNS, chunk.len());
        on_tx!(tx, t => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for message in chunk {
                query = query
                    .bind(message.destination)
                    .bind(&message.event_id)
                    .bind(&message.stream)
                    .bind(&message.payload)
                    .bind(now)
                    .bind(now);
            }
            query.execute(&mut **t).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// A message handed to a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Its place in the outbox.
    pub seq: i64,
    /// Its event id.
    pub event_id: String,
    /// Its stream.
    pub stream: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Earlier failed attempts.
    pub attempts: i32,
}

/// What a destination did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The batch was taken, except the events named, which the destination
    /// rejected as permanently invalid (event id, reason).
    Accepted {
        /// Rejected events.
        rejected: Vec<(String, String)>,
    },
    /// The batch was not taken.
    Failed {
        /// Why.
        error: String,
        /// Whether retrying the same batch can never succeed (a bad event in
        /// it); the relay then delivers its events one by one.
        permanent: bool,
    },
}

/// A place messages go.
#[tonic::async_trait]
pub trait Destination: Send + Sync + 'static {
    /// The name messages are addressed to.
    fn name(&self) -> &'static str;
    /// Delivers a batch, oldest first.
    async fn deliver(&self, batch: &[Envelope]) -> Outcome;
    /// Whether the destination takes each message on its own (an activity
    /// record: rejecting one never changes what the next one means), so a
    /// batch may hold several pending messages of one stream, in order.
    /// Otherwise a batch holds only the oldest pending message of each
    /// stream, and the next goes once it is accepted.
    fn independent_messages(&self) -> bool {
        false
    }
}

impl Outcome {
    /// A failed delivery as the peer's answer reads ([`PeerError`]): a
    /// rejection is permanent (the relay then finds the bad message), a
    /// transient failure or NOT_FOUND is retried later.
    pub fn failed(error: &PeerError) -> Self {
        Outcome::Failed {
            error: error.describe(),
            permanent: error.failure == Failure::Rejected,
        }
    }
}

/// Sends batches of one message type through one batch RPC of a peer, which
/// answers with the events it rejected as permanently invalid. Every outbox
/// destination is one of these.
pub struct BatchDestination<M, F> {
    name: &'static str,
    send: F,
    independent: bool,
    _message: std::marker::PhantomData<fn() -> M>,
}

/// A batch RPC call: the decoded messages in, the rejected (event id,
/// reason) pairs out.
pub type BatchFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(String, String)>, PeerError>> + Send>,
>;

impl<M, F> BatchDestination<M, F>
where
    M: prost::Message + Default + Send + 'static,
    F: Fn(Vec<M>) -> BatchFuture + Send + Sync + 'static,
{
    /// The destination `name`, delivering with `send`.
    pub fn new(name: &'static str, send: F) -> Self {
        Self {
            name,
            send,
            independent: false,
            _message: std::marker::PhantomData,
        }
    }

    /// The same, for a destination that takes each message on its own
    /// ([`Destination::independent_messages`]).
    pub fn of_independent_messages(name: &'static str, send: F) -> Self {
        Self {
            independent: true,
            ..Self::new(name, send)
        }
    }
}

#[tonic::async_trait]
impl<M, F> Destination for BatchDestination<M, F>
where
    M: prost::Message + Default + Send + 'static,
    F: Fn(Vec<M>) -> BatchFuture + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn independent_messages(&self) -> bool {
        self.independent
    }

    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let (messages, mut rejected) = decode_all::<M>(batch);
        if messages.is_empty() {
            return Outcome::Accepted { rejected };
        }
        match (self.send)(messages).await {
            Ok(more) => {
                rejected.extend(more);
                Outcome::Accepted { rejected }
            }
            Err(error) => Outcome::failed(&error),
        }
    }
}

/// The audit log as an outbox destination, over `channel`.
pub fn audit_destination(channel: csp_kit::peer::Signed) -> Arc<dyn Destination> {
    let client = AuditIntakeServiceClient::new(channel);
    // Activity records are facts on their own: one stream's (a
    // subscription's downloads) go together in order.
    Arc::new(BatchDestination::of_independent_messages(
        AUDIT,
        move |records| {
            let mut client = client.clone();
            Box::pin(async move {
                let answer = client
                    .record_activities(csp_proto::audit::v1::RecordActivitiesRequest { records })
                    .await
                    .peer(AUDIT)?;
                Ok(answer
                    .rejected
                    .into_iter()
                    .map(|r| (r.event_id, r.reason))
                    .collect())
            }) as BatchFuture
        },
    ))
}

/// Decodes payloads; one that does not decode is rejected (it never will).
pub fn decode_all<M: prost::Message + Default>(
    batch: &[Envelope],
) -> (Vec<M>, Vec<(String, String)>) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for envelope in batch {
        match M::decode(envelope.payload.as_slice()) {
            Ok(message) => decoded.push(message),
            Err(error) => rejected.push((
                envelope.event_id.clone(),
                format!("the payload does not decode: {error}"),
            )),
        }
    }
    (decoded, rejected)
}

/// Encodes a message for the outbox.
pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// How a relay paces itself.
#[derive(Clone, Copy, Debug)]
pub struct RelaySettings {
    /// Look for due messages at least this often.
    pub poll_interval: Duration,
    /// At most this many messages per delivery.
    pub batch_size: u32,
    /// The first retry waits this long; each further one twice as long.
    pub backoff_base: Duration,
    /// No retry waits longer.
    pub backoff_max: Duration,
    /// After a round that delivered at least `busy_round` messages (the
    /// relay is under load), the next round waits this long for more to
    /// gather: fewer, larger deliveries, each one query, one call and one
    /// delete, instead of a pass for every few messages. A quiet relay
    /// delivers at once.
    pub linger: Duration,
    /// See `linger`.
    pub busy_round: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            batch_size: 500,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            linger: Duration::from_millis(20),
            busy_round: 16,
        }
    }
}

/// Delivers a service's outbox to its destinations.
pub struct Relay {
    db: Db,
    destinations: Vec<Arc<dyn Destination>>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    settings: RelaySettings,
}

impl Relay {
    /// A relay over `db`'s outbox.
    pub fn new(
        db: Db,
        destinations: Vec<Arc<dyn Destination>>,
        clock: Arc<dyn Clock>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            db,
            destinations,
            clock,
            wake: Arc::new(Notify::new()),
            settings,
        }
    }

    /// Call `notify_one` on this after committing messages to deliver them
    /// without waiting for the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Relays until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            let mut delivered = 0;
            for destination in &self.destinations {
                if shutdown.is_fired() {
                    return;
                }
                match self.pass(destination.as_ref(), &shutdown).await {
                    Ok(count) => delivered += count,
                    Err(error) => tracing::warn!(
                        destination = destination.name(),
                        error = format!("{error:#}"),
                        "outbox relay pass failed"
                    ),
                }
            }
            tokio::select! {
                _ = shutdown.clone().wait() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
            if delivered >= self.settings.busy_round {
                tokio::select! {
                    _ = shutdown.clone().wait() => return,
                    _ = tokio::time::sleep(self.settings.linger) => {}
                }
            }
        }
    }

    /// Delivers what is due for one destination, holding the destination's
    /// advisory lock on PostgreSQL (another replica holding it now delivers
    /// instead); how many messages were delivered.
    pub async fn pass(
        &self,
        destination: &dyn Destination,
        shutdown: &Shutdown,
    ) -> anyhow::Result<usize> {
        let lock = crate::lock::key(&format!("csp-outbox:{}", destination.name()));
        crate::lock::exclusively(&self.db, lock, self.deliver_due(destination, shutdown))
            .await?
            .unwrap_or(Ok(0))
    }

    async fn deliver_due(
        &self,
        destination: &dyn Destination,
        shutdown: &Shutdown,
    ) -> anyhow::Result<usize> {
        let mut count = 0;
        loop {
            if shutdown.is_fired() {
                return Ok(count);
            }
            let batch = due(
                &self.db,
                destination.name(),
                self.clock.now(),
                self.settings.batch_size,
                destination.independent_messages(),
            )
            .await?;
            if batch.is_empty() {
                return Ok(count);
            }
            match destination.deliver(&batch).await {
                Outcome::Accepted { rejected } => {
                    let mut delivered = Vec::with_capacity(batch.len());
                    for envelope in &batch {
                        match rejected.iter().find(|(id, _)| *id == envelope.event_id) {
                            Some((_, reason)) => {
                                self.bury(destination.name(), envelope, reason).await?
                            }
                            None => delivered.push(envelope.seq),
                        }
                    }
                    delete(&self.db, &delivered).await?;
                    count += delivered.len();
                }
                Outcome::Failed {
                    error,
                    permanent: true,
                } if batch.len() == 1 => {
                    self.bury(destination.name(), &batch[0], &error).await?;
                }
                Outcome::Failed {
                    permanent: true, ..
                } => {
                    // Find the bad one: deliver the batch one by one.
                    for envelope in &batch {
                        match destination.deliver(std::slice::from_ref(envelope)).await {
                            Outcome::Accepted { rejected } if rejected.is_empty() => {
                                delete(&self.db, &[envelope.seq]).await?;
                                count += 1;
                            }
                            Outcome::Accepted { rejected } => {
                                let reason =
                                    rejected.into_iter().next().map(|r| r.1).unwrap_or_default();
                                self.bury(destination.name(), envelope, &reason).await?
                            }
                            Outcome::Failed {
                                error,
                                permanent: true,
                            } => self.bury(destination.name(), envelope, &error).await?,
                            Outcome::Failed {
                                error,
                                permanent: false,
                            } => {
                                self.retry_later(
                                    destination.name(),
                                    std::slice::from_ref(envelope),
                                    &error,
                                )
                                .await?;
                                return Ok(count);
                            }
                        }
                    }
                }
                Outcome::Failed {
                    error,
                    permanent: false,
                } => {
                    self.retry_later(destination.name(), &batch, &error).await?;
                    return Ok(count);
                }
            }
        }
    }

    async fn retry_later(
        &self,
        destination: &str,
        batch: &[Envelope],
        error: &str,
    ) -> anyhow::Result<()> {
        let attempts = batch.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
        let delay =
            Backoff::new(self.settings.backoff_base, self.settings.backoff_max).delay(attempts);
        tracing::warn!(
            destination,
            messages = batch.len(),
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            error,
            "outbox delivery failed; will retry"
        );
        let next = self.clock.now() + delay.as_micros() as Micros;
        for envelope in batch {
            const SQL: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_us = $2, last_error = $3 WHERE seq = $1";
            on_db!(&self.db, pool => sqlx::query(SQL)
                .bind(envelope.seq)
                .bind(next)
                .bind(error)
                .execute(pool)
                .await
                .map(|_| ()))?;
        }
        Ok(())
    }

    async fn bury(
        &self,
        destination: &str,
        envelope: &Envelope,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::error!(
            destination,
            event_id = %envelope.event_id,
            stream = %envelope.stream,
            reason,
            "outbox message rejected as permanently invalid; moved to outbox_dead_letters (its stream waits until it is replayed)"
        );
        const MOVE: &str = "INSERT INTO outbox_dead_letters \
                            (seq, destination, event_id, stream, payload, created_at_us, attempts, reason, dead_at_us) \
                            SELECT seq, destination, event_id, stream, payload, created_at_us, attempts + 1, $2, $3 \
                            FROM outbox WHERE seq = $1";
        const DELETE: &str = "DELETE FROM outbox WHERE seq = $1";
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, t => {
            sqlx::query(MOVE).bind(envelope.seq).bind(reason).bind(now).execute(&mut **t).await?;
            sqlx::query(DELETE).bind(envelope.seq).execute(&mut **t).await.map(|_| ())
        })?;
        tx.commit().await?;
        Ok(())
    }
}

/// The oldest pending message of each stream that is due and not held back
/// by a dead letter of its stream, oldest first. With `independent`, every
/// due message of every stream with no message waiting for a retry and no
/// dead letter (so each stream's due messages in order).
async fn due(
    db: &Db,
    destination: &str,
    now: Micros,
    limit: u32,
    independent: bool,
) -> anyhow::Result<Vec<Envelope>> {
    const OLDEST_OF_EACH_STREAM: &str = "SELECT o.seq, o.event_id, o.stream, o.payload, o.attempts FROM outbox o \
                       WHERE o.destination = $1 AND o.next_attempt_at_us <= $2 \
                       AND NOT EXISTS (SELECT 1 FROM outbox p \
                           WHERE p.destination = o.destination AND p.stream = o.stream AND p.seq < o.seq) \
                       AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters d \
                           WHERE d.destination = o.destination AND d.stream = o.stream) \
                       ORDER BY o.seq LIMIT $3";
    // A stream with any message waiting for a retry (a failed attempt, not
    // merely written after the clock was read), or a dead letter, is held
    // back whole; the rest go in seq order. The held-back set is small
    // (usually empty), so this stays one ordered scan however long the
    // backlog is.
    const EACH_STREAMS_DUE_PREFIX: &str = "SELECT o.seq, o.event_id, o.stream, o.payload, o.attempts FROM outbox o \
                       WHERE o.destination = $1 AND o.next_attempt_at_us <= $2 \
                       AND o.stream NOT IN (SELECT p.stream FROM outbox p \
                           WHERE p.destination = $1 AND p.attempts > 0 AND p.next_attempt_at_us > $2 \
                           UNION SELECT d.stream FROM outbox_dead_letters d WHERE d.destination = $1) \
                       ORDER BY o.seq LIMIT $3";
    let sql = if independent {
        EACH_STREAMS_DUE_PREFIX
    } else {
        OLDEST_OF_EACH_STREAM
    };
    let rows: Vec<(i64, String, String, Vec<u8>, i32)> = on_db!(db, pool => sqlx::query_as(sql)
        .bind(destination)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
    .context("cannot read the outbox")?;
    Ok(rows
        .into_iter()
        .map(|(seq, event_id, stream, payload, attempts)| Envelope {
            seq,
            event_id,
            stream,
            payload,
            attempts,
        })
        .collect())
}

/// Deletes delivered messages: one statement on PostgreSQL (the seqs as an
/// array), one per 500 on SQLite, in one transaction (one commit). It was a
/// statement per message: the largest part of the database's work per
/// relayed download.
async fn delete(db: &Db, seqs: &[i64]) -> anyhow::Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    match db {
        Db::Postgres(pool) => {
            const SQL: &str = "DELETE FROM outbox WHERE seq = ANY($1)";
            sqlx::query(SQL).bind(seqs).execute(pool).await?;
        }
        Db::Sqlite(_) => {
            // Well under SQLite's 32,766 bound parameters per statement.
            const ROWS: usize = 500;
            let mut tx = db.begin().await?;
            for chunk in seqs.chunks(ROWS) {
                let sql = format!(
                    "DELETE FROM outbox WHERE seq IN {}",
                    crate::db::placeholders(1, chunk.len())
                );
                on_tx!(&mut tx, t => {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                    for seq in chunk {
                        query = query.bind(seq);
                    }
                    query.execute(&mut **t).await.map(drop)
                })?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// A message a destination rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its original place in the outbox.
    pub seq: i64,
    /// Where it was going.
    pub destination: String,
    /// Its event id.
    pub event_id: String,
    /// Its stream.
    pub stream: String,
    /// Why it was rejected.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: i32,
}

/// Every dead letter, oldest first.
pub async fn dead_letters(db: &Db) -> anyhow::Result<Vec<DeadLetter>> {
    const SQL: &str = "SELECT seq, destination, event_id, stream, reason, attempts FROM outbox_dead_letters ORDER BY seq";
    let rows: Vec<(i64, String, String, String, String, i32)> =
        on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(seq, destination, event_id, stream, reason, attempts)| DeadLetter {
                seq,
                destination,
                event_id,
                stream,
                reason,
                attempts,
            },
        )
        .collect())
}

/// Puts a dead letter back in the outbox at its original place, due now.
/// Returns whether there was one with that event id.
pub async fn replay(db: &Db, event_id: &str, now: Micros) -> anyhow::Result<bool> {
    const MOVE: &str = "INSERT INTO outbox \
                        (seq, destination, event_id, stream, payload, created_at_us, attempts, next_attempt_at_us, last_error) \
                        SELECT seq, destination, event_id, stream, payload, created_at_us, 0, $2, reason \
                        FROM outbox_dead_letters WHERE event_id = $1";
    const DELETE: &str = "DELETE FROM outbox_dead_letters WHERE event_id = $1";
    let mut tx = db.begin().await?;
    let moved = on_tx!(&mut tx, t => {
        let moved = sqlx::query(MOVE).bind(event_id).bind(now).execute(&mut **t).await?.rows_affected();
        sqlx::query(DELETE).bind(event_id).execute(&mut **t).await.map(|_| moved)
    })?;
    tx.commit().await?;
    Ok(moved > 0)
}

/// Messages waiting per destination (for metrics and operators).
pub async fn backlog(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    const SQL: &str =
        "SELECT destination, COUNT(*) FROM outbox GROUP BY destination ORDER BY destination";
    Ok(on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
}

/// Dead letters per destination.
pub async fn dead_letter_counts(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    const SQL: &str = "SELECT destination, COUNT(*) FROM outbox_dead_letters GROUP BY destination ORDER BY destination";
    Ok(on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_the_peer_status_says() {
        let failed = |status| Outcome::failed(&PeerError::new("licensing", status));
        assert!(matches!(
            failed(tonic::Status::invalid_argument("bad")),
            Outcome::Failed {
                permanent: true,
                ..
            }
        ));
        assert!(matches!(
            failed(tonic::Status::unavailable("down")),
            Outcome::Failed {
                permanent: false,
                ..
            }
        ));
        assert!(matches!(
            failed(tonic::Status::not_found("later")),
            Outcome::Failed {
                permanent: false,
                ..
            }
        ));
    }
}
