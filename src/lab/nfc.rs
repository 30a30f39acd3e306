//! The HttpNfcLease of an OVF import and the NFC endpoint its disks are
//! uploaded to, as a host serves them (vSphere API reference,
//! HttpNfcLease and HttpNfcLeaseInfo; govmomi's `nfc` package is the
//! client side, its simulator `simulator/http_nfc_lease.go` a server).
//!
//! A lease starts `initializing` (the first read of it answers so, and a
//! client must wait) and is `ready` from then on: its `info` names, per
//! disk, the URL `https://*/nfc/<lease>/disk-N.vmdk` on a standalone host
//! ("If a `*` is returned the client must substitute the `*` with the
//! hostname or IP address used when connecting to the server", vSphere API
//! reference, HttpNfcLeaseDeviceUrl.url) or, through the lab's vCenter,
//! the address of the ESXi host that holds the VM, as vCenter hands out
//! its hosts' NFC URLs (an ESXi 6.7 lease obtained through vCenter, printed
//! in nutanix/curie's `__upload_vmdks`: `https://10.60.5.201/nfc/<lease>/disk-0.vmdk`,
//! `datastoreKey` that URL's folder). The lease id is random and is the
//! URL's only credential ("HTTP access to NFC leases are token based and
//! do not require Session auth": govmomi's simulator). `sslThumbprint` is
//! left empty, as the API allows ("Empty if no SSL thumbprint is
//! available"): ESXi gives the SHA-1 of its certificate, which the lab has
//! no digest for; a client trusts the lab's hosts by the lab's own
//! (SHA-256) pin, since they share its certificate.
//!
//! HttpNfcLeaseProgress renews the lease; `leaseTimeout` seconds without it
//! (300 here, `lease-timeout=<seconds>` in `faults`) and the lease fails
//! with Timedout, checked on every request and by a background thread of
//! the lab so a killed client's lease does expire. HttpNfcLeaseComplete
//! ends it `done`, the VM an ordinary one; HttpNfcLeaseAbort or a timeout
//! ends it in `error` and the import leaves nothing (`import::discard`).
//! A call on a lease that timed out is a Timedout fault, on one completed
//! or aborted an InvalidState fault (vSphere API reference, the methods'
//! faults).
//!
//! An upload (`POST`, as govmomi's `nfc.Lease.Upload` sends a disk with
//! `Content-Type: application/x-vnd.vmware-streamVmdk`, or `PUT`) is a
//! streamOptimized VMDK decoded as it arrives (`vmdk_stream`) into the
//! disk's sparse flat extent, paced by the file service's throttle
//! (`FolderThrottle`), counted in `Stats` (`nfc`), and cut once by the
//! `nfc-cut-after=<bytes>` fault.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roxmltree::Node;
use serde::Serialize;

use super::config_spec::device_id;
use super::faults::{Faults, FolderThrottle, NfcDiskStats, NfcLeaseStats, Stats};
use super::http::{Body, Head, Response};
use super::import::{self, Imported};
use super::state::{Fault, Store};
use super::vmdk_stream::{self, GrainSink, StreamError};
use super::wire::{fault_fields, moref};
use crate::vsphere::soap::{XSI_NS, escape};

/// `leaseTimeout` unless the `lease-timeout` fault says otherwise.
pub const DEFAULT_LEASE_TIMEOUT_SECS: u64 = 300;

/// HttpNfcLeaseState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Initializing,
    Ready,
    Done,
    Error,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Initializing => "initializing",
            LeaseState::Ready => "ready",
            LeaseState::Done => "done",
            LeaseState::Error => "error",
        }
    }
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOutcome {
    Completed,
    Aborted,
    TimedOut,
}

#[derive(Debug, Clone)]
struct LeaseDisk {
    /// `/vm-N/VirtualLsiLogicController0:0`
    key: String,
    /// The fileItem deviceId: `/<entity name>/VirtualLsiLogicController0:0`.
    import_key: String,
    /// `disk-0.vmdk`
    target: String,
    data_file: String,
    capacity_bytes: u64,
    uploading: bool,
}

