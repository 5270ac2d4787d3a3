//! The storage error: what a store can report, in its own terms. It carries
//! no sentence for a person; use cases decide what a conflict means to the
//! caller, and everything else is INTERNAL, logged once and never shown (no
//! database text reaches a caller).

use csp_kit::ApiError;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; the constraint's name.
    #[error("unique constraint {0} refused the write")]
    Conflict(String),
    /// A stored value this version cannot read (an unknown status, an id
    /// that does not parse): never read as a default.
    #[error("stored {column} holds {value:?}, which this version cannot read")]
    Corrupt {
        /// The column (or what was read).
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// The database stayed busy longer than a call may wait: SQLite's write
    /// lock past the busy timeout, no pooled connection free in time, or a
    /// PostgreSQL serialization failure, deadlock or lock timeout. Nothing
    /// was written; the same call may succeed a moment later.
    #[error("database busy")]
    Busy(#[source] sqlx::Error),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

/// A result of storage work.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A value of `column` that does not read.
    pub fn corrupt(column: &'static str, value: impl Into<String>) -> Self {
        StoreError::Corrupt {
            column,
            value: value.into(),
        }
    }

    /// Whether this is a unique violation of `constraint` (its name, as
    /// PostgreSQL reports it) or of a key that includes `column` (SQLite
    /// reports the columns, not the name).
    pub fn is_unique(&self, constraint: &str, column: &str) -> bool {
        match self {
            StoreError::Conflict(found) => found == constraint || found.contains(column),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_busy(&error) {
            return StoreError::Busy(error);
        }
        match crate::db::unique_violation(&error) {
            Some(constraint) => StoreError::Conflict(constraint),
            None => StoreError::Database(error),
        }
    }
}

/// Whether `error` means "busy, try again" rather than a failure.
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => match e.code() {
            // SQLite reports extended codes: the primary code is the low byte
            // (5 SQLITE_BUSY, 6 SQLITE_LOCKED).
            Some(code) if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => code
                .parse::<i32>()
                .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
            Some(code) => matches!(code.as_ref(), "40001" | "40P01" | "55P03"),
            None => false,
        },
        _ => false,
    }
}

/// Storage failures a use case did not turn into a domain answer are
/// INTERNAL: logged with their cause, hidden from the caller.
/// What a caller is told when the database stayed busy.
const BUSY: &str =
    "the service's database is busy with other writes; nothing was stored, retry in a moment";

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy(cause) => {
                tracing::warn!(error = %cause, "the database stayed busy; the call is UNAVAILABLE");
                ApiError::Unavailable(BUSY.to_owned())
            }
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl StoreError {
    /// The same answer as `ApiError::from`, for a failure that ends several
    /// calls at once (one transaction serving a group of them): the cause is
    /// kept as text, since the error cannot be cloned.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            StoreError::Busy(_) => ApiError::Unavailable(BUSY.to_owned()),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                ApiError::Internal(anyhow::anyhow!(text))
            }
        }
    }
}

/// Reads a stored id (or any `FromStr` value) of `column`.
pub fn parse<T: std::str::FromStr>(column: &'static str, value: &str) -> StoreResult<T> {
    value
        .parse()
        .map_err(|_| StoreError::corrupt(column, value))
}

/// The same, for handlers that answer with a `Status` directly.
impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        ApiError::from(error).into()
    }
}

/// Reads text column `column` of `row` and parses it (a typed id, a state):
/// a value that does not parse is [`StoreError::Corrupt`].
pub fn column<'r, R, T>(row: &'r R, column: &'static str) -> StoreResult<T>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    T: std::str::FromStr,
{
    let text: String = row.try_get(column)?;
    parse(column, &text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    #[test]
    fn a_shared_failure_answers_as_an_owned_one_would() {
        let busy = StoreError::Busy(sqlx::Error::PoolTimedOut);
        assert!(matches!(busy.to_api_error(), ApiError::Unavailable(m) if m == BUSY));
        let corrupt = StoreError::corrupt("t.c", "x");
        match corrupt.to_api_error() {
            ApiError::Internal(e) => assert!(e.to_string().contains("t.c"), "{e}"),
            other => panic!("{other:?}"),
        }
        let failed = StoreError::Database(sqlx::Error::RowNotFound);
        match failed.to_api_error() {
            ApiError::Internal(e) => assert!(e.to_string().contains("no rows"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_sqlite_write_lock_held_too_long_is_busy_and_unavailable() {
        let dir = std::env::temp_dir().join(format!("csp-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("x.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let refused = pool.begin_with("BEGIN IMMEDIATE").await.unwrap_err();
        let error = StoreError::from(refused);
        assert!(matches!(error, StoreError::Busy(_)), "{error:?}");
        let api = ApiError::from(error);
        assert!(matches!(api, ApiError::Unavailable(_)), "{api:?}");
        drop(holder);
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_database_failures_stay_internal() {
        let error = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(error, StoreError::Database(_)), "{error:?}");
        assert!(matches!(ApiError::from(error), ApiError::Internal(_)));
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Busy(_)
        ));
    }
}
