//! Fault injection and counters: switches a test flips to make the lab fail
//! the way a real host does, and what the lab served, so a test can prove
//! an incremental read only the changed areas.
//!
//! The switches are atomics read on every request; they can be set from
//! code (`LabHandle::faults`), from `COFFER_LAB_FAULTS` when the lab starts,
//! or over HTTPS (`POST /lab/faults`) for tests that drive the binary. All
//! three take the same spec: comma-separated `quiesce`, `snapshot`,
//! `remove-snapshot`, `prdm-snapshot`, `vss-writers`, `expire-sessions`, `no-file-locks`,
//! `proxy-wrong-host`, `hosts-unreachable`, `drop-after=<bytes>`,
//! `unavailable=<count>`, or `clear`; and the file service's throttling (`FolderThrottle`):
//! `folder-limit=<requests>`, `folder-setup-ms=<ms>`, `folder-mibps=<MiB/s>`
//! (which paces NFC uploads too); and the OVF import's leases (see `nfc`):
//! `lease-timeout=<seconds>`, `nfc-cut-after=<bytes>`.
//!
//! The counters (`Stats`) are what datastore downloads served and, per
//! HttpNfcLease of an OVF import, what its disk uploads carried.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::nfc::{LeaseOutcome, LeaseState};

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
    /// CreateSnapshot of a VM with a physical-mode raw device mapping that
    /// is not independent fails, instead of leaving the mapping out (see
    /// `disk::Disk::left_out_of_snapshots`): VMware documents such snapshots
    /// only as "not supported", so a host may refuse them; this is that host.
    pub prdm_snapshot: AtomicBool,
    /// The next datastore download is cut after this many bytes (0: off).
    pub drop_after_bytes: AtomicU64,
    /// The next this-many datastore downloads answer 503.
    pub unavailable: AtomicU32,
    /// No guest reports a VMware Tools heartbeat.
    pub tools_off: AtomicBool,
    /// How the datastore file service is throttled (off unless set).
    pub folder: FolderThrottle,
    /// Forget every session now (once), as hostd does after its idle
    /// timeout (`Config.HostAgent.vmacore.soap.sessionTimeout`, 30 minutes
    /// by default) or a restart of the management agents: SOAP calls then
    /// fail with NotAuthenticated and `/folder` answers 401. Clients keep
    /// sessions alive or log in again for this (govmomi's `session/keepalive`).
    pub expire_sessions: AtomicBool,
    /// The guests' VSS writers fail: a quiesced snapshot still succeeds, but
    /// without a VSS manifest, file-system-consistent ("the VSS snapshot is
    /// created with the vss-manifest file, or without this file in the
    /// error case": VDDK Programming Guide, "Application-Consistent Backup
    /// and Restore").
    pub vss_writers: AtomicBool,
    /// Serve the files a running VM holds for writing, as no host does
    /// (see `datastore::writer_of`): for tests of the lab's own protocol.
    pub no_file_locks: AtomicBool,
    /// vCenter mode: vCenter's own `/folder` proxy routes a request for a
    /// VM's disk file to a host that does not hold the file's lock, and
    /// answers 500, as it does when several hosts see the datastore: a
    /// locked file can be read only from the host owning the lock
    /// (vmware/vic issue 6867, `govc datastore.download` through vCenter
    /// routed to the wrong host, "500 Internal Server Error";
    /// vmware/pyvmomi issue 708; xen-orchestra issue 8339, a 500 for
    /// `/folder/…-flat.vmdk` through vCenter).
    pub proxy_wrong_host: AtomicBool,
    /// vCenter mode: the hosts cannot be reached by their names (the
    /// HostSystem names lead to an address where nothing answers).
    pub hosts_unreachable: AtomicBool,
    /// The endpoint has no OvfManager: restores take the `/folder` path.
    pub no_ovf_manager: AtomicBool,
    /// The seconds an HttpNfcLease lives without HttpNfcLeaseProgress
    /// (its `info.leaseTimeout`); 0: the lab's default (`nfc`).
    pub lease_timeout_secs: AtomicU64,
    /// The next NFC disk upload is cut after this many body bytes: the lab
    /// stops reading and drops the connection, once (0: off).
    pub nfc_cut_after_bytes: AtomicU64,
}