#[derive(Debug)]
struct Lease {
    vm: String,
    dir: String,
    host: Option<String>,
    state: LeaseState,
    error: Option<Fault>,
    outcome: Option<LeaseOutcome>,
    disks: Vec<LeaseDisk>,
    renewed_at: Instant,
    percent: i32,
}

/// The leases the lab handed out, done and failed ones included (their
/// `state` and `error` stay readable).
#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Lease>>,
    stats: Arc<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn timeout(faults: &Faults) -> Duration {
    match faults.lease_timeout_secs.load(Ordering::SeqCst) {
        0 => Duration::from_secs(DEFAULT_LEASE_TIMEOUT_SECS),
        s => Duration::from_secs(s),
    }
}

fn timed_out() -> Fault {
    Fault::new("Timedout", "Operation timed out.")
}

fn invalid_state(message: &str) -> Fault {
    Fault::new("InvalidState", message)
}

/// Whether `lease` still takes calls.
fn usable(lease: &Lease) -> Result<(), Fault> {
    match (lease.state, lease.outcome) {
        (_, Some(LeaseOutcome::TimedOut)) => Err(timed_out()),
        (LeaseState::Done, _) => Err(invalid_state("The lease has already been completed.")),
        (LeaseState::Error, _) => Err(invalid_state("The lease has already been aborted.")),
        _ => Ok(()),
    }
}

fn prop(name: &str, xsi_type: &str, inner: &str) -> String {
    format!("<propSet><name>{name}</name><val xsi:type=\"{xsi_type}\">{inner}</val></propSet>")
}

/// A lease id: 16 random bytes as a UUID, as ESXi's lease ids look
/// (`525216e6-797f-a03f-9b45-45cb9ea0f0d9`).
pub fn new_lease_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    b[0] = 0x52;
    crate::inventory::dashed_uuid(&hex::encode(b))
}

impl Leases {
    pub fn new(stats: Arc<Stats>) -> Leases {
        Leases {
            map: Mutex::default(),
            stats,
        }
    }

