//! The hosts' NAS datastores, as a `HostDatastoreSystem`
//! (`HostSystem.configManager.datastoreSystem`) serves them:
//! `CreateNasDatastore` mounts an NFS v3 export through the lab's NFS
//! client (`nas`) and `RemoveDatastore` forgets it (vSphere API reference,
//! HostDatastoreSystem; govmomi's simulator,
//! `simulator/host_datastore_system.go`, answers the same faults).
//!
//! A VM registered from a NAS datastore lives there: the host reads and
//! writes its .vmx, descriptors, disks and lock files through NFS
//! (`Files`), never through the lab's datastore folder. The lab keeps no
//! connection open between calls: each operation mounts the export
//! again, which a stateless NFS v3 server cannot tell from one long mount
//! (RFC 1813 §1.3, "the NFS protocol is stateless").

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::boot;
use super::state::{DATASTORE, Fault, State, Store, Vm, datastore_type};
use super::wire::moref;
use crate::instant::client::Nas;
use crate::vsphere::soap::escape;

/// An NFS v3 export a host mounted as a datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NasDatastore {
    /// The datastore's name (`spec.localPath`), also its moref value.
    pub name: String,
    pub remote_host: String,
    pub remote_path: String,
    /// The host moref that mounted it.
    pub host: String,
}

impl NasDatastore {
    /// Mounts the export again; a failure is the datastore being
    /// inaccessible.
    pub fn mount(&self) -> Result<Nas, Fault> {
        Nas::mount(&self.remote_host, &self.remote_path).map_err(|e| {
            Fault::new(
                "InaccessibleDatastore",
                format!("The datastore {} is not accessible: {e}", self.name),
            )
            .with("datastore", self.name.clone())
            .with("name", self.name.clone())
        })
    }
}

/// The `HostNasVolumeSpec` of a CreateNasDatastore call.
#[derive(Debug, Clone, Default)]
pub struct NasSpec {
    pub remote_host: String,
    pub remote_path: String,
    pub local_path: String,
    pub access_mode: String,
    pub kind: String,
}

/// The moref value of `host`'s datastore system: `ha-datastoresystem` on
/// a standalone host, as ESXi names it, one per host under a vCenter.
pub fn datastore_system_of(host: &str) -> String {
    if host == "ha-host" {
        "ha-datastoresystem".into()
    } else {
        format!("datastoreSystem-{host}")
    }
}

/// The host whose datastore system `value` is, if the lab has it.
fn host_of(st: &State, value: &str) -> Result<String, Fault> {
    let host = match value {
        "ha-datastoresystem" => "ha-host",
        v => v.strip_prefix("datastoreSystem-").unwrap_or(""),
    };
    super::inventory::datacenters(st.vcenter)
        .iter()
        .find(|d| d.host == host)
        .map(|d| d.host.to_string())
        .ok_or_else(|| Fault::not_found("HostDatastoreSystem", value))
}

impl State {
    /// The NAS datastore `name`, if one is mounted.
    pub fn nas(&self, name: &str) -> Option<&NasDatastore> {
        self.nas_datastores.iter().find(|d| d.name == name)
    }
}

fn invalid(property: &str, message: String) -> Fault {
    Fault::new("InvalidArgument", message).with("invalidProperty", property)
}

/// What CreateNasDatastore refuses before it mounts anything; answers the
/// host. The names ESXi gives its faults for it (vSphere API reference,
/// HostDatastoreSystem.CreateNasDatastore): `DuplicateName` for a name in
/// use, `AlreadyExists` for a remote already mounted on the host.
fn check_create(st: &State, system: &str, spec: &NasSpec) -> Result<String, Fault> {
    let host = host_of(st, system)?;
    if spec.kind != "NFS" {
        // NFS 4.1 (`NFS41`) needs sessions the lab's client does not speak.
        return Err(Fault::new(
            "NotSupported",
            format!("the lab mounts NFS v3 exports only, not {:?}", spec.kind),
        ));
    }
    if spec.remote_host.is_empty() {
        return Err(invalid("remoteHost", "a remote host is required".into()));
    }
    if !spec.remote_path.starts_with('/') {
        return Err(invalid(
            "remotePath",
            format!("the remote path {:?} is not absolute", spec.remote_path),
        ));
    }
    if !matches!(spec.access_mode.as_str(), "readWrite" | "readOnly") {
        return Err(invalid(
            "accessMode",
            format!("no access mode {:?}", spec.access_mode),
        ));
    }
    let name = &spec.local_path;
    let valid = !name.is_empty()
        && name.len() <= 42
        && !name.contains(['/', '[', ']'])
        && name.trim() == name;
    if !valid {
        // Datastore names are at most 42 characters (vSphere Storage
        // guide, "Datastore names").
        return Err(invalid("localPath", format!("bad datastore name {name:?}")));
    }
    if datastore_type(name).is_some() || st.nas(name).is_some() {
        return Err(Fault::new(
            "DuplicateName",
            format!("The name '{name}' already exists."),
        )
        .with("name", name.clone()));
    }
    if let Some(d) = st.nas_datastores.iter().find(|d| {
        d.host == host && d.remote_host == spec.remote_host && d.remote_path == spec.remote_path
    }) {
        let remote = format!("{}:{}", spec.remote_host, spec.remote_path);
        return Err(Fault::new(
            "AlreadyExists",
            format!(
                "The specified key, name, or identifier '{remote}' already exists (datastore {}).",
                d.name
            ),
        )
        .with("name", remote));
    }
    Ok(host)
}

