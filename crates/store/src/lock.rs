//! One worker at a time across replicas: a PostgreSQL session advisory lock
//! held for one pass of a background loop (the outbox relay per
//! destination, the refund workflow). On SQLite, one process owns the file,
//! so the pass simply runs.

use std::future::Future;

use crate::db::Db;

/// A stable advisory-lock key for `name` (FNV-1a).
pub fn key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Runs `work` while holding the advisory lock `key` (see [`key`]) on
/// PostgreSQL; returns `None` without running it when another replica holds
/// the lock now.
pub async fn exclusively<T, F>(db: &Db, key: i64, work: F) -> anyhow::Result<Option<T>>
where
    F: Future<Output = T>,
{
    let pool = match db {
        Db::Sqlite(_) => return Ok(Some(work.await)),
        Db::Postgres(pool) => pool,
    };
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = work.await;
    let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(&mut *lock)
        .await;
    if unlocked.is_err() {
        // The lock dies with the connection; make sure it does.
        lock.detach();
    }
    Ok(Some(result))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_differ_per_name_and_are_stable() {
        assert_ne!(
            super::key("csp-outbox:licensing"),
            super::key("csp-outbox:audit")
        );
        assert_eq!(super::key("csp-refunds"), super::key("csp-refunds"));
    }
}
