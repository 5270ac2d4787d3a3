//! The database: embedded SQLite by default, PostgreSQL when a
//! `postgres://` URL is given. Both are native sqlx pools; services write each
//! SQL text once (with `$1` placeholders, which SQLite accepts too) and run it
//! on either pool with [`on_db!`](crate::on_db).
//!
//! Migrations are embedded in each service's binary and run with sqlx's
//! migrator (which holds an advisory lock on PostgreSQL, so replicas starting
//! together apply them once).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, SqlitePool};

/// The bytes a SQLite WAL is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// A service's database.
#[derive(Clone, Debug)]
pub enum Db {
    /// Embedded SQLite (one file, WAL, fsync on every commit).
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs the same code on whichever pool a [`Db`] holds. The body is compiled
/// once per backend, so it can use the pool's native types.
///
/// ```text
/// let n: i64 = on_db!(&self.db, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
/// ```
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// One writer's turn at a SQLite file (see [`Db::begin`]); released when
/// dropped, with the transaction.
#[derive(Debug)]
pub struct WriterTurn(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

impl WriterTurn {
    /// How long a writer waits for its turn: SQLite's own busy timeout.
    const WAIT: Duration = Duration::from_secs(10);

    async fn take(pool: &sqlx::SqlitePool) -> Result<WriterTurn, sqlx::Error> {
        static QUEUES: std::sync::LazyLock<
            std::sync::Mutex<
                std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>,
            >,
        > = std::sync::LazyLock::new(Default::default);
        let file = pool.connect_options().get_filename().to_path_buf();
        let queue = QUEUES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(file)
            .or_default()
            .clone();
        match tokio::time::timeout(Self::WAIT, queue.lock_owned()).await {
            Ok(guard) => Ok(WriterTurn(guard)),
            // Read as busy, like SQLite's own timeout.
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

/// A transaction on whichever backend a [`Db`] holds; use it with
/// [`on_tx!`](crate::on_tx). Dropped without [`DbTx::commit`], it rolls back.
#[derive(Debug)]
pub enum DbTx {
    /// On SQLite, holding the file's writer turn until it ends.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, WriterTurn),
    /// On PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs the same code on whichever transaction a [`DbTx`] holds; the
/// executor is `&mut **tx`.
///
/// ```text
/// on_tx!(&mut tx, t => sqlx::query(SQL).bind(x).execute(&mut **t).await)?;
/// ```
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            $crate::db::DbTx::Sqlite($t, _) => $body,
            $crate::db::DbTx::Postgres($t) => $body,
        }
    };
}

impl DbTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, t => t.commit().await)
    }
}

/// `($first, ..., $(first + count - 1))`: a list of `count` numbered
/// placeholders, for `IN` lists whose length varies.
pub fn placeholders(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!("({})", list.join(", "))
}

/// `head ($1, ..., $width), (...), ...`: `rows` rows of `width` numbered
/// placeholders, for multi-row `INSERT ... VALUES`.
pub fn value_rows(head: &str, width: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * width * 5);
    sql.push_str(head);
    for row in 0..rows {
        sql.push_str(if row == 0 { " " } else { ", " });
        sql.push_str(&placeholders(row * width + 1, width));
    }
    sql
}

/// One migration, embedded with `include_str!`.
#[derive(Clone, Copy, Debug)]
pub struct MigrationSource {
    /// Increasing version number; never reused.
    pub version: i64,
    /// What it does, in a few words.
    pub description: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// A service's migrations for each backend. Never edit one that has landed:
/// add a new one.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static [MigrationSource],
    /// Migrations for PostgreSQL.
    pub postgres: &'static [MigrationSource],
}