/// The throttling of a host's file service (`/folder`), as a real ESXi host
/// throttles it: hostd serves datastore HTTP transfers from a small pool
/// shared by every client of the host and answers 503 Service Unavailable
/// when it is exhausted (clients treat that as "slow down": the Proxmox VE
/// ESXi importer, pve-esxi-import-tools `src/esxi.rs`, reports it as "rate
/// limited"); the budget is the host's, not a client's (VDDK programming
/// guide, "NFC Session Connection Limits": per-host limits and a cap on the
/// sum of transfer buffers). Each request also costs the host a setup
/// (authentication, opening the file on VMFS) before its first byte, which
/// is why the importer asks for pages of tens of MiB, and the host's
/// bandwidth is shared by the requests in flight.
///
/// Three switches, each off at 0: at most `limit` GETs in flight (more are
/// answered 503), `setup_ms` before each answer, and `mib_per_s` for all
/// bodies together.
#[derive(Debug, Default)]
pub struct FolderThrottle {
    pub limit: AtomicU32,
    pub setup_ms: AtomicU64,
    pub mib_per_s: AtomicU64,
    in_flight: Arc<AtomicU32>,
    /// When the shared link is free again (bandwidth pacing).
    link_free_at: Mutex<Option<Instant>>,
    /// Requests turned away with 503.
    pub turned_away: AtomicU64,
}

/// A GET's place among the requests in flight; freed when dropped (the
/// body sent or the connection gone).
#[derive(Debug)]
pub struct FolderSlot(Option<Arc<AtomicU32>>);

impl Drop for FolderSlot {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl FolderThrottle {
    /// A place for one more GET, or `None` when the host is full (503).
    pub fn enter(&self) -> Option<FolderSlot> {
        let limit = self.limit.load(Ordering::SeqCst);
        if limit == 0 {
            return Some(FolderSlot(None));
        }
        let taken = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.turned_away.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        Some(FolderSlot(Some(self.in_flight.clone())))
    }

