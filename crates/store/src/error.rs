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
        match crate::db::unique_violation(&error) {
            Some(constraint) => StoreError::Conflict(constraint),
            None => StoreError::Database(error),
        }
    }
}

/// Storage failures a use case did not turn into a domain answer are
/// INTERNAL: logged with their cause, hidden from the caller.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(anyhow::Error::new(error))
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