    /// Holds the import `imported` under lease `id`.
    pub fn open(&self, id: &str, imported: &Imported) {
        let disks: Vec<LeaseDisk> = imported
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| LeaseDisk {
                key: device_id(&imported.vm, d.controller, d.bus, d.unit),
                import_key: device_id(&imported.name, d.controller, d.bus, d.unit),
                target: format!("disk-{i}.vmdk"),
                data_file: d.data_file.clone(),
                capacity_bytes: d.capacity_bytes,
                uploading: false,
            })
            .collect();
        self.stats.nfc_open(NfcLeaseStats {
            lease: id.to_string(),
            vm: imported.name.clone(),
            state: LeaseState::Initializing,
            outcome: None,
            bytes_received: 0,
            grains: 0,
            zero_grains: 0,
            progress_calls: 0,
            last_percent: None,
            disks: disks
                .iter()
                .map(|d| NfcDiskStats {
                    target: d.target.clone(),
                    import_key: d.import_key.clone(),
                    bytes_received: 0,
                    grains: 0,
                    zero_grains: 0,
                    uploads: 0,
                    uploaded: false,
                })
                .collect(),
        });
        lock(&self.map).insert(
            id.to_string(),
            Lease {
                vm: imported.vm.clone(),
                dir: imported.dir.clone(),
                host: imported.host.clone(),
                state: LeaseState::Initializing,
                error: None,
                outcome: None,
                disks,
                renewed_at: Instant::now(),
                percent: 0,
            },
        );
    }

    /// Ends lease `id` in `error` with `fault` and `outcome`; answers the
    /// VM folder to discard.
    fn fail(&self, lease: &mut Lease, id: &str, fault: Fault, outcome: LeaseOutcome) -> String {
        lease.state = LeaseState::Error;
        lease.error = Some(fault);
        lease.outcome = Some(outcome);
        self.stats.nfc_update(id, |r| {
            r.state = LeaseState::Error;
            r.outcome = Some(outcome);
        });
        lease.dir.clone()
    }

    fn discard(store: &Store, id: &str, dir: &str) {
        // A failed removal leaves the VM marked; the next start removes it.
        let _ = store.update(|st, root| import::discard(st, root, id, dir));
    }

    /// Fails every held lease not renewed within the timeout, and removes
    /// its import.
    pub fn expire(&self, store: &Store, faults: &Faults) {
        let limit = timeout(faults);
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let mut map = lock(&self.map);
            map.iter_mut()
                .filter(|(_, l)| {
                    matches!(l.state, LeaseState::Initializing | LeaseState::Ready)
                        && now.duration_since(l.renewed_at) > limit
                })
                .map(|(id, l)| {
                    let dir = self.fail(l, id, timed_out(), LeaseOutcome::TimedOut);
                    (id.clone(), dir)
                })
                .collect()
        };
        for (id, dir) in expired {
            Self::discard(store, &id, &dir);
        }
    }

    /// The lease's properties (`state`, `info`, `error`,
    /// `initializeProgress`, `transferProgress`) as the property collector
    /// answers them. The first read of a new lease answers `initializing`,
    /// later ones `ready`. `host_addr` names a vCenter host's address.
    pub fn object(
        &self,
        id: &str,
        paths: &[String],
        all: bool,
        host_addr: &dyn Fn(&str) -> String,
        faults: &Faults,
    ) -> Result<String, Fault> {
        let mut map = lock(&self.map);
        let lease = map
            .get_mut(id)
            .ok_or_else(|| Fault::not_found("HttpNfcLease", id))?;
        let state = lease.state;
        const PATHS: [&str; 5] = [
            "state",
            "info",
            "error",
            "initializeProgress",
            "transferProgress",
        ];
        let wanted: Vec<&str> = if all || paths.is_empty() {
            PATHS.to_vec()
        } else {
            paths.iter().map(String::as_str).collect()
        };
        let mut out = format!("<objects>{}", moref("obj", "HttpNfcLease", id));
        for path in wanted {
            let p = match path {
                "state" => prop(path, "HttpNfcLeaseState", state.as_str()),
                "initializeProgress" => {
                    let done = if state == LeaseState::Initializing {
                        0
                    } else {
                        100
                    };
                    prop(path, "xsd:int", &done.to_string())
                }
                "transferProgress" => prop(path, "xsd:int", &lease.percent.to_string()),
                "error" => match &lease.error {
                    Some(f) => prop(
                        path,
                        "LocalizedMethodFault",
                        &format!(
                            "<fault xsi:type=\"{}\">{}</fault><localizedMessage>{}</localizedMessage>",
                            f.name,
                            fault_fields(f),
                            escape(&f.message)
                        ),
                    ),
                    None => continue,
                },
                // "only valid when the lease is in the ready state"
                // (vSphere API reference, HttpNfcLease.info).
                "info" if state == LeaseState::Ready => prop(
                    path,
                    "HttpNfcLeaseInfo",
                    &info(id, lease, host_addr, faults),
                ),
                _ => continue,
            };
            out.push_str(&p);
        }
        out.push_str("</objects>");
        if state == LeaseState::Initializing {
            lease.state = LeaseState::Ready;
            lease.renewed_at = Instant::now();
            self.stats.nfc_update(id, |r| r.state = LeaseState::Ready);
        }
        Ok(out)
    }

    /// HttpNfcLeaseProgress: records `percent` and renews the lease.
    pub fn progress(
        &self,
        store: &Store,
        faults: &Faults,
        id: &str,
        percent: i32,
    ) -> Result<(), Fault> {
        self.expire(store, faults);
        if !(0..=100).contains(&percent) {
            return Err(Fault::new(
                "InvalidArgument",
                format!("A specified parameter was not correct: percent {percent}"),
            )
            .with("invalidProperty", "percent"));
        }
        let mut map = lock(&self.map);
        let lease = map
            .get_mut(id)
            .ok_or_else(|| Fault::not_found("HttpNfcLease", id))?;
        usable(lease)?;
        lease.renewed_at = Instant::now();
        lease.percent = percent;
        self.stats.nfc_update(id, |r| {
            r.progress_calls += 1;
            r.last_percent = Some(percent);
        });
        Ok(())
    }

    /// HttpNfcLeaseComplete: the lease ends `done` and its VM is an
    /// ordinary one.
    pub fn complete(&self, store: &Store, faults: &Faults, id: &str) -> Result<(), Fault> {
        self.expire(store, faults);
        {
            let mut map = lock(&self.map);
            let lease = map
                .get_mut(id)
                .ok_or_else(|| Fault::not_found("HttpNfcLease", id))?;
            usable(lease)?;
            if lease.state == LeaseState::Initializing {
                return Err(invalid_state("The lease is not ready yet."));
            }
            lease.state = LeaseState::Done;
            lease.outcome = Some(LeaseOutcome::Completed);
        }
        self.stats.nfc_update(id, |r| {
            r.state = LeaseState::Done;
            r.outcome = Some(LeaseOutcome::Completed);
        });
        store.update(|st, _| {
            import::release(st, id);
            Ok(())
        })
    }

    /// HttpNfcLeaseAbort: the lease ends in `error` (with `cause`, the
    /// client's fault, when given) and the import leaves nothing.
    pub fn abort(
        &self,
        store: &Store,
        faults: &Faults,
        id: &str,
        cause: Option<Fault>,
    ) -> Result<(), Fault> {
        self.expire(store, faults);
        let dir = {
            let mut map = lock(&self.map);
            let lease = map
                .get_mut(id)
                .ok_or_else(|| Fault::not_found("HttpNfcLease", id))?;
            usable(lease)?;
            let fault = cause.unwrap_or_else(|| {
                Fault::new("RequestCanceled", "The import was aborted by the client.")
            });
            self.fail(lease, id, fault, LeaseOutcome::Aborted)
        };
        Self::discard(store, id, &dir);
        Ok(())
    }

    /// HttpNfcLeaseProgress, HttpNfcLeaseComplete or HttpNfcLeaseAbort
    /// (`method`) on the lease `this`, with the call's arguments.
    pub fn call(
        &self,
        store: &Store,
        faults: &Faults,
        method: &str,
        this: &(String, String),
        call: Node<'_, '_>,
    ) -> Result<(), Fault> {
        if this.0 != "HttpNfcLease" {
            return Err(Fault::not_found(&this.0, &this.1));
        }
        let id = this.1.as_str();
        let arg = |local: &str| {
            call.children()
                .find(|c| c.is_element() && c.tag_name().name() == local)
        };
        match method {
            "HttpNfcLeaseProgress" => {
                let percent = arg("percent")
                    .and_then(|p| p.text())
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| {
                        Fault::new("InvalidArgument", "percent is not a number")
                            .with("invalidProperty", "percent")
                    })?;
                self.progress(store, faults, id, percent)
            }
            "HttpNfcLeaseComplete" => self.complete(store, faults, id),
            _ => {
                // The client's cause, by its type: `fault` is a
                // MethodFault, which carries no message of its own.
                let cause = arg("fault").map(|f| {
                    let kind = f
                        .attributes()
                        .find(|a| a.name() == "type" && a.namespace() == Some(XSI_NS))
                        .map(|a| a.value().rsplit(':').next().unwrap_or("").to_string())
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "RequestCanceled".into());
                    Fault::new(&kind, "The import was aborted by the client.")
                });
                self.abort(store, faults, id, cause)
            }
        }
    }

    /// Takes disk `target` of lease `id` for an upload on host `here`
    /// (`None`: the standalone host's own server).
    fn begin_upload(&self, id: &str, target: &str, here: Option<&str>) -> Result<Upload, Response> {
        let mut map = lock(&self.map);
        let lease = map
            .get_mut(id)
            .filter(|l| l.host.as_deref() == here)
            .ok_or_else(|| Response::text(404, "no such NFC lease here"))?;
        if lease.state != LeaseState::Ready {
            return Err(Response::text(
                403,
                format!("the lease is {}, not ready", lease.state.as_str()),
            ));
        }
        let disk = lease
            .disks
            .iter()
            .position(|d| d.target == target)
            .ok_or_else(|| Response::text(404, format!("the lease has no target {target}")))?;
        let d = &mut lease.disks[disk];
        if d.uploading {
            return Err(Response::text(
                409,
                format!("{target} is being uploaded already"),
            ));
        }
        d.uploading = true;
        self.stats.nfc_update(id, |r| {
            if let Some(s) = r.disks.get_mut(disk) {
                s.uploads += 1;
            }
        });
        Ok(Upload {
            disk,
            data_file: d.data_file.clone(),
            capacity_bytes: d.capacity_bytes,
        })
    }

    fn end_upload(&self, id: &str, disk: usize, uploaded: bool) {
        if let Some(d) = lock(&self.map)
            .get_mut(id)
            .and_then(|l| l.disks.get_mut(disk))
        {
            d.uploading = false;
        }
        self.stats.nfc_update(id, |r| {
            if let Some(s) = r.disks.get_mut(disk) {
                s.uploaded |= uploaded;
            }
        });
    }

    fn is_ready(&self, id: &str) -> bool {
        lock(&self.map)
            .get(id)
            .is_some_and(|l| l.state == LeaseState::Ready)
    }
}