    /// The per-request setup cost.
    pub fn setup(&self) {
        let ms = self.setup_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// Waits until `bytes` more may cross the host's shared link.
    pub fn pace(&self, bytes: u64) {
        let rate = self.mib_per_s.load(Ordering::SeqCst) * (1 << 20);
        if rate == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let start = {
            let mut free = self.link_free_at.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = free.filter(|t| *t > now).unwrap_or(now);
            *free = Some(start + cost);
            start
        };
        let done = start + cost;
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
    }

    fn clear(&self) {
        self.limit.store(0, Ordering::SeqCst);
        self.setup_ms.store(0, Ordering::SeqCst);
        self.mib_per_s.store(0, Ordering::SeqCst);
    }
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
                "prdm-snapshot" => self.prdm_snapshot.store(flag(), Ordering::SeqCst),
                "tools-off" => self.tools_off.store(flag(), Ordering::SeqCst),
                "expire-sessions" => self.expire_sessions.store(flag(), Ordering::SeqCst),
                "vss-writers" => self.vss_writers.store(flag(), Ordering::SeqCst),
                "no-file-locks" => self.no_file_locks.store(flag(), Ordering::SeqCst),
                "proxy-wrong-host" => self.proxy_wrong_host.store(flag(), Ordering::SeqCst),
                "hosts-unreachable" => self.hosts_unreachable.store(flag(), Ordering::SeqCst),
                "no-ovf-manager" => self.no_ovf_manager.store(flag(), Ordering::SeqCst),
                "drop-after" => self.drop_after_bytes.store(number()?, Ordering::SeqCst),
                "unavailable" => self
                    .unavailable
                    .store(number()?.min(u32::MAX as u64) as u32, Ordering::SeqCst),
                "folder-limit" => self
                    .folder
                    .limit
                    .store(number()?.min(u32::MAX as u64) as u32, Ordering::SeqCst),
                "folder-setup-ms" => self.folder.setup_ms.store(number()?, Ordering::SeqCst),
                "folder-mibps" => self.folder.mib_per_s.store(number()?, Ordering::SeqCst),
                "lease-timeout" => self.lease_timeout_secs.store(number()?, Ordering::SeqCst),
                "nfc-cut-after" => self.nfc_cut_after_bytes.store(number()?, Ordering::SeqCst),
                "clear" => self.clear(),
                other => {
                    return Err(format!(
                        "unknown lab fault `{other}`; known: quiesce, snapshot, remove-snapshot, prdm-snapshot, \
                         tools-off, vss-writers, expire-sessions, no-file-locks, proxy-wrong-host, \
                         hosts-unreachable, no-ovf-manager, drop-after=<bytes>, unavailable=<count>, \
                         folder-limit=<requests>, folder-setup-ms=<ms>, folder-mibps=<MiB/s>, \
                         lease-timeout=<seconds>, nfc-cut-after=<bytes>, clear"
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
        self.proxy_wrong_host.store(false, Ordering::SeqCst);
        self.hosts_unreachable.store(false, Ordering::SeqCst);
        self.no_ovf_manager.store(false, Ordering::SeqCst);
        self.snapshot.store(false, Ordering::SeqCst);
        self.remove_snapshot.store(false, Ordering::SeqCst);
        self.prdm_snapshot.store(false, Ordering::SeqCst);
        self.drop_after_bytes.store(0, Ordering::SeqCst);
        self.unavailable.store(0, Ordering::SeqCst);
        self.folder.clear();
        self.no_file_locks.store(false, Ordering::SeqCst);
        self.lease_timeout_secs.store(0, Ordering::SeqCst);
        self.nfc_cut_after_bytes.store(0, Ordering::SeqCst);
    }

    /// Takes the nfc-cut-after fault, if armed (it fires once).
    pub(crate) fn take_nfc_cut(&self) -> Option<u64> {
        match self.nfc_cut_after_bytes.swap(0, Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
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

/// What the lab has served, and what the NFC uploads of OVF imports
/// carried (by lease id).
#[derive(Debug, Default)]
pub struct Stats {
    served: Mutex<BTreeMap<String, u64>>,
    nfc: Mutex<BTreeMap<String, NfcLeaseStats>>,
}

/// One HttpNfcLease of an import, as tests read it (and `/lab/stats`
/// shows it, in the `nfc` list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NfcLeaseStats {
    pub lease: String,
    /// The imported VM's name.
    pub vm: String,
    pub state: LeaseState,
    /// How the lease ended; `None` while it is held.
    pub outcome: Option<LeaseOutcome>,
    /// Body bytes of every upload of the lease's disks.
    pub bytes_received: u64,
    /// Grains received, and those of them that inflated to all zeros
    /// (a client that skips zero grains sends none).
    pub grains: u64,
    pub zero_grains: u64,
    pub progress_calls: u64,
    pub last_percent: Option<i32>,
    pub disks: Vec<NfcDiskStats>,
}

/// One disk of an import lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NfcDiskStats {
    /// The target of its URL (`disk-0.vmdk`).
    pub target: String,
    /// The fileItem deviceId it was matched by.
    pub import_key: String,
    pub bytes_received: u64,
    pub grains: u64,
    pub zero_grains: u64,
    /// Uploads begun, and whether one ended with the stream's
    /// end-of-stream marker.
    pub uploads: u64,
    pub uploaded: bool,
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

    /// Every import lease the lab handed out, by lease id.
    pub fn nfc_leases(&self) -> Vec<NfcLeaseStats> {
        lock(&self.nfc).values().cloned().collect()
    }

    /// The import lease `id`, if the lab handed it out.
    pub fn nfc_lease(&self, id: &str) -> Option<NfcLeaseStats> {
        lock(&self.nfc).get(id).cloned()
    }

    pub(crate) fn nfc_open(&self, record: NfcLeaseStats) {
        lock(&self.nfc).insert(record.lease.clone(), record);
    }

    /// Changes the record of lease `id` (nothing when it is unknown, as
    /// after `reset`).
    pub(crate) fn nfc_update(&self, id: &str, f: impl FnOnce(&mut NfcLeaseStats)) {
        if let Some(r) = lock(&self.nfc).get_mut(id) {
            f(r);
        }
    }

    /// Counts `bytes` of an upload body, `grains` and `zero_grains` of
    /// disk `disk` of lease `id`.
    pub(crate) fn nfc_received(&self, id: &str, disk: usize, bytes: u64, grains: u64, zero: u64) {
        self.nfc_update(id, |r| {
            r.bytes_received += bytes;
            r.grains += grains;
            r.zero_grains += zero;
            if let Some(d) = r.disks.get_mut(disk) {
                d.bytes_received += bytes;
                d.grains += grains;
                d.zero_grains += zero;
            }
        });
    }

    /// Forgets every count, the import leases' records too (a lease
    /// handed out before is no longer counted).
    pub fn reset(&self) {
        lock(&self.served).clear();
        lock(&self.nfc).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn the_import_lease_switches_set_and_clear() {
        let f = Faults::default();
        f.apply("lease-timeout=2,nfc-cut-after=65536").unwrap();
        assert_eq!(f.lease_timeout_secs.load(Ordering::SeqCst), 2);
        assert_eq!(f.take_nfc_cut(), Some(65536));
        assert_eq!(f.take_nfc_cut(), None, "the cut fires once");
        f.apply("clear").unwrap();
        assert_eq!(f.lease_timeout_secs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_file_service_turns_away_requests_beyond_its_limit() {
        let f = Faults::default();
        assert!(f.folder.enter().is_some(), "no limit: always a place");
        f.apply("folder-limit=2").unwrap();
        let a = f.folder.enter().unwrap();
        let b = f.folder.enter().unwrap();
        assert!(f.folder.enter().is_none());
        drop(a);
        let c = f.folder.enter().unwrap();
        assert!(f.folder.enter().is_none());
        drop((b, c));
        assert_eq!(f.folder.turned_away.load(Ordering::SeqCst), 2);
        f.apply("clear").unwrap();
        assert_eq!(f.folder.limit.load(Ordering::SeqCst), 0);
    }
}
