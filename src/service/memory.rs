//! Giving memory back to the system after a burst of requests.
//!
//! The crate's own buffers come from a bounded pool that never frees them
//! ([`FsOptions::buffer_budget`](crate::FsOptions::buffer_budget)), but the HTTP server's
//! read buffers and every request's small allocations come and go with the connections, and
//! glibc's `malloc` keeps in its arenas the memory they once occupied: 200 concurrent clients
//! left the demo server at 51 MiB of resident memory for good, 44 MiB of it free inside the
//! arenas. So when a burst ends — the requests in flight fall to an eighth of the burst's
//! peak, from at least [`BURST`] — the stack asks glibc, once, a second later, to return its
//! free pages (`malloc_trim`): the same server then rests at 25 MiB. Other allocators and
//! other systems are left alone. [`Uploads::trim_allocator`](crate::Uploads::trim_allocator)
//! turns it off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The fewest requests in flight at once that make a burst.
const BURST: usize = 16;
/// How long after a burst ends the memory is trimmed (a burst that resumes meanwhile costs
/// one trim of a few milliseconds).
const SETTLE: Duration = Duration::from_secs(1);

/// Requests in flight now, and their most since the last trim.
struct Load {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// The process's load (process-wide, as the allocator is).
static LOAD: Load = Load::new();

impl Load {
    const fn new() -> Load {
        Load {
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a request out; true when that ends a burst (for the one caller that sees it
    /// first, which resets the peak: one burst gives one trim, and the next burst counts
    /// from the requests that enter after it).
    fn leave(&self) -> bool {
        let now = self.now.fetch_sub(1, Ordering::Relaxed) - 1;
        let peak = self.peak.load(Ordering::Relaxed);
        peak >= BURST
            && now <= peak / 8
            && self
                .peak
                .compare_exchange(peak, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// One request in flight, counted while it lives; `None` when trimming is off.
pub(crate) struct Busy(());

impl Busy {
    pub(crate) fn enter(trim: bool) -> Option<Busy> {
        if !trim || !SUPPORTED {
            return None;
        }
        LOAD.enter();
        Some(Busy(()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if LOAD.leave() {
            schedule_trim();
        }
    }
}

/// Trims, [`SETTLE`] from now, off the async threads (it takes each arena's lock in turn).
fn schedule_trim() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async {
        tokio::time::sleep(SETTLE).await;
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SUPPORTED: bool = true;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const SUPPORTED: bool = false;

/// Returns glibc's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: `malloc_trim` takes no pointer and has no precondition: it releases only
    // memory that `malloc` holds free, under the arenas' own locks, from any thread.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, took = ?started.elapsed(), "returned free memory after a burst");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst ends once the requests in flight fall to an eighth of its peak, and ends once;
    /// a handful of requests is no burst.
    #[test]
    fn a_burst_ends_once() {
        let load = Load::new();
        (0..10).for_each(|_| load.enter());
        assert!(!(0..10).any(|_| load.leave()), "ten in flight are no burst");
        (0..200).for_each(|_| load.enter());
        let ended: Vec<bool> = (0..200).map(|_| load.leave()).collect();
        let at = ended.iter().position(|&e| e).expect("the burst ends");
        assert_eq!(200 - at - 1, 25, "at an eighth of the peak");
        assert_eq!(ended.iter().filter(|&&e| e).count(), 1, "once");
        (0..30).for_each(|_| load.enter());
        assert!((0..30).any(|_| load.leave()), "the next burst ends too");
    }
}