impl Db {
    /// Connects to `url`: `sqlite://PATH` (the file is created when missing)
    /// or `postgres://...`.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        Self::open(url, true).await
    }

    /// Opens an existing database (operator tools): a missing SQLite file is
    /// an error instead of a new empty database.
    pub async fn connect_existing(url: &str) -> anyhow::Result<Db> {
        Self::open(url, false).await
    }

    async fn open(url: &str, create: bool) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .context("the PostgreSQL URL is not valid")?
                .log_statements(tracing::log::LevelFilter::Trace);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(url)))?;
            Ok(Db::Postgres(pool))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if !create && !Path::new(path).exists() {
                anyhow::bail!("there is no SQLite database at {path}");
            }
            Self::open_sqlite(Path::new(path)).await
        } else {
            anyhow::bail!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact_url(url)
            )
        }
    }

    /// Opens (creating when missing) a SQLite file with WAL and a full fsync
    /// on every commit, so an acknowledged write survives a crash. The WAL
    /// is cut back to 64 MiB after each checkpoint (`journal_size_limit`),
    /// so a burst of large writes (ticket attachments) does not leave a WAL
    /// as big as the burst on disk.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the data directory {}", parent.display())
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
        Ok(Db::Sqlite(pool))
    }

    /// Begins a transaction that will write. On SQLite, writers of one file
    /// in this process first take their turn in a FIFO queue (a fair async
    /// mutex per file), then the write lock at once (`BEGIN IMMEDIATE`): one
    /// writer at a time is all SQLite allows, and queueing here instead of in
    /// SQLite's busy handler (which sleeps up to 100 ms between tries and
    /// lets later writers overtake) keeps waits short and in order. Another
    /// process on the same file still meets the busy timeout.
    pub async fn begin(&self) -> Result<DbTx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => {
                let turn = WriterTurn::take(pool).await?;
                DbTx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            Db::Postgres(pool) => DbTx::Postgres(pool.begin().await?),
        })
    }

    /// Which backend this is, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations not applied yet.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        let sources = match self {
            Db::Sqlite(_) => migrations.sqlite,
            Db::Postgres(_) => migrations.postgres,
        };
        let migrator = Migrator {
            migrations: Cow::Owned(
                sources
                    .iter()
                    .map(|m| {
                        Migration::new(
                            m.version,
                            Cow::Borrowed(m.description),
                            MigrationType::Simple,
                            m.sql.into_sql_str(),
                            // A migration that must manage its own
                            // transaction (SQLite table rebuilds turn foreign
                            // keys off outside one) says so on its first line.
                            m.sql.starts_with("-- no-transaction"),
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        match self {
            Db::Sqlite(pool) => {
                // sqlx cannot lock a SQLite database for migrating; two pools
                // of one process opening the same file at once (a test's
                // second replica) would both apply the same migration. One
                // SQLite migration at a time per process. (Several processes
                // on one SQLite file are not a supported deployment: use
                // PostgreSQL, where the migrator takes an advisory lock.)
                static SQLITE_MIGRATIONS: tokio::sync::Mutex<()> =
                    tokio::sync::Mutex::const_new(());
                let _one_at_a_time = SQLITE_MIGRATIONS.lock().await;
                migrator.run(pool).await
            }
            Db::Postgres(pool) => migrator.run(pool).await,
        }
        .context("database migration failed")
    }

    /// How the connection pool is used now.
    pub fn pool_stats(&self) -> PoolStats {
        on_db!(self, pool => PoolStats {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }
}

/// A snapshot of a connection pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

/// The constraint a unique violation broke, if `error` is one.
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    let db_error = error.as_database_error()?;
    if !db_error.is_unique_violation() {
        return None;
    }
    Some(
        db_error
            .constraint()
            .map(str::to_owned)
            .unwrap_or_else(|| db_error.message().to_owned()),
    )
}

/// Creates the PostgreSQL database `name` on the server of `server_url` when
/// it does not exist, and returns the URL of that database.
pub async fn ensure_postgres_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let mut conn = admin_connection(server_url, name).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE {name}");
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
        {
            // Another replica may have created it between the check and now.
            let raced = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !raced {
                return Err(error).with_context(|| format!("cannot create database {name}"));
            }
        }
    }
    conn.close().await.ok();
    Ok(with_database(server_url, name))
}

/// Drops the PostgreSQL database `name` on the server of `server_url`, if it
/// exists, closing its connections (tests clean up with it).
pub async fn drop_postgres_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin_connection(server_url, name).await?;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop database {name}"))?;
    conn.close().await.ok();
    Ok(())
}

/// A connection to the server of `server_url` for creating or dropping the
/// database `name`, after checking the name is safe to splice into SQL.
async fn admin_connection(server_url: &str, name: &str) -> anyhow::Result<sqlx::PgConnection> {
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "database name {name:?} must be lower-case letters, digits and underscores"
    );
    let options =
        PgConnectOptions::from_str(server_url).context("the PostgreSQL URL is not valid")?;
    sqlx::PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(server_url)))
}

/// `server_url` with its database path replaced by `name`.
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut url = format!("{}/{}", &base[..host_end], name);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let password = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{}{}{}", &url[..scheme_end], user, password, &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first_in_lists_and_rows() {
        assert_eq!(placeholders(3, 2), "($3, $4)");
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(
            value_rows("INSERT INTO t (a, b) VALUES", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn replaces_the_database_of_a_server_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "csp_catalog"),
            "postgres://u@h:5432/csp_catalog"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[tokio::test]
    async fn sqlite_files_cut_their_wal_back_after_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("csp-store-{}", uuid::Uuid::new_v4()));
        let db = Db::open_sqlite(&dir.join("x.db")).await.unwrap();
        let Db::Sqlite(pool) = &db else {
            panic!("not SQLite")
        };
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(limit, 64 * 1024 * 1024);
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
