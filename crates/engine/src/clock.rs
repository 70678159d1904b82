//! Wall-clock time as Sluice keeps it: milliseconds since the Unix epoch, for record
//! timestamps (`LogAppendTime`, timestamp windows), retention, the janitor's grace
//! periods, producer-id expiry, commit times of group offsets and groups' empty-since
//! times. One handle, carried by the [`Engine`](crate::Engine) config, so a test can
//! stand time still or move it.
//!
//! Timers that measure a span (session timeouts, flush lingers) use tokio's monotonic
//! clock instead; only what is stored or compared with stored times reads this one.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The system clock, or a manual one that moves only when told.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock standing at `now_ms` until [`advance`](Self::advance)d.
    pub fn manual(now_ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(now_ms))))
    }

    /// Moves a manual clock forward (and every copy of it); the system clock
    /// ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            at.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(at) => at.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_copies_share_it() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        copy.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        assert!((system.now_ms() - wall).abs() < 60_000);
    }
}