/// HttpNfcLeaseInfo of a ready lease.
fn info(id: &str, lease: &Lease, host_addr: &dyn Fn(&str) -> String, faults: &Faults) -> String {
    let host = lease
        .host
        .as_deref()
        .map_or_else(|| "*".to_string(), host_addr);
    let folder = format!("https://{host}/nfc/{id}/");
    let mut out = format!(
        "{}{}",
        moref("lease", "HttpNfcLease", id),
        moref("entity", "VirtualMachine", &lease.vm)
    );
    for d in &lease.disks {
        let _ = write!(
            out,
            "<deviceUrl><key>{}</key><importKey>{}</importKey><url>{}{}</url>\
             <sslThumbprint></sslThumbprint><disk>true</disk><targetId>{}</targetId>\
             <datastoreKey>{}</datastoreKey></deviceUrl>",
            escape(&d.key),
            escape(&d.import_key),
            escape(&folder),
            escape(&d.target),
            escape(&d.target),
            escape(&folder),
        );
    }
    let total_kb: u64 = lease
        .disks
        .iter()
        .map(|d| d.capacity_bytes.div_ceil(1024))
        .sum();
    let _ = write!(
        out,
        "<totalDiskCapacityInKB>{total_kb}</totalDiskCapacityInKB><leaseTimeout>{}</leaseTimeout>",
        timeout(faults).as_secs()
    );
    out
}

