//! How long a backup's snapshot is open, and the deadline a policy's
//! `max_snapshot_lifetime` sets for it. While a snapshot is open every
//! guest write grows its delta, and removing it stuns the VM again to merge
//! the delta back: the longer it was open, the longer that takes (VMware KB
//! 1025279, "Best practices for using VMware snapshots": no single snapshot
//! for more than 72 hours).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a backup's snapshot was open: the delta it adds grows with
/// every guest write while it is open, and the VM is stunned again to merge
/// it back (VMware KB 1025279, "Best practices for using snapshots").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLifetime {
    pub created: chrono::DateTime<chrono::Utc>,
    pub removed: chrono::DateTime<chrono::Utc>,
}

impl SnapshotLifetime {
    pub fn open(&self) -> Duration {
        (self.removed - self.created).to_std().unwrap_or_default()
    }

    /// `snapshot open 3.2s (04:50:01 → 04:50:04 +00:00)`.
    pub fn describe(&self) -> String {
        self.describe_in(chrono_tz::UTC)
    }

    /// [`SnapshotLifetime::describe`] in the policy's time zone `zone`.
    pub fn describe_in(&self, zone: chrono_tz::Tz) -> String {
        let created = self.created.with_timezone(&zone);
        format!(
            "snapshot open {} ({} → {})",
            format_open(self.open()),
            created.format("%H:%M:%S"),
            self.removed.with_timezone(&zone).format("%H:%M:%S %:z")
        )
    }
}

/// A snapshot's open time: tenths of a second under a minute, else as
/// durations are written in policies.
fn format_open(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        crate::policy::units::format_duration(d)
    }
}

/// The snapshot's deadline, and whether a read found it passed.
pub(super) struct SnapshotClock {
    pub deadline: Option<Instant>,
    pub limit: Option<Duration>,
    pub expired: AtomicBool,
}

impl SnapshotClock {
    /// Starts the clock as the snapshot is taken.
    pub fn start(limit: Option<Duration>) -> SnapshotClock {
        SnapshotClock {
            deadline: limit.map(|d| Instant::now() + d),
            limit,
            expired: AtomicBool::new(false),
        }
    }

    /// Whether the deadline has passed; remembers it did.
    pub fn past_deadline(&self) -> bool {
        let past = self.deadline.is_some_and(|d| Instant::now() >= d);
        if past {
            self.expired.store(true, Ordering::SeqCst);
        }
        past
    }
}
