//! Waking the requests that wait for something to change (an operation to finish, a guest to
//! become ready) when this replica records such a change, instead of making them poll.
//!
//! ```text
//!  executor: operation finished ─┐
//!  fleet: a report changed a row ┴─▶ Changes::notify ─▶ every Changes::watch re-reads the database
//! ```
//! A change made by another replica wakes nobody here: a watch also re-reads every
//! [`FALLBACK_POLL`], so it sees that change at most that much later.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often a watch re-reads with no change notified (changes made by other replicas).
pub const FALLBACK_POLL: Duration = Duration::from_millis(250);

/// A counter of the changes this replica made, which waiters watch.
#[derive(Debug, Clone)]
pub struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Changes {
    /// Says that something waiters may look for has changed.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Calls `look` until it says it is done or `deadline` passes, again after every change
    /// notified (and every [`FALLBACK_POLL`]); returns what it saw last.
    pub async fn watch<T, E, F, Fut>(&self, deadline: Instant, mut look: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, bool), E>>,
    {
        let mut changed = self.0.subscribe();
        loop {
            // Marked seen before looking: a change during the look wakes the next wait.
            changed.borrow_and_update();
            let (value, done) = look().await?;
            let now = Instant::now();
            if done || now >= deadline {
                return Ok(value);
            }
            let _ = tokio::time::timeout(FALLBACK_POLL.min(deadline - now), changed.changed()).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_notified_change_wakes_a_watch_at_once_and_silence_still_polls() {
        let changes = Changes::default();
        let looks = Arc::new(AtomicU32::new(0));
        let (c, l) = (changes.clone(), looks.clone());
        let waiter = tokio::spawn(async move {
            c.watch(Instant::now() + Duration::from_secs(30), || {
                let n = l.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok::<_, ()>((n, n == 3)) }
            })
            .await
        });
        // The first look at once; the fallback poll makes the second after 250 ms.
        tokio::time::sleep(FALLBACK_POLL + FALLBACK_POLL / 2).await;
        assert_eq!(looks.load(Ordering::SeqCst), 2);
        // A change: the third look comes at once (long before the next poll), and is done.
        let notified = Instant::now();
        changes.notify();
        assert_eq!(waiter.await.unwrap(), Ok(3));
        assert!(notified.elapsed() < FALLBACK_POLL / 2, "{:?}", notified.elapsed());
    }

    #[tokio::test]
    async fn a_watch_ends_at_its_deadline_with_what_it_saw() {
        let changes = Changes::default();
        let deadline = Instant::now() + Duration::from_millis(600);
        let seen = changes.watch(deadline, || async { Ok::<_, ()>(("not yet", false)) }).await;
        assert_eq!(seen, Ok("not yet"));
        assert!(Instant::now() >= deadline);
    }
}