/// A disk taken for an upload.
struct Upload {
    disk: usize,
    data_file: String,
    capacity_bytes: u64,
}

/// The request body as the upload reads it: paced by the file service's
/// throttle, counted, and cut by the `nfc-cut-after` fault.
struct Incoming<'a, 'b> {
    body: &'a mut Body<'b>,
    throttle: &'a FolderThrottle,
    stats: &'a Stats,
    lease: &'a str,
    disk: usize,
    cut_after: Option<u64>,
    read: u64,
    cut: bool,
}

impl Read for Incoming<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = match self.cut_after {
            Some(limit) if self.read >= limit => {
                self.cut = true;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the upload was cut (fault injected by the lab)",
                ));
            }
            Some(limit) => buf.len().min((limit - self.read) as usize),
            None => buf.len(),
        };
        let n = self.body.read(&mut buf[..room])?;
        self.read += n as u64;
        self.throttle.pace(n as u64);
        self.stats
            .nfc_received(self.lease, self.disk, n as u64, 0, 0);
        Ok(n)
    }
}

/// Grains into the flat extent with positioned writes; zero grains are
/// counted and not written (the extent is sparse and starts empty).
struct Extent<'a> {
    file: std::fs::File,
    leases: &'a Leases,
    lease: &'a str,
    disk: usize,
}

