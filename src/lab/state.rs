//! The lab's persistent state: the VMs, their disks, snapshots and change
//! tracking, in `state.json` beside a `datastore/` folder that holds the
//! files. Every operation takes an flock on `lab.lock`, reloads the state,
//! changes it and writes it back atomically, so a running lab and
//! `coffer lab write` in another process never corrupt each other.
//!
//! The operations on it (`ops`) answer a `Fault` (a vim25 fault name, its
//! message and its fields) when they fail the way a host would; the SOAP
//! layer sends it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::disk::{Disk, Layer, flat_descriptor};
use super::image::Image;
use super::{boot, content};
use crate::vsphere::delta::DeltaFormat;

pub const DATASTORE: &str = "datastore1";
/// The lab's second datastore, an NFS export as ESXi mounts one
/// (`summary.type` "NFS"); disks get there by a Storage vMotion
/// (`ops::relocate_disks`).
pub const NFS_DATASTORE: &str = "nfs1";
/// Every datastore of the lab with its `summary.type` (vSphere API
/// reference, DatastoreSummary.type: "VMFS", "NFS", "NFS41", "vsan", …).
pub const DATASTORES: &[(&str, &str)] = &[(DATASTORE, "VMFS"), (NFS_DATASTORE, "NFS")];

/// The `summary.type` of the lab's datastore `name`.
pub fn datastore_type(name: &str) -> Option<&'static str> {
    DATASTORES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The folder of datastore `name`, given `root`, the folder of
/// `datastore1` (`Store::datastore_root`): the other datastores' folders
/// sit beside it (`datastore-nfs1`), so no datastore's path reaches into
/// another's.
pub fn datastore_folder(root: &Path, name: &str) -> PathBuf {
    if name == DATASTORE {
        root.to_path_buf()
    } else {
        root.with_file_name(format!("datastore-{name}"))
    }
}
pub const DATACENTER: &str = "ha-datacenter";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lab.lock";

/// A vim25 fault an operation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub name: String,
    pub message: String,
    /// Child elements of the fault (`file`, `invalidProperty`, …).
    pub fields: Vec<(String, String)>,
    /// Managed object references among them (field, type, value), written
    /// after `fields` (DuplicateName's `object`).
    pub refs: Vec<(String, String, String)>,
}

impl Fault {
    pub fn new(name: &str, message: impl Into<String>) -> Fault {
        Fault {
            name: name.into(),
            message: message.into(),
            fields: Vec::new(),
            refs: Vec::new(),
        }
    }

    pub fn with(mut self, field: &str, value: impl Into<String>) -> Fault {
        self.fields.push((field.into(), value.into()));
        self
    }

    /// A managed object reference field.
    pub fn with_ref(mut self, field: &str, kind: &str, value: &str) -> Fault {
        self.refs.push((field.into(), kind.into(), value.into()));
        self
    }

    pub fn not_found(kind: &str, id: &str) -> Fault {
        Fault::new(
            "ManagedObjectNotFound",
            format!(
                "The object '{kind}:{id}' has already been deleted or has not been completely created"
            ),
        )
    }
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        Fault::new("SystemError", e.to_string()).with("reason", e.to_string())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotDisk {
    pub key: i32,
    pub change_id: Option<String>,
    pub cbt_seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub create_time: DateTime<Utc>,
    pub quiesced: bool,
    pub disks: Vec<SnapshotDisk>,
    /// The VSS manifest a quiesced snapshot of a Windows guest with
    /// `disk.EnableUUID` got, relative to the datastore (see `guest`).
    #[serde(default)]
    pub vss_manifest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub id: u64,
    pub name: String,
    pub instance_uuid: String,
    /// The .vmx, relative to the datastore root.
    pub vmx: String,
    pub powered_on: bool,
    /// `config.changeTrackingEnabled`: what was asked; the disks follow at
    /// the next snapshot.
    pub cbt_enabled: bool,
    /// CBT was turned off since the last snapshot: the next one that finds
    /// it on again starts a new change id.
    pub cbt_reset: bool,
    pub consolidation_needed: bool,
    /// vSphere VM Encryption's key (`config.keyId`: its CryptoKeyId's
    /// `keyId`), when the VM is encrypted; the lab keeps the disks in
    /// clear, only the host's answers say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,
    /// The delta format of this VM's next snapshots, when set; otherwise
    /// the datastore's (see `State::vmfs6`).
    #[serde(default)]
    pub delta_format: Option<DeltaFormat>,
    /// The question the VM asks (`runtime.question`), holding up the
    /// power-on task `task` until AnswerVM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    pub disks: Vec<Disk>,
    /// The snapshot chain, root first; the last one is the current one.
    pub snapshots: Vec<Snapshot>,
    /// The NAS datastore holding the VM's files (its .vmx, `vmx` relative
    /// to it, and its disks), when not `datastore1`: the host reaches
    /// them through NFS (see `datastore_system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nas: Option<String>,
    /// The host the VM was registered on, when the lab's placement by id
    /// does not say (a NAS VM sits on the host that mounted its datastore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The VM folder it was registered or imported into (its `parent`),
    /// when not its datacenter's own `vmFolder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The resource pool it was registered or imported into (its
    /// `resourcePool`), when not its compute resource's root pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A NAS VM's .vmx as the host last read or wrote it through NFS, so
    /// property reads do not go to the NFS server each time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nas_vmx: Option<String>,
    /// Whether a NAS VM's guest booted: `boot::check` read through NFS at
    /// its power-on; `None` while it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nas_boots: Option<bool>,
    /// The lock files the host holds in a NAS VM's folder while it runs
    /// (see `datastore_system::take_lock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nas_locks: Vec<String>,
    /// The HttpNfcLease of the OVF import that is making this VM, while it
    /// is held (see `import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_lease: Option<String>,
}

/// A question a lab VM asks: only "moved or copied?" (`msg.uuid.altered`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    /// The PowerOnVM_Task that waits for the answer.
    pub task: String,
}

