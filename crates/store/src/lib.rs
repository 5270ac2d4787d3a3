//! What csp services with a database share (the gateway has none and does
//! not link this crate).
//!
//! - [`db`]: the database (embedded SQLite or PostgreSQL), one SQL text for
//!   both ([`on_db!`], [`on_tx!`]), embedded migrations.
//! - [`error`]: [`StoreError`], what storage reports, with no sentence for a
//!   person.
//! - [`outbox`]: the transactional outbox, its relay, and the destination
//!   every sender uses (a batch RPC).
//! - [`group`]: group commit, many calls' small writes in one durable
//!   transaction.
//! - [`idempotency`]: creates a client may retry (request id + fingerprint,
//!   the first answer replayed).
//! - [`lock`]: one replica at a time (PostgreSQL advisory locks).
//! - [`backend`]: the start-up and wind-down of a backend service.
//! - [`testing`]: fresh SQLite or PostgreSQL databases for tests (the
//!   storage contract suites run on both).

pub mod backend;
pub mod db;
pub mod error;
pub mod group;
pub mod idempotency;
pub mod lock;
pub mod outbox;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{StoreError, StoreResult};