/// CreateNasDatastore: the host mounts the export (the portmapper, MOUNT
/// and NFS must answer) and records it; answers the datastore's name, its
/// moref value. A mount that fails is a `HostConfigFault` with the
/// client's error, as ESXi reports "NFS mount host:/path failed: …".
pub fn create(store: &Store, system: &str, spec: &NasSpec) -> Result<String, Fault> {
    store.read(|st, _| check_create(st, system, spec))?;
    // Outside the lab's lock: the server may be slow to answer.
    let nas = Nas::mount(&spec.remote_host, &spec.remote_path).map_err(|e| {
        Fault::new(
            "HostConfigFault",
            format!(
                "An error occurred during host configuration: NFS mount {}:{} failed: {e}",
                spec.remote_host, spec.remote_path
            ),
        )
    })?;
    drop(nas);
    store.update(|st, _| {
        let host = check_create(st, system, spec)?;
        st.nas_datastores.push(NasDatastore {
            name: spec.local_path.clone(),
            remote_host: spec.remote_host.clone(),
            remote_path: spec.remote_path.clone(),
            host,
        });
        Ok(spec.local_path.clone())
    })
}

/// RemoveDatastore of a NAS datastore: refused with `ResourceInUse` while a
/// registered VM lives on it (vSphere API reference,
/// HostDatastoreSystem.RemoveDatastore), else forgotten. The lab's own
/// datastores stay.
pub fn remove(store: &Store, system: &str, datastore: &str) -> Result<(), Fault> {
    let gone = store.update(|st, _| {
        let host = host_of(st, system)?;
        if datastore_type(datastore).is_some() {
            return Err(Fault::new(
                "NotSupported",
                format!("the lab removes NAS datastores only, not {datastore}"),
            ));
        }
        let d = st
            .nas(datastore)
            .filter(|d| d.host == host)
            .cloned()
            .ok_or_else(|| Fault::not_found("Datastore", datastore))?;
        if let Some(v) = st.vms.iter().find(|v| v.nas.as_deref() == Some(datastore)) {
            return Err(Fault::new(
                "ResourceInUse",
                format!(
                    "The resource '{datastore}' is in use: VM {} is registered on it.",
                    v.name
                ),
            )
            .with("type", "Datastore")
            .with("name", datastore));
        }
        st.nas_datastores.retain(|x| x.name != datastore);
        Ok(d)
    })?;
    // MOUNT's UMNT tells the server the host is done (RFC 1813 Appendix
    // I). A server already gone has nothing to be told, and ESXi removes
    // an inaccessible NFS datastore all the same.
    if let Ok(nas) = Nas::mount(&gone.remote_host, &gone.remote_path) {
        let _ = nas.unmount();
    }
    Ok(())
}

/// The names of the datastores `host` has: the lab's own and the NAS ones
/// among `nas` it mounted.
pub fn datastores_of(nas: &[NasDatastore], host: &str) -> Vec<String> {
    super::state::DATASTORES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(
            nas.iter()
                .filter(|d| d.host == host)
                .map(|d| d.name.clone()),
        )
        .collect()
}

/// An `ArrayOfManagedObjectReference` property of datastores.
pub fn datastores_prop(name: &str, datastores: &[String]) -> String {
    let mut out =
        format!("<propSet><name>{name}</name><val xsi:type=\"ArrayOfManagedObjectReference\">");
    for d in datastores {
        out.push_str(&moref("ManagedObjectReference", "Datastore", d));
    }
    out.push_str("</val></propSet>");
    out
}