/// The `uuid.location` a host writes for a VM whose .vmx is at `vmx`: a
/// hash of the path, so a VM whose files moved finds another one. The
/// format is the .vmx's: 16 bytes, a dash after the eighth.
pub fn location_uuid(vmx: &str) -> String {
    uuid_bytes(&format!("location/{vmx}"))
}

/// 16 bytes derived from `text`, as a .vmx writes UUIDs (`uuid.bios`,
/// `uuid.location`): "56 4d 12 … 9a-bc de … 01".
pub fn uuid_bytes(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    let hex: Vec<String> = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}", hex[..8].join(" "), hex[8..].join(" "))
}

impl Vm {
    pub fn moref(&self) -> String {
        format!("vm-{}", self.id)
    }

    pub fn dir(&self) -> &str {
        self.vmx.rsplit_once('/').map_or("", |(d, _)| d)
    }

    /// The datastore of the VM's home (its .vmx).
    pub fn home_datastore(&self) -> &str {
        self.nas.as_deref().unwrap_or(DATASTORE)
    }

    /// Whether the guest boots: every disk still carries what `boot::check`
    /// looks for (read through the live view). A NAS VM answers what its
    /// last power-on read through NFS.
    pub fn boots(&self, root: &Path) -> bool {
        if self.nas.is_some() {
            return self.nas_boots.unwrap_or(false);
        }
        !self.disks.is_empty()
            && self.disks.iter().all(|d| {
                let read = |at: u64, len: usize| {
                    if at.saturating_add(len as u64) > d.capacity_bytes {
                        return Err(io::Error::other("beyond the end of the disk"));
                    }
                    let mut buf = vec![0u8; len];
                    d.read(root, d.top(), at, &mut buf).map(|_| buf)
                };
                boot::check(d.capacity_bytes, &read).is_ok()
            })
    }

    /// The VM's .vmx as the host reads it now (empty when it cannot).
    pub fn vmx_text(&self, root: &Path) -> String {
        if self.nas.is_some() {
            return self.nas_vmx.clone().unwrap_or_default();
        }
        std::fs::read_to_string(root.join(&self.vmx)).unwrap_or_default()
    }