impl GrainSink for Extent<'_> {
    fn grain(&mut self, offset_bytes: u64, data: &[u8], zero: bool) -> io::Result<()> {
        if !self.leases.is_ready(self.lease) {
            return Err(io::Error::other("the lease is no longer ready"));
        }
        self.leases
            .stats
            .nfc_received(self.lease, self.disk, 0, 1, u64::from(zero));
        if zero {
            return Ok(());
        }
        self.file.write_all_at(data, offset_bytes)
    }
}

/// `/nfc/<lease>/<target>` on the standalone host's server (`here`
/// `None`) or on the vCenter host `here`'s own.
pub fn serve_upload(
    leases: &Leases,
    store: &Store,
    faults: &Faults,
    here: Option<&str>,
    head: &Head,
    body: &mut Body<'_>,
) -> Response {
    if !matches!(head.method.as_str(), "POST" | "PUT") {
        return Response::text(405, "an NFC disk target takes POST or PUT")
            .header("Allow", "POST, PUT");
    }
    let Some((id, target)) = head
        .path()
        .strip_prefix("/nfc/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(id, t)| !id.is_empty() && !t.is_empty() && !t.contains('/'))
    else {
        return Response::text(404, "not an NFC target");
    };
    leases.expire(store, faults);
    let upload = match leases.begin_upload(id, target, here) {
        Ok(u) => u,
        Err(r) => return r.closing(),
    };
    let file = match import::open_extent(
        &store.datastore_root(),
        &upload.data_file,
        upload.capacity_bytes,
    ) {
        Ok(f) => f,
        Err(e) => {
            leases.end_upload(id, upload.disk, false);
            return Response::text(500, format!("cannot open the disk: {e}")).closing();
        }
    };
    let mut incoming = Incoming {
        body,
        throttle: &faults.folder,
        stats: &leases.stats,
        lease: id,
        disk: upload.disk,
        cut_after: faults.take_nfc_cut(),
        read: 0,
        cut: false,
    };
    let mut extent = Extent {
        file,
        leases,
        lease: id,
        disk: upload.disk,
    };
    let decoded = vmdk_stream::decode(&mut incoming, upload.capacity_bytes, &mut extent).and_then(
        |summary| {
            extent.file.sync_all().map_err(StreamError::Write)?;
            // What follows the end-of-stream marker is read and counted.
            io::copy(&mut incoming, &mut io::sink()).map_err(StreamError::Read)?;
            Ok(summary)
        },
    );
    let ok = decoded.is_ok() && leases.is_ready(id);
    leases.end_upload(id, upload.disk, ok);
    if incoming.cut {
        return Response::cut();
    }
    match decoded {
        Ok(_) if ok => Response::text(200, ""),
        Ok(_) => Response::text(403, "the lease ended during the upload"),
        Err(StreamError::Write(e)) if !leases.is_ready(id) => {
            Response::text(403, format!("the lease ended during the upload: {e}")).closing()
        }
        Err(e @ StreamError::Write(_)) => Response::text(500, e.to_string()).closing(),
        Err(e) => Response::text(
            400,
            format!("not a streamOptimized VMDK for this disk: {e}"),
        )
        .closing(),
    }
}

/// A thread that expires the import leases whose client went quiet, so a
/// killed client's lease ends even when no request comes; it stops when
/// dropped.
pub struct Reaper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    const TICK: Duration = Duration::from_millis(100);

    /// Runs `expire` every tick.
    pub fn start(expire: impl Fn() + Send + 'static) -> io::Result<Reaper> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lab-leases".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    expire();
                    std::thread::sleep(Self::TICK);
                }
            })?;
        Ok(Reaper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