/// A HostDatastoreSystem's properties: `datastore`, its host's datastores.
pub fn object(st: &State, system: &str, paths: &[String], all: bool) -> Result<String, Fault> {
    let host = host_of(st, system)?;
    let mut out = format!("<objects>{}", moref("obj", "HostDatastoreSystem", system));
    if all || paths.iter().any(|p| p == "datastore") {
        out.push_str(&datastores_prop(
            "datastore",
            &datastores_of(&st.nas_datastores, &host),
        ));
    }
    out.push_str("</objects>");
    Ok(out)
}

/// The properties of NAS datastore `d`: its `summary` (type `NFS`), and
/// `info.nas` (a NasDatastoreInfo: the remote host and path, vSphere API
/// reference, HostNasVolume). The lab reports no capacity.
pub fn nas_datastore_object(d: &NasDatastore, paths: &[String], all: bool) -> String {
    let name = escape(&d.name);
    let url = format!(
        "ds:///vmfs/volumes/{}/",
        super::state::hex_id(&format!("{}:{}", d.remote_host, d.remote_path), 8)
    );
    let summary = format!(
        "{}<name>{name}</name><url>{url}</url><capacity>0</capacity><freeSpace>0</freeSpace>\
         <accessible>true</accessible><multipleHostAccess>false</multipleHostAccess><type>NFS</type>",
        moref("datastore", "Datastore", &d.name),
    );
    let nas = format!(
        "<name>{name}</name><url>{url}</url><freeSpace>0</freeSpace><nas><type>NFS</type><name>{name}</name>\
         <capacity>0</capacity><remoteHost>{}</remoteHost><remotePath>{}</remotePath></nas>",
        escape(&d.remote_host),
        escape(&d.remote_path)
    );
    let prop = |path: &str, kind: &str, inner: &str| {
        format!("<propSet><name>{path}</name><val xsi:type=\"{kind}\">{inner}</val></propSet>")
    };
    let wanted: Vec<&str> = if all || paths.is_empty() {
        vec!["name", "summary", "info"]
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let mut out = format!("<objects>{}", moref("obj", "Datastore", &d.name));
    for path in wanted {
        out.push_str(&match path {
            "name" | "summary.name" => prop(path, "xsd:string", &name),
            "summary.type" => prop(path, "xsd:string", "NFS"),
            "summary.accessible" => prop(path, "xsd:boolean", "true"),
            "summary.url" => prop(path, "xsd:string", &url),
            "summary" => prop(path, "DatastoreSummary", &summary),
            "info" => prop(path, "NasDatastoreInfo", &nas),
            "info.nas.remoteHost" => prop(path, "xsd:string", &escape(&d.remote_host)),
            "info.nas.remotePath" => prop(path, "xsd:string", &escape(&d.remote_path)),
            _ => continue,
        });
    }
    out.push_str("</objects>");
    out
}

/// Where the host reads and writes a VM's files: the lab's datastore
/// folder, or a NAS datastore through NFS. Paths are relative to the
/// datastore (`dir/file`).
pub enum Files {
    Local(PathBuf),
    Nas(Box<Nas>),
}

impl Files {
    /// The files of `vm`'s home datastore; a NAS one is mounted now.
    pub fn of(st: &State, root: &Path, vm: &Vm) -> Result<Files, Fault> {
        match &vm.nas {
            None => Ok(Files::Local(root.to_path_buf())),
            Some(name) => Files::of_datastore(st, root, name),
        }
    }

    /// The files of datastore `name` (`datastore1` or a NAS one).
    pub fn of_datastore(st: &State, root: &Path, name: &str) -> Result<Files, Fault> {
        if name == DATASTORE {
            return Ok(Files::Local(root.to_path_buf()));
        }
        let d = st
            .nas(name)
            .ok_or_else(|| Fault::not_found("Datastore", name))?;
        Ok(Files::Nas(Box::new(d.mount()?)))
    }

    pub fn read(&mut self, rel: &str) -> io::Result<Vec<u8>> {
        match self {
            Files::Local(root) => std::fs::read(root.join(rel)),
            Files::Nas(nas) => nas.read_all(rel),
        }
    }

    pub fn read_string(&mut self, rel: &str) -> io::Result<String> {
        String::from_utf8(self.read(rel)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{rel}: {e}")))
    }

    /// Replaces `rel`'s content (NFS: SETATTR to size 0, then WRITE).
    pub fn write(&mut self, rel: &str, data: &[u8]) -> io::Result<()> {
        match self {
            Files::Local(root) => std::fs::write(root.join(rel), data),
            Files::Nas(nas) => nas.write_file(rel, data),
        }
    }
}

/// Whether every disk of the NAS VM `vm` boots, read through NFS as the
/// guest would read it (see `boot::check`).
pub fn boots_over_nfs(nas: &mut Nas, vm: &Vm) -> bool {
    let nas = RefCell::new(nas);
    !vm.disks.is_empty()
        && vm.disks.iter().all(|d| {
            let file = &d.layers[0].data_file;
            let read = |at: u64, len: usize| {
                if at.saturating_add(len as u64) > d.capacity_bytes {
                    return Err(io::Error::other("beyond the end of the disk"));
                }
                let data = nas.borrow_mut().read_at(file, at, len as u64)?;
                if data.len() < len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{file} ends before {}", at + len as u64),
                    ));
                }
                Ok(data)
            };
            boot::check(d.capacity_bytes, &read).is_ok()
        })
}