    pub fn tools_running(&self, root: &Path) -> bool {
        self.powered_on && self.boots(root)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub user: String,
    pub password: String,
    pub next_id: u64,
    pub vms: Vec<Vm>,
    /// The most VMs that had a snapshot at the same moment (all lab VMs
    /// share one datastore): how tests see a runner's per-datastore limit.
    #[serde(default)]
    pub most_snapshots_at_once: u32,
    /// The datastore is VMFS6, where ESXi writes every snapshot delta as
    /// SEsparse; on VMFS5 it writes vmfsSparse for disks up to 2 TiB and
    /// SEsparse beyond (vSphere Storage guide, "Snapshot Formats",
    /// docs.vmware.com GUID-88E5A594-DEBC-4662-812F-EA421591C70F).
    #[serde(default)]
    pub vmfs6: bool,
    /// The lab answers as a vCenter with two datacenters and a host in
    /// each (see `inventory`), not as a standalone host.
    #[serde(default)]
    pub vcenter: bool,
    /// By host moref, the most of its VMs that had a snapshot at the same
    /// moment: how tests see a runner's per-host limit.
    #[serde(default)]
    pub most_snapshots_per_host: std::collections::BTreeMap<String, u32>,
    /// By host moref, its switches and port groups, once changed (an
    /// unchanged host has an installation's defaults, see `hostnet`).
    #[serde(default)]
    pub host_networks: std::collections::BTreeMap<String, super::hostnet::HostNetwork>,
    /// The NFS exports the hosts mounted as datastores (see
    /// `datastore_system`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nas_datastores: Vec<super::datastore_system::NasDatastore>,
}

/// What a new lab disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewDisk {
    /// `capacity_bytes` (a whole number of MiB) of the lab's made-up,
    /// file-like data (see `content`).
    Generated { capacity_bytes: u64 },
    /// The content of the raw disk image at `path`, copied sparsely (see
    /// `image`); the disk is the image's size rounded up to a MiB, or
    /// `capacity_bytes` when that is given and larger.
    Image {
        path: PathBuf,
        capacity_bytes: Option<u64>,
    },
}

/// Why a `--disk` value is not a disk; each message follows `--disk `.
#[derive(Debug, thiserror::Error)]
pub enum NewDiskError {
    #[error("{spec}: {detail}; give a size (`4GiB`) or `image=FILE[,size=SIZE]`")]
    Size { spec: String, detail: String },
    #[error("{0}: no image file after `image=`")]
    NoImage(String),
}

impl std::str::FromStr for NewDisk {
    type Err = NewDiskError;

    /// `SIZE` (generated data) or `image=FILE[,size=SIZE]`.
    fn from_str(spec: &str) -> Result<NewDisk, NewDiskError> {
        let size = |s: &str| {
            crate::policy::units::parse_size(s)
                .map(|s| s.0)
                .map_err(|detail| NewDiskError::Size {
                    spec: spec.to_string(),
                    detail,
                })
        };
        let Some(rest) = spec.strip_prefix("image=") else {
            return Ok(NewDisk::Generated {
                capacity_bytes: size(spec)?,
            });
        };
        let (path, capacity_bytes) = match rest.rsplit_once(",size=") {
            Some((path, s)) => (path, Some(size(s)?)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(NewDiskError::NoImage(spec.to_string()));
        }
        Ok(NewDisk::Image {
            path: PathBuf::from(path),
            capacity_bytes,
        })
    }
}

/// A disk `Store::add_vm` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadeDisk {
    pub capacity_bytes: u64,
    /// What its flat extent holds outside holes: what the allocated-areas
    /// query (`*`) reports, and a first full reads.
    pub allocated_bytes: u64,
}

