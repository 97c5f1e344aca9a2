//! One timer for all the bounded waits of one call, armed only when a wait actually waits.
//!
//! A call may wait three times in a row: for a slot of the tenant's cap, for a pooled
//! connection, and for its statement ([`TenantDb::query_fused`](crate::TenantDb::query_fused)).
//! A `tokio::time::timeout` per wait builds a timer for each (a clock read and a runtime handle
//! each), and registers each one that has to wait with the runtime's timer wheel, under its
//! lock, then takes it out again. Here the waits of a call share one `Sleep`:
//!
//! - A wait that is over at once (a free slot, an idle connection) touches no timer at all.
//! - The first wait that has to wait creates the `Sleep`, due at that moment plus its limit.
//! - A later wait moves the same `Sleep` to its own deadline. Moving a registered timer to a
//!   later deadline takes no lock in tokio (the wheel finds the new deadline when the old one
//!   comes round); an earlier deadline registers it again.
//!
//! Each limit counts from the moment its own wait started, as with one `timeout` per wait.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The shared timer of one call (see the module documentation).
pub(crate) struct Timer<'a> {
    sleep: Pin<&'a mut Option<Sleep>>,
}

impl<'a> Timer<'a> {
    /// A timer over `slot`, an unarmed `Sleep` the caller pins for the whole call.
    pub(crate) fn new(slot: Pin<&'a mut Option<Sleep>>) -> Self {
        Self { sleep: slot }
    }

    /// Whether a wait of this call has armed the timer (for the tests).
    #[cfg(test)]
    fn armed(&self) -> bool {
        self.sleep.is_some()
    }

    /// `fut`'s output, or `None` when `limit` passed first, counted from the moment `fut`
    /// first had to wait. A future that is ready when first polled never arms the timer.
    pub(crate) async fn bound<F: Future>(&mut self, limit: Duration, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut deadline_set = false;
        poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if !deadline_set {
                deadline_set = true;
                let deadline = deadline_after(limit);
                match self.sleep.as_mut().as_pin_mut() {
                    Some(sleep) => sleep.reset(deadline),
                    None => self.sleep.set(Some(tokio::time::sleep_until(deadline))),
                }
            }
            match self.sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.poll(cx).map(|()| None),
                // Armed just above and never disarmed; were it not, the wait ends as timed
                // out rather than waiting with no timer to wake it.
                None => Poll::Ready(None),
            }
        })
        .await
    }
}

/// Now plus `limit`, or a far future (as `tokio::time::timeout` does) if that overflows.
fn deadline_after(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// `fut`, bounded by `limit`, with a timer of its own.
#[cfg(test)]
async fn bounded<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let slot = pin!(None::<Sleep>);
    Timer::new(slot).bound(limit, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_arms_no_timer() {
        let slot = pin!(None::<Sleep>);
        let mut timer = Timer::new(slot);
        assert_eq!(
            timer.bound(Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        assert!(!timer.armed(), "nothing waited: no timer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_its_limit_gives_none_at_the_limit() {
        let start = Instant::now();
        let out = bounded(Duration::from_millis(200), std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn each_limit_counts_from_its_own_wait() {
        let slot = pin!(None::<Sleep>);
        let mut timer = Timer::new(slot);
        let start = Instant::now();
        // The first wait arms the timer and finishes after 300 ms, within its 500 ms.
        let first = timer
            .bound(
                Duration::from_millis(500),
                tokio::time::sleep(Duration::from_millis(300)),
            )
            .await;
        assert_eq!(first, Some(()));
        assert!(timer.armed());
        // The second one has 400 ms of its own: 700 ms after the start, past the first
        // limit's 500, it is still running.
        let second = timer
            .bound(
                Duration::from_millis(400),
                tokio::time::sleep(Duration::from_millis(350)),
            )
            .await;
        assert_eq!(second, Some(()));
        assert_eq!(start.elapsed(), Duration::from_millis(650));
        // A third wait that overruns ends at its own limit, which is earlier than anything
        // armed before would have been.
        let third = timer
            .bound(Duration::from_millis(100), std::future::pending::<()>())
            .await;
        assert_eq!(third, None);
        assert_eq!(start.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_limit_moves_the_deadline_forward() {
        let slot = pin!(None::<Sleep>);
        let mut timer = Timer::new(slot);
        let start = Instant::now();
        let first = timer
            .bound(
                Duration::from_millis(100),
                tokio::time::sleep(Duration::from_millis(50)),
            )
            .await;
        assert_eq!(first, Some(()));
        // Due at 100 ms if it were not moved: the second wait must run until 50 + 1000 ms.
        let second = timer
            .bound(Duration::from_secs(1), std::future::pending::<()>())
            .await;
        assert_eq!(second, None);
        assert_eq!(start.elapsed(), Duration::from_millis(1050));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_too_large_to_add_does_not_panic() {
        let out = bounded(Duration::MAX, async { 1 }).await;
        assert_eq!(out, Some(1));
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            bounded(Duration::MAX, std::future::pending::<()>()),
        )
        .await;
        assert!(waited.is_err(), "still waiting after 5 s");
    }
}