/// The lock file ESXi keeps beside a file it holds open on an NFS v3
/// datastore: `.lck-` and the locked file's NFS fileid in hex (VMware KB
/// 1007909, "Understanding the NFS locking mechanism"). Answers its path.
pub fn take_lock(nas: &mut Nas, file: &str, owner: &str) -> io::Result<String> {
    let (_, attr) = nas.resolve(file)?;
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    let lock = if dir.is_empty() {
        format!(".lck-{:016x}", attr.fileid)
    } else {
        format!("{dir}/.lck-{:016x}", attr.fileid)
    };
    nas.write_file(
        &lock,
        format!("exclusive lock held by {owner}\n").as_bytes(),
    )?;
    Ok(lock)
}

/// A Storage vMotion of the whole NAS VM `vm` (RelocateVM_Task with
/// `spec.datastore`) onto the lab's own datastore `datastore`: the host
/// copies the VM's home folder (its .vmx, NVRAM, descriptors and extents,
/// not the lock files) off the NAS datastore through NFS, releases its
/// locks there, and the VM runs on from the copy without a power cycle
/// (vSphere API reference, RelocateVM_Task: a powered-on VM is relocated
/// by Storage vMotion; "Migration with Storage vMotion" in the vCenter
/// Server and Host Management guide: the VM's files move, it keeps
/// running). Only whole-VM moves of a NAS VM, to a datastore that is not
/// NAS, are modelled.
pub fn relocate_home(
    state: &mut State,
    root: &Path,
    vm: &str,
    datastore: &str,
) -> Result<(), Fault> {
    if datastore_type(datastore).is_none() {
        return Err(Fault::not_found("Datastore", datastore));
    }
    let v = state
        .vms
        .iter()
        .find(|v| v.name == vm || v.moref() == vm)
        .ok_or_else(|| Fault::not_found("VirtualMachine", vm))?
        .clone();
    let Files::Nas(mut nas) = Files::of(state, root, &v)? else {
        return Err(Fault::new(
            "InvalidState",
            format!("{} is not on a NAS datastore", v.name),
        ));
    };
    let dir = v.dir().to_string();
    let to = super::state::datastore_folder(root, datastore).join(&dir);
    if to.exists() {
        return Err(Fault::new(
            "FileAlreadyExists",
            format!("File [{datastore}] {dir} already exists"),
        )
        .with("file", format!("[{datastore}] {dir}")));
    }
    std::fs::create_dir_all(&to)?;
    for name in nas.list(&dir)? {
        if name.starts_with(".lck-") {
            continue;
        }
        nas.copy_sparse(&format!("{dir}/{name}"), &to.join(&name))?;
    }
    for lock in &v.nas_locks {
        let _ = nas.remove(lock);
    }
    let v = state.vm_mut(&v.moref())?;
    v.nas = None;
    v.nas_vmx = None;
    v.nas_boots = None;
    v.nas_locks.clear();
    for d in &mut v.disks {
        d.datastore = (datastore != DATASTORE).then(|| datastore.to_string());
    }
    Ok(())
}

/// The NotSupported fault of what the lab does not do to a VM on a NAS
/// datastore (snapshots, and so backups, and Storage vMotion).
pub fn refuse_nas(vm: &Vm, what: &str) -> Result<(), Fault> {
    match &vm.nas {
        Some(ds) => Err(Fault::new(
            "NotSupported",
            format!(
                "the lab does not {what} VMs on NAS datastores ({} is on {ds})",
                vm.name
            ),
        )),
        None => Ok(()),
    }
}