/// A disk to make: its capacity and, for an imported one, the image.
struct DiskPlan {
    capacity_bytes: u64,
    image: Option<Image>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A whole, non-zero number of MiB, as every lab disk is.
fn check_mib(bytes: u64) -> io::Result<u64> {
    if bytes == 0 || !bytes.is_multiple_of(content::MIB) {
        return Err(invalid(format!(
            "a lab disk is a whole number of MiB, not {bytes} bytes"
        )));
    }
    Ok(bytes)
}

impl NewDisk {
    /// Checks the size and opens the image, before anything is made.
    fn plan(&self) -> io::Result<DiskPlan> {
        match self {
            NewDisk::Generated { capacity_bytes } => Ok(DiskPlan {
                capacity_bytes: check_mib(*capacity_bytes)?,
                image: None,
            }),
            NewDisk::Image {
                path,
                capacity_bytes,
            } => {
                let wanted = capacity_bytes.map(check_mib).transpose()?;
                let image = Image::open(path)?;
                Ok(DiskPlan {
                    capacity_bytes: image.capacity_bytes(wanted)?,
                    image: Some(image),
                })
            }
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An flock held until dropped.
pub(super) struct FileLock(File);

impl FileLock {
    fn take(path: &Path, exclusive: bool) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

pub(super) fn hex_id(text: &str, len: usize) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))[..len].to_string()
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` derived from `text`.
pub(super) fn uuid_of(text: &str) -> String {
    crate::inventory::dashed_uuid(&hex_id(text, 32))
}

/// A fresh change tracking id, `52 xx … xx-xx … xx`.
pub(super) fn new_cbt_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes[0] = 0x52;
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}", hex[..8].join(" "), hex[8..].join(" "))
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lab's lock, held exclusively: for one-time setup beside the
    /// state (the TLS set), which several coffer processes starting the
    /// same lab at once must not each make.
    pub(super) fn lock(&self) -> io::Result<FileLock> {
        std::fs::create_dir_all(&self.dir)?;
        FileLock::take(&self.dir.join(LOCK_FILE), true)
    }

    pub fn datastore_root(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    fn load(&self) -> io::Result<Option<State>> {
        match std::fs::read(self.dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{STATE_FILE}: {e}"))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, state: &State) -> io::Result<()> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, self.dir.join(STATE_FILE))
    }

    /// Creates the state on first use (credentials, `vms` lab VMs) and adds
    /// lab VMs up to `vms` on later ones; never removes any.
    pub fn init(&self, vms: u32, user: &str, password: Option<&str>) -> io::Result<State> {
        self.init_with(vms, user, password, None)
    }

    /// As [`Store::init`]; new VMs take their instance UUIDs from
    /// `uuid_seed` and their names (see [`instance_uuid`]).
    pub fn init_with(
        &self,
        vms: u32,
        user: &str,
        password: Option<&str>,
        uuid_seed: Option<&str>,
    ) -> io::Result<State> {
        std::fs::create_dir_all(self.datastore_root())?;
        let _lock = FileLock::take(&self.dir.join(LOCK_FILE), true)?;
        let mut state = match self.load()? {
            Some(s) => s,
            None => {
                let password = match password {
                    Some(p) => p.to_string(),
                    None => {
                        let mut secret = [0u8; 12];
                        getrandom::fill(&mut secret).expect("the OS random source works");
                        hex::encode(secret)
                    }
                };
                State {
                    user: user.to_string(),
                    password,
                    next_id: 1,
                    vms: Vec::new(),
                    most_snapshots_at_once: 0,
                    vmfs6: false,
                    vcenter: false,
                    most_snapshots_per_host: Default::default(),
                    host_networks: Default::default(),
                    nas_datastores: Vec::new(),
                }
            }
        };
        let root = self.datastore_root();
        for n in 1..=vms {
            let name = format!("lab-vm-{n:02}");
            if state.vms.iter().any(|v| v.name == name) {
                continue;
            }
            // Odd VMs get two disks, even ones one.
            let sizes: &[u64] = if n % 2 == 1 {
                &[64 * content::MIB, 32 * content::MIB]
            } else {
                &[64 * content::MIB]
            };
            let plans: Vec<DiskPlan> = sizes
                .iter()
                .map(|&capacity_bytes| DiskPlan {
                    capacity_bytes,
                    image: None,
                })
                .collect();
            let id = state.next_id;
            state.next_id += 1;
            state
                .vms
                .push(make_lab_vm(&root, id, &name, &plans, uuid_seed)?);
        }
        self.save(&state)?;
        Ok(state)
    }

    /// Adds a VM named `name` with `disks` (thin: made-up data, or the
    /// content of a disk image), for tests and benchmarks that need other
    /// shapes than the numbered lab VMs. A name in use is refused; a bad
    /// size or an image that cannot be read is refused before anything is
    /// made.
    pub fn add_vm(&self, name: &str, disks: &[NewDisk]) -> io::Result<Vec<MadeDisk>> {
        let valid = !name.is_empty()
            && name.len() <= 80
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid || disks.is_empty() {
            return Err(invalid(format!(
                "a lab VM needs a name of letters, digits, `-`, `_` and `.` and at least one disk; got `{name}`"
            )));
        }
        let plans = disks
            .iter()
            .map(NewDisk::plan)
            .collect::<io::Result<Vec<_>>>()?;
        let _lock = FileLock::take(&self.dir.join(LOCK_FILE), true)?;
        let mut state = self.load()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no lab state here; start the lab once first",
            )
        })?;
        if state.vms.iter().any(|v| v.name == name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the lab already has a VM named {name}"),
            ));
        }
        let id = state.next_id;
        state.next_id += 1;
        let root = self.datastore_root();
        let vm = make_lab_vm(&root, id, name, &plans, None)?;
        let made = vm
            .disks
            .iter()
            .map(|d| {
                let flat = File::open(root.join(&d.layers[0].data_file))?;
                let allocated_bytes = super::disk::data_ranges(&flat, d.capacity_bytes)?
                    .iter()
                    .map(|r| r.end - r.start)
                    .sum();
                Ok(MadeDisk {
                    capacity_bytes: d.capacity_bytes,
                    allocated_bytes,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        state.vms.push(vm);
        self.save(&state)?;
        Ok(made)
    }

    /// Runs `f` on the current state under an exclusive lock and saves
    /// what it leaves, even when it fails (a failure may have changed state
    /// on purpose, as a failed consolidation does).
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut State, &Path) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let _lock = FileLock::take(&self.dir.join(LOCK_FILE), true)?;
        let mut state = self
            .load()?
            .ok_or_else(|| Fault::new("SystemError", "the lab state is missing"))?;
        let out = f(&mut state, &self.datastore_root());
        self.save(&state)?;
        out
    }

    /// Runs `f` on the current state under a shared lock.
    pub fn read<T>(&self, f: impl FnOnce(&State, &Path) -> Result<T, Fault>) -> Result<T, Fault> {
        let _lock = FileLock::take(&self.dir.join(LOCK_FILE), false)?;
        let state = self
            .load()?
            .ok_or_else(|| Fault::new("SystemError", "the lab state is missing"))?;
        f(&state, &self.datastore_root())
    }

    /// Holds the shared lock while `f` runs (a datastore download).
    pub fn with_shared_lock<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let _lock = FileLock::take(&self.dir.join(LOCK_FILE), false)?;
        Ok(f())
    }
}

/// The instance UUID of the lab VM `name`. Without a seed it depends on the
/// name alone, so two labs hold VMs with the same instance UUIDs: as two
/// standalone hosts (or two vCenters) do when a VM's files were copied from
/// one to the other, since `instanceUuid` is kept in the .vmx (`vc.uuid`)
/// and only a vCenter keeps it unique, among its own VMs (vSphere API
/// reference, `VirtualMachineConfigInfo.instanceUuid`). A seed gives a lab
/// VMs of its own.
fn instance_uuid(name: &str, uuid_seed: Option<&str>) -> String {
    match uuid_seed {
        None => uuid_of(&format!("instance/{name}")),
        Some(seed) => uuid_of(&format!("instance/{seed}/{name}")),
    }
}

/// A generated MAC address for the lab's VM `name`, under the OUI the host
/// generates addresses with (00:0C:29; VMware ESX Server Administration
/// Guide, "Using MAC Addresses").
pub fn lab_mac(name: &str) -> String {
    let mut rng = content::Rng::from_text(&format!("mac/{name}"));
    let b = rng.next_u64().to_le_bytes();
    format!("00:0c:29:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

fn make_lab_vm(
    root: &Path,
    id: u64,
    name: &str,
    disk_plans: &[DiskPlan],
    uuid_seed: Option<&str>,
) -> io::Result<Vm> {
    std::fs::create_dir_all(root.join(name))?;
    let mut disks = Vec::new();
    let mut vmx = format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n\
         displayName = \"{name}\"\nguestOS = \"other5xlinux-64\"\nmemSize = \"512\"\n\
         numvcpus = \"1\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"lsilogic\"\n\
         guestinfo.lab.tcp_ports = \"22,8022\"\nnvram = \"{name}.nvram\"\n\
         ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\n\
         ethernet0.networkName = \"VM Network\"\nethernet0.addressType = \"generated\"\n\
         ethernet0.generatedAddress = \"{}\"\nuuid.bios = \"{}\"\nuuid.location = \"{}\"\n",
        lab_mac(name),
        uuid_bytes(&format!("bios/{name}")),
        location_uuid(&format!("{name}/{name}.vmx")),
    );
    // The VM's NVRAM, beside its .vmx as the host keeps it (vSphere
    // Virtual Machine Administration, "Virtual Machine Files": `.nvram`
    // holds the BIOS or EFI configuration): 8 KiB of the VM's own bytes.
    let mut nvram = vec![0u8; 8192];
    content::Rng::from_text(&format!("nvram/{name}")).fill(&mut nvram);
    std::fs::write(root.join(name).join(format!("{name}.nvram")), nvram)?;
    for (i, plan) in disk_plans.iter().enumerate() {
        let capacity = plan.capacity_bytes;
        let stem = if i == 0 {
            name.to_string()
        } else {
            format!("{name}_{i}")
        };
        let descriptor = format!("{name}/{stem}.vmdk");
        let flat = format!("{name}/{stem}-flat.vmdk");
        match &plan.image {
            None => content::generate(&root.join(&flat), name, i, capacity)?,
            Some(image) => {
                image.write_flat(&root.join(&flat), capacity)?;
            }
        }
        std::fs::write(
            root.join(&descriptor),
            flat_descriptor(
                capacity,
                &format!("{stem}-flat.vmdk"),
                id as u32 * 16 + i as u32,
            ),
        )?;
        vmx.push_str(&format!(
            "scsi0:{i}.present = \"TRUE\"\nscsi0:{i}.fileName = \"{stem}.vmdk\"\n"
        ));
        disks.push(Disk {
            key: 2000 + i as i32,
            capacity_bytes: capacity,
            uuid: format!("6000C29{}", hex_id(&format!("{name}/{i}"), 25)),
            layers: vec![Layer {
                descriptor,
                data_file: flat,
                blocks: Default::default(),
                format: None,
                frozen_by: None,
            }],
            cbt: None,
            next_delta: 0,
            mode: None,
            datastore: None,
            rdm: None,
        });
    }
    let vmx_path = format!("{name}/{name}.vmx");
    std::fs::write(root.join(&vmx_path), vmx)?;
    Ok(Vm {
        id,
        name: name.to_string(),
        instance_uuid: instance_uuid(name, uuid_seed),
        vmx: vmx_path,
        powered_on: true,
        cbt_enabled: false,
        cbt_reset: false,
        consolidation_needed: false,
        encryption_key: None,
        delta_format: None,
        question: None,
        disks,
        snapshots: Vec::new(),
        nas: None,
        host: None,
        folder: None,
        pool: None,
        nas_vmx: None,
        nas_boots: None,
        nas_locks: Vec::new(),
        import_lease: None,
    })
}

impl State {
    pub fn vm(&self, moref: &str) -> Result<&Vm, Fault> {
        self.vms
            .iter()
            .find(|v| v.moref() == moref)
            .ok_or_else(|| Fault::not_found("VirtualMachine", moref))
    }

    pub fn vm_mut(&mut self, moref: &str) -> Result<&mut Vm, Fault> {
        self.vms
            .iter_mut()
            .find(|v| v.moref() == moref)
            .ok_or_else(|| Fault::not_found("VirtualMachine", moref))
    }

    /// The VM holding snapshot `snapshot-N`, and N.
    pub fn snapshot_owner(&self, moref: &str) -> Result<(&Vm, u64), Fault> {
        let id = snapshot_id(moref)?;
        self.vms
            .iter()
            .find(|v| v.snapshots.iter().any(|s| s.id == id))
            .map(|v| (v, id))
            .ok_or_else(|| Fault::not_found("VirtualMachineSnapshot", moref))
    }
}

pub fn snapshot_moref(id: u64) -> String {
    format!("snapshot-{id}")
}

pub(super) fn snapshot_id(moref: &str) -> Result<u64, Fault> {
    moref
        .strip_prefix("snapshot-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Fault::not_found("VirtualMachineSnapshot", moref))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{NewDisk, NewDiskError};

    #[test]
    fn a_new_disk_is_a_size_or_an_image_with_an_optional_size() {
        assert_eq!(
            "4MiB".parse::<NewDisk>().unwrap(),
            NewDisk::Generated {
                capacity_bytes: 4 << 20
            }
        );
        assert_eq!(
            "image=/tmp/a,b.img".parse::<NewDisk>().unwrap(),
            NewDisk::Image {
                path: PathBuf::from("/tmp/a,b.img"),
                capacity_bytes: None
            }
        );
        assert_eq!(
            "image=disk.raw,size=1GiB".parse::<NewDisk>().unwrap(),
            NewDisk::Image {
                path: PathBuf::from("disk.raw"),
                capacity_bytes: Some(1 << 30)
            }
        );
    }

    #[test]
    fn the_default_state_dir_is_coffers_lab_under_the_state_home() {
        assert!(crate::lab::default_state_dir().ends_with("coffer/lab"));
    }

    #[test]
    fn a_new_disk_refuses_what_is_neither() {
        let e = "lots".parse::<NewDisk>().unwrap_err();
        assert!(matches!(e, NewDiskError::Size { .. }));
        assert!(e.to_string().starts_with("lots: "), "{e}");
        assert!(
            e.to_string().ends_with("or `image=FILE[,size=SIZE]`"),
            "{e}"
        );
        let e = "image=,size=1GiB".parse::<NewDisk>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "image=,size=1GiB: no image file after `image=`"
        );
        assert!(matches!(
            "image=x,size=big".parse::<NewDisk>(),
            Err(NewDiskError::Size { .. })
        ));
    }
}
