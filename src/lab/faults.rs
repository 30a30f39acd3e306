//! Fault injection and counters: switches a test flips to make the lab fail
//! the way a real host does, and what the lab served, so a test can prove
//! an incremental read only the changed areas.
//!
//! The switches are atomics read on every request; they can be set from
//! code (`LabHandle::faults`), from `COFFER_LAB_FAULTS` when the lab starts,
//! or over HTTPS (`POST /lab/faults`) for tests that drive the binary. All
//! three take the same spec: comma-separated `quiesce`, `snapshot`,
//! `remove-snapshot`, `vss-writers`, `drop-after=<bytes>`,
//! `unavailable=<count>`, or `clear`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The environment variable read at start.
pub const FAULTS_ENV: &str = "COFFER_LAB_FAULTS";

#[derive(Debug, Default)]
pub struct Faults {
    /// Quiesced snapshots fail with ApplicationQuiesceFault.
    pub quiesce: AtomicBool,
    /// Every CreateSnapshot fails with a snapshot fault.
    pub snapshot: AtomicBool,
    /// RemoveSnapshot drops the snapshot but fails to consolidate: the VM
    /// then needs consolidation, as on ESXi.
    pub remove_snapshot: AtomicBool,
    /// The next datastore download is cut after this many bytes (0: off).
    pub drop_after_bytes: AtomicU64,
    /// The next this-many datastore downloads answer 503.
    pub unavailable: AtomicU32,
    /// No guest reports a VMware Tools heartbeat.
    pub tools_off: AtomicBool,
    /// The guests' VSS writers fail: a quiesced snapshot still succeeds, but
    /// without a VSS manifest, file-system-consistent ("the VSS snapshot is
    /// created with the vss-manifest file, or without this file in the
    /// error case": VDDK Programming Guide, "Application-Consistent Backup
    /// and Restore").
    pub vss_writers: AtomicBool,
}

impl Faults {
    /// Applies a spec (see the module header); an unknown item is an error
    /// that names it.
    pub fn apply(&self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            let number = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("`{name}` needs a number: `{name}=N`"))
            };
            let flag = || value.is_none_or(|v| v != "off" && v != "false" && v != "0");
            match name {
                "quiesce" => self.quiesce.store(flag(), Ordering::SeqCst),
                "snapshot" => self.snapshot.store(flag(), Ordering::SeqCst),
                "remove-snapshot" => self.remove_snapshot.store(flag(), Ordering::SeqCst),
                "tools-off" => self.tools_off.store(flag(), Ordering::SeqCst),
                "vss-writers" => self.vss_writers.store(flag(), Ordering::SeqCst),
                "drop-after" => self.drop_after_bytes.store(number()?, Ordering::SeqCst),
                "unavailable" => self
                    .unavailable
                    .store(number()?.min(u32::MAX as u64) as u32, Ordering::SeqCst),
                "clear" => self.clear(),
                other => {
                    return Err(format!(
                        "unknown lab fault `{other}`; known: quiesce, snapshot, remove-snapshot, \
                         tools-off, vss-writers, drop-after=<bytes>, unavailable=<count>, clear"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn clear(&self) {
        self.quiesce.store(false, Ordering::SeqCst);
        self.tools_off.store(false, Ordering::SeqCst);
        self.vss_writers.store(false, Ordering::SeqCst);
        self.snapshot.store(false, Ordering::SeqCst);
        self.remove_snapshot.store(false, Ordering::SeqCst);
        self.drop_after_bytes.store(0, Ordering::SeqCst);
        self.unavailable.store(0, Ordering::SeqCst);
    }

    /// Takes one 503 if any are left.
    pub(crate) fn take_unavailable(&self) -> bool {
        self.unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Takes the drop-after fault, if armed (it fires once).
    pub(crate) fn take_drop_after(&self) -> Option<u64> {
        match self.drop_after_bytes.swap(0, Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// What the lab has served.
#[derive(Debug, Default)]
pub struct Stats {
    served: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub(crate) fn add_served(&self, path: &str, bytes: u64) {
        let mut m = self.served.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(path.to_string()).or_default() += bytes;
    }

    /// Body bytes served by datastore downloads of `path` (relative to the
    /// datastore, `lab-vm-01/lab-vm-01-flat.vmdk`).
    pub fn bytes_served(&self, path: &str) -> u64 {
        let m = self.served.lock().unwrap_or_else(|e| e.into_inner());
        m.get(path).copied().unwrap_or(0)
    }

    /// Every file served, with its byte count.
    pub fn served(&self) -> BTreeMap<String, u64> {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reset(&self) {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_set_and_clear_switches() {
        let f = Faults::default();
        f.apply("quiesce, drop-after=4096,unavailable=2").unwrap();
        assert!(f.quiesce.load(Ordering::SeqCst));
        assert!(f.take_unavailable() && f.take_unavailable() && !f.take_unavailable());
        assert_eq!(f.take_drop_after(), Some(4096));
        assert_eq!(f.take_drop_after(), None);
        f.apply("quiesce=off").unwrap();
        assert!(!f.quiesce.load(Ordering::SeqCst));
        assert!(
            f.apply("drop-after")
                .unwrap_err()
                .contains("needs a number")
        );
        assert!(f.apply("meteor").unwrap_err().contains("unknown lab fault"));
    }
}
