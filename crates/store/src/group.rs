//! Group commit: calls that would each commit a small transaction of their
//! own, and arrive while one such transaction commits, are gathered and
//! committed together in the next one. A durable commit (fsync) costs the
//! same for one write as for a hundred, so under load many calls share one,
//! and none is answered before its own write is durable.
//!
//! Groups are per key: calls of different keys never wait for each other
//! (the activity log groups by partner, since one partner's appends are one
//! at a time anyway; redemptions share one group, since SQLite has one
//! writer).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use csp_kit::{ApiError, ApiResult};
use tokio::sync::oneshot;

use crate::StoreError;

/// What a group's commit answers one call: its output, or the failure the
/// whole group shares.
type Answer<O> = Result<O, Arc<StoreError>>;

type Waiting<I, O> = Vec<(I, oneshot::Sender<Answer<O>>)>;

/// Gathers calls by key and commits each key's calls in groups, one group
/// at a time per key.
pub struct GroupCommit<K, I, O> {
    waiting: Mutex<HashMap<K, Waiting<I, O>>>,
}

impl<K, I, O> Default for GroupCommit<K, I, O> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, I, O> GroupCommit<K, I, O>
where
    K: Hash + Eq + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Submits `item` under `key` and waits for its group's commit. `commit`
    /// writes one group (the items in arrival order) in one transaction and
    /// returns one output per item, in the same order; it runs in a task of
    /// its own, so a caller that goes away strands nobody.
    pub async fn submit<F, Fut>(self: &Arc<Self>, key: K, item: I, commit: F) -> ApiResult<O>
    where
        F: Fn(K, Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send + 'static,
    {
        let (answer, committed) = oneshot::channel();
        let lead = {
            let mut waiting = self.lock();
            match waiting.get_mut(&key) {
                // A group is committing: join the next one.
                Some(next) => {
                    next.push((item, answer));
                    false
                }
                None => {
                    waiting.insert(key.clone(), vec![(item, answer)]);
                    true
                }
            }
        };
        if lead {
            tokio::spawn(self.clone().commit_groups(key, commit));
        }
        match committed.await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(failure)) => Err(failure.to_api_error()),
            Err(_) => Err(ApiError::Internal(anyhow::anyhow!(
                "the group commit stopped before answering"
            ))),
        }
    }

    /// Commits the gathered groups of `key` until none is waiting.
    async fn commit_groups<F, Fut>(self: Arc<Self>, key: K, commit: F)
    where
        F: Fn(K, Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send + 'static,
    {
        // Should `commit` panic, the key's waiting calls are dropped (they
        // answer INTERNAL) and the key freed, so later calls lead again
        // instead of queueing behind a leader that is gone.
        let mut leading = Leading {
            groups: &self,
            key: Some(key.clone()),
        };
        loop {
            let group = {
                let mut waiting = self.lock();
                let Some(next) = waiting.get_mut(&key) else {
                    leading.key = None;
                    return;
                };
                if next.is_empty() {
                    waiting.remove(&key);
                    leading.key = None;
                    return;
                }
                std::mem::take(next)
            };
            let (items, answers): (Vec<I>, Vec<_>) = group.into_iter().unzip();
            let expected = answers.len();
            match commit(key.clone(), items).await {
                Ok(outputs) if outputs.len() == expected => {
                    for (output, answer) in outputs.into_iter().zip(answers) {
                        let _ = answer.send(Ok(output));
                    }
                }
                Ok(outputs) => {
                    // A bug in `commit`: its calls are answered INTERNAL (the
                    // dropped senders), never with another call's output.
                    tracing::error!(
                        answered = outputs.len(),
                        expected,
                        "a group commit did not answer one output per call"
                    );
                }
                Err(error) => {
                    let failure = Arc::new(error);
                    for answer in answers {
                        let _ = answer.send(Err(failure.clone()));
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Waiting<I, O>>> {
        // A holder never panics while holding it (no user code runs under
        // it), but a poisoned map is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The leader of a key's groups; frees the key if the leader unwinds.
struct Leading<'a, K: Hash + Eq, I, O> {
    groups: &'a GroupCommit<K, I, O>,
    key: Option<K>,
}

impl<K: Hash + Eq, I, O> Drop for Leading<'_, K, I, O> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.groups
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_arriving_during_a_commit_share_the_next_one_and_get_their_own_output() {
        let groups: Arc<GroupCommit<(), u32, u32>> = Arc::default();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        for n in 0..50u32 {
            let (groups, sizes) = (groups.clone(), sizes.clone());
            calls.push(tokio::spawn(async move {
                groups
                    .submit((), n, move |(), items: Vec<u32>| {
                        let sizes = sizes.clone();
                        async move {
                            sizes.lock().unwrap().push(items.len());
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            Ok(items.iter().map(|i| i * 10).collect())
                        }
                    })
                    .await
            }));
        }
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), n as u32 * 10);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "some calls shared a commit: {sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_group_fails_each_of_its_calls() {
        let groups: Arc<GroupCommit<(), u32, u32>> = Arc::default();
        let failed = groups
            .submit((), 1, |(), _items: Vec<u32>| async {
                Err(StoreError::Database(sqlx::Error::PoolClosed))
            })
            .await;
        assert!(failed.is_err());
        let miscounted = groups
            .submit((), 1, |(), _items: Vec<u32>| async { Ok(Vec::new()) })
            .await;
        assert!(matches!(miscounted, Err(ApiError::Internal(_))));
    }

    #[tokio::test]
    async fn a_panicking_commit_fails_its_calls_and_frees_the_key() {
        let groups: Arc<GroupCommit<(), u32, u32>> = Arc::default();
        let panicked = groups
            .submit((), 1, |(), _items: Vec<u32>| async {
                if true {
                    panic!("a bug in a commit");
                }
                Ok(Vec::new())
            })
            .await;
        assert!(matches!(panicked, Err(ApiError::Internal(_))));
        // The key leads again.
        let next = groups
            .submit((), 2, |(), items: Vec<u32>| async move { Ok(items) })
            .await;
        assert_eq!(next.unwrap(), 2);
    }
}
