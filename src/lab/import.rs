//! ResourcePool.ImportVApp: a VM made from a `configSpec` (`import_spec`)
//! as a host makes it, its folder on the datastore with a .vmx, disk
//! descriptors and empty thin (sparse) flat extents, registered powered
//! off on the right host, and held by an HttpNfcLease (`nfc`) until the
//! client completes or aborts the import. The .vmx is written in the form
//! `lifecycle::register` and the boot and guest code read, so once its
//! disks are uploaded the VM is an ordinary lab VM.
//!
//! "While the lease is held, operations that alter the state of the
//! virtual machines covered by the lease are blocked. Examples of blocked
//! operations are PowerOn, Destroy, Migrate" (vSphere API reference,
//! HttpNfcLease): the VM carries its lease (`Vm::import_lease`) and those
//! operations answer InvalidState (`refuse_while_importing`). "If the
//! lease belongs to an import session, all objects created during the
//! import are removed when the lease enters [the error] state" (ibid.):
//! `discard`. The lease lives in the lab's memory, the mark on the VM in
//! its state, so a VM whose lease died with a lab process is removed at
//! the next start (`discard_orphans`).

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::config_spec::{ConfigSpec, ScsiKind, canonical_uuid, disk_file_name};
use super::disk::flat_descriptor;
use super::inventory;
use super::lifecycle;
use super::state::{DATASTORE, Fault, State, Vm};

/// A VM's folder name on the datastore, checked: a path component that
/// reaches nowhere else (no separator, not `.` or `..`, no quote or control
/// character, which a .vmx value could not hold either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFolder(String);

impl VmFolder {
    pub fn new(name: &str) -> Result<VmFolder, Fault> {
        let ok = !name.is_empty()
            && name.len() <= 80
            && !name.starts_with('.')
            && name.trim() == name
            && !name
                .chars()
                .any(|c| matches!(c, '/' | '\\' | '"' | '[' | ']') || c.is_control());
        if !ok {
            return Err(Fault::new(
                "InvalidName",
                format!("'{name}' cannot name a VM and its folder in the lab"),
            )
            .with("name", name));
        }
        Ok(VmFolder(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where ImportVApp puts the VM: its `_this` pool and the optional
/// `folder` and `host`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub pool: String,
    pub folder: Option<String>,
    pub host: Option<String>,
}

/// One disk of an imported VM, for its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDisk {
    pub controller: ScsiKind,
    pub bus: u32,
    pub unit: u32,
    /// The flat extent, relative to the datastore.
    pub data_file: String,
    pub capacity_bytes: u64,
}

/// What ImportVApp made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub vm: String,
    pub name: String,
    /// The VM's folder, relative to the datastore.
    pub dir: String,
    /// The host it runs on under a vCenter.
    pub host: Option<String>,
    pub disks: Vec<ImportedDisk>,
}

/// InvalidState while `vm` is being imported.
pub fn refuse_while_importing(vm: &Vm) -> Result<(), Fault> {
    match &vm.import_lease {
        None => Ok(()),
        Some(_) => Err(Fault::new(
            "InvalidState",
            format!(
                "The operation is not allowed in the current state: VM {} is being imported \
                 and its HttpNfcLease is held.",
                vm.name
            ),
        )),
    }
}

/// The host of an import on a vCenter, after checking the pool, folder and
/// host as RegisterVM_Task does (`inventory::registered_host`); on a
/// standalone host only its own pool, VM folder and host are accepted.
fn host_of(vcenter: bool, place: &Placement) -> Result<Option<String>, Fault> {
    let invalid = |what: &str, value: &str| {
        Fault::new(
            "InvalidArgument",
            format!("A specified parameter was not correct: {what} {value}"),
        )
        .with("invalidProperty", what)
    };
    let dc = inventory::datacenter_of_pool(vcenter, &place.pool)
        .ok_or_else(|| Fault::not_found("ResourcePool", &place.pool))?;
    if !vcenter {
        if let Some(f) = place.folder.as_deref().filter(|f| *f != dc.vm_folder) {
            return Err(invalid("folder", f));
        }
        if let Some(h) = place.host.as_deref().filter(|h| *h != dc.host) {
            return Err(invalid("host", h));
        }
        return Ok(None);
    }
    // The folder defaults to the pool's datacenter's VM folder (govmomi's
    // simulator, `ResourcePool.ImportVApp`).
    let folder = place.folder.as_deref().unwrap_or(dc.vm_folder);
    let host = inventory::registered_host(true, folder, place.host.as_deref(), Some(&place.pool))?;
    Ok(host.map(str::to_string))
}

/// `[datastore1]` or `[datastore1] dir/name.vmx` → the VM's folder and
/// its .vmx's name.
fn home(spec: &ConfigSpec, name: &VmFolder) -> Result<(VmFolder, String), Fault> {
    let invalid = || {
        Fault::new(
            "InvalidDatastorePath",
            format!("Invalid datastore path '{}'.", spec.vm_path_name),
        )
        .with("datastorePath", &spec.vm_path_name)
    };
    let (ds, rest) = spec
        .vm_path_name
        .trim()
        .strip_prefix('[')
        .and_then(|p| p.split_once(']'))
        .ok_or_else(invalid)?;
    if ds != DATASTORE {
        return Err(Fault::new(
            "NotSupported",
            format!("The lab imports onto {DATASTORE} only, not {ds}."),
        ));
    }
    match rest.trim() {
        "" => Ok((name.clone(), format!("{}.vmx", name.as_str()))),
        path => {
            let (dir, file) = path.split_once('/').ok_or_else(invalid)?;
            let dir = VmFolder::new(dir).map_err(|_| invalid())?;
            if file.contains('/') || !file.ends_with(".vmx") || file.len() <= 4 {
                return Err(invalid());
            }
            Ok((dir, file.to_string()))
        }
    }
}

/// The disks' files in the VM's folder: the spec's names when they lie
/// there, ESXi's (`NAME.vmdk`, `NAME_1.vmdk`, …) when the spec leaves them
/// empty.
fn disk_files(spec: &ConfigSpec, dir: &VmFolder) -> Result<Vec<String>, Fault> {
    let mut names: Vec<String> = Vec::new();
    for (i, d) in spec.disks.iter().enumerate() {
        let name = if d.file_name.trim().is_empty() {
            disk_file_name(dir.as_str(), i)
        } else {
            let (ds, rel) = lifecycle::split_datastore_path(&d.file_name)?;
            let file = rel
                .strip_prefix(dir.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .filter(|f| !f.contains('/') && f.ends_with(".vmdk") && !f.starts_with('.'))
                .filter(|_| ds == DATASTORE)
                .ok_or_else(|| {
                    Fault::new(
                        "InvalidDatastorePath",
                        format!(
                            "The disk file {} is not in the VM's folder [{DATASTORE}] {}.",
                            d.file_name,
                            dir.as_str()
                        ),
                    )
                    .with("datastorePath", &d.file_name)
                })?;
            file.to_string()
        };
        if names.contains(&name) {
            return Err(Fault::new(
                "InvalidDeviceSpec",
                format!("Two disks are given the same file {name}."),
            )
            .with("deviceIndex", i.to_string()));
        }
        names.push(name);
    }
    Ok(names)
}

/// Checks the devices: disks on controllers of the spec, units free and
/// not the controller's own, sizes in whole sectors; at most ten network
/// cards, each on a named network.
fn check_devices(spec: &ConfigSpec) -> Result<(), Fault> {
    let bad = |i: usize, what: String| {
        Fault::new("InvalidDeviceSpec", what).with("deviceIndex", i.to_string())
    };
    let mut buses = std::collections::BTreeSet::new();
    for (i, c) in spec.controllers.iter().enumerate() {
        if c.bus > 3 || !buses.insert(c.bus) {
            return Err(bad(i, format!("SCSI bus {} is taken or beyond 0–3", c.bus)));
        }
    }
    let mut slots = std::collections::BTreeSet::new();
    for (i, d) in spec.disks.iter().enumerate() {
        if !spec.controllers.iter().any(|c| c.key == d.controller_key) {
            return Err(bad(
                i,
                format!("no controller with key {}", d.controller_key),
            ));
        }
        if d.unit >= 16 || d.unit == 7 || !slots.insert((d.controller_key, d.unit)) {
            return Err(bad(i, format!("unit {} is taken or not a disk's", d.unit)));
        }
        if d.capacity_bytes == 0 || !d.capacity_bytes.is_multiple_of(512) {
            return Err(bad(
                i,
                format!(
                    "{} bytes is not a whole number of sectors",
                    d.capacity_bytes
                ),
            ));
        }
    }
    if spec.nics.len() > 10 {
        return Err(bad(10, "a VM has at most ten network cards".into()));
    }
    if let Some(i) = spec.nics.iter().position(|n| n.network.trim().is_empty()) {
        return Err(bad(i, "a network card names no network".into()));
    }
    Ok(())
}

/// Whether an extraConfig key is one the spec sets through its own fields
/// (or the host writes): such keys are left out, as "you cannot set
/// values that could otherwise be set with other properties in the
/// VirtualMachineConfigSpec object" (vSphere Automation API,
/// `Ovf ExtraConfig`, on `extraConfig` and `vmw:ExtraConfig`).
fn host_owned(key: &str) -> bool {
    // The keys a client's OVF says another way are the host's own too;
    // a device's file is the device's to name (and a path the host reads).
    crate::run::ovf::carried_otherwise(key) || key.to_ascii_lowercase().ends_with(".filename")
}

/// `564d1234-…` as a .vmx writes `uuid.bios`: `56 4d 12 34 … 9a-bc …`.
fn vmx_uuid(uuid: &str) -> Option<String> {
    let hex: String = canonical_uuid(uuid)?
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let bytes: Vec<&str> = (0..16).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Some(format!("{}-{}", bytes[..8].join(" "), bytes[8..].join(" ")))
}

/// Whether a host keeps a generated MAC address a spec asks for: one in
/// a generated range (VMware KB 219: `00:0c:29` generated by an ESXi
/// host, `00:50:56:80`–`00:50:56:bf` by vCenter) that no other VM has;
/// "the server might override the specified value for Generated or
/// Assigned if it does not fall in the right ranges or is determined to
/// be a duplicate" (vSphere API reference, `VirtualEthernetCard.
/// macAddress`). Only a vCenter knows the other VMs; `taken` says which
/// addresses it finds on them.
fn keeps_generated(mac: &str, taken: &[String]) -> bool {
    let in_range = mac.starts_with("00:0c:29:")
        || mac
            .strip_prefix("00:50:56:")
            .and_then(|rest| u8::from_str_radix(&rest[..2.min(rest.len())], 16).ok())
            .is_some_and(|b| (0x80..=0xbf).contains(&b));
    in_range && !taken.iter().any(|t| t.eq_ignore_ascii_case(mac))
}

/// The .vmx of the VM, its disks named `files`; `taken`: the MAC
/// addresses of the other VMs (see `keeps_generated`).
fn vmx_text(
    spec: &ConfigSpec,
    name: &VmFolder,
    files: &[String],
    taken: &[String],
) -> Result<String, Fault> {
    let hw = spec
        .version
        .strip_prefix("vmx-")
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            Fault::new(
                "InvalidArgument",
                format!("`{}` is not a hardware version", spec.version),
            )
            .with("invalidProperty", "version")
        })?;
    let mut vmx = format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"{hw}\"\n\
         displayName = \"{n}\"\nguestOS = \"{}\"\nmemSize = \"{}\"\nnumvcpus = \"{}\"\n\
         nvram = \"{n}.nvram\"\n",
        crate::vsphere::vmx::guest_os_of_id(&spec.guest_id),
        spec.memory_mb,
        spec.num_cpus,
        n = name.as_str(),
    );
    if let Some(f) = &spec.firmware {
        vmx.push_str(&format!("firmware = \"{f}\"\n"));
    }
    if let Some(u) = &spec.uuid {
        let u = vmx_uuid(u).ok_or_else(|| {
            Fault::new("InvalidArgument", format!("`{u}` is not a UUID"))
                .with("invalidProperty", "uuid")
        })?;
        vmx.push_str(&format!("uuid.bios = \"{u}\"\n"));
    }
    for c in &spec.controllers {
        vmx.push_str(&format!(
            "scsi{b}.present = \"TRUE\"\nscsi{b}.virtualDev = \"{}\"\n",
            c.kind.vmx_dev(),
            b = c.bus
        ));
    }
    for (d, file) in spec.disks.iter().zip(files) {
        let bus = spec
            .controllers
            .iter()
            .find(|c| c.key == d.controller_key)
            .map(|c| c.bus)
            .unwrap_or_default();
        vmx.push_str(&format!(
            "scsi{bus}:{u}.present = \"TRUE\"\nscsi{bus}:{u}.fileName = \"{file}\"\n",
            u = d.unit
        ));
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let on = if n.start_connected { "TRUE" } else { "FALSE" };
        vmx.push_str(&format!(
            "ethernet{i}.present = \"TRUE\"\nethernet{i}.virtualDev = \"{}\"\n\
             ethernet{i}.networkName = \"{}\"\nethernet{i}.startConnected = \"{on}\"\n",
            n.kind.vmx_dev(),
            n.network.replace('"', "|22"),
        ));
        // A manual address is `static` in the .vmx; a generated one the
        // host keeps is written as generated; any other is made at
        // power-on (`lifecycle::power_on`).
        match &n.mac {
            Some(mac) if n.manual => vmx.push_str(&format!(
                "ethernet{i}.addressType = \"static\"\nethernet{i}.address = \"{mac}\"\n"
            )),
            Some(mac) if keeps_generated(mac, taken) => vmx.push_str(&format!(
                "ethernet{i}.addressType = \"generated\"\nethernet{i}.generatedAddress = \"{mac}\"\n"
            )),
            _ => {}
        }
    }
    for (k, v) in spec.extra_config.iter().filter(|(k, _)| !host_owned(k)) {
        if k.is_empty() || k.contains(['=', '\n', '"']) {
            continue;
        }
        vmx = crate::vsphere::vmx::with_value(&vmx, k, &v.replace('"', "|22").replace('\n', " "));
    }
    Ok(vmx)
}

/// ImportVApp of `spec` at `place`, held by lease `lease`: the VM's folder
/// and files are made, the VM registered powered off (on its host under a
/// vCenter). A VM of the same name is a DuplicateName fault, an existing
/// folder a FileAlreadyExists fault; nothing is left behind when it fails.
pub fn import_vapp(
    st: &mut State,
    root: &Path,
    spec: &ConfigSpec,
    place: &Placement,
    lease: &str,
) -> Result<Imported, Fault> {
    let host = host_of(st.vcenter, place)?;
    let name = VmFolder::new(spec.name.trim())?;
    let (dir, vmx_name) = home(spec, &name)?;
    if let Some(v) = st.vms.iter().find(|v| v.name == name.as_str()) {
        return Err(Fault::new(
            "DuplicateName",
            format!("The name '{}' already exists.", name.as_str()),
        )
        .with("name", name.as_str())
        .with_ref("object", "VirtualMachine", &v.moref()));
    }
    if root.join(dir.as_str()).exists() {
        let file = format!("[{DATASTORE}] {}", dir.as_str());
        return Err(Fault::new(
            "FileAlreadyExists",
            format!(
                "Cannot complete the operation because the file or folder {file} already exists"
            ),
        )
        .with("file", file));
    }
    check_devices(spec)?;
    let files = disk_files(spec, &dir)?;
    // A vCenter knows every VM's addresses; a standalone host checks none.
    let taken: Vec<String> = if st.vcenter {
        st.vms
            .iter()
            .filter(|v| v.nas.is_none())
            .filter_map(|v| std::fs::read_to_string(root.join(&v.vmx)).ok())
            .flat_map(|text| {
                crate::vsphere::vmx::entries(&text)
                    .filter(|(k, _)| {
                        let k = k.to_ascii_lowercase();
                        k.ends_with(".generatedaddress") || k.ends_with(".address")
                    })
                    .map(|(_, v)| v.to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect()
    } else {
        Vec::new()
    };
    let vmx = vmx_text(spec, &name, &files, &taken)?;
    let folder = root.join(dir.as_str());
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir(&folder)?;
        for (i, (d, file)) in spec.disks.iter().zip(&files).enumerate() {
            let stem = file.strip_suffix(".vmdk").unwrap_or(file);
            let flat = format!("{stem}-flat.vmdk");
            // Thin: the extent is a sparse file of the disk's size.
            File::create(folder.join(&flat))?.set_len(d.capacity_bytes)?;
            let cid = u32::from_str_radix(
                &super::state::hex_id(&format!("{}/{i}", dir.as_str()), 8),
                16,
            )
            .expect("eight hex digits");
            let descriptor = flat_descriptor(d.capacity_bytes, &flat, cid)
                .replace("lsilogic", adapter_type(spec, d.controller_key))
                + "ddb.thinProvisioned = \"1\"\n";
            std::fs::write(folder.join(file), descriptor)?;
        }
        std::fs::write(folder.join(&vmx_name), vmx)
    })();
    let registered = made.map_err(Fault::from).and_then(|()| {
        lifecycle::register(
            st,
            root,
            &format!("[{DATASTORE}] {}/{vmx_name}", dir.as_str()),
            Some(name.as_str()),
        )
    });
    let moref = match registered {
        Ok(m) => m,
        Err(f) => {
            let _ = std::fs::remove_dir_all(&folder);
            return Err(f);
        }
    };
    let (in_folder, in_pool) = inventory::chosen(
        st.vcenter,
        place.folder.as_deref().unwrap_or_default(),
        Some(&place.pool),
    );
    let v = st.vm_mut(&moref)?;
    v.host = host.clone();
    (v.folder, v.pool) = (in_folder, in_pool);
    v.import_lease = Some(lease.to_string());
    let disks = spec
        .disks
        .iter()
        .zip(&v.disks)
        .map(|(d, made)| {
            let c = spec
                .controllers
                .iter()
                .find(|c| c.key == d.controller_key)
                .expect("checked above");
            ImportedDisk {
                controller: c.kind,
                bus: c.bus,
                unit: d.unit,
                data_file: made.layers[0].data_file.clone(),
                capacity_bytes: made.capacity_bytes,
            }
        })
        .collect();
    Ok(Imported {
        vm: moref,
        name: name.as_str().to_string(),
        dir: dir.as_str().to_string(),
        host,
        disks,
    })
}

/// `ddb.adapterType` of a disk on the controller `key` (VMware's Virtual
/// Disk Format 5.0: `ide`, `buslogic`, `lsilogic` or `legacyESX`; ESXi
/// writes `lsilogic` for the SAS and paravirtual controllers too).
fn adapter_type(spec: &ConfigSpec, key: i32) -> &'static str {
    match spec
        .controllers
        .iter()
        .find(|c| c.key == key)
        .map(|c| c.kind)
    {
        Some(ScsiKind::BusLogic) => "buslogic",
        _ => "lsilogic",
    }
}

/// The import under lease `lease` is over: its VM becomes an ordinary one.
pub fn release(st: &mut State, lease: &str) {
    for v in st.vms.iter_mut() {
        if v.import_lease.as_deref() == Some(lease) {
            v.import_lease = None;
        }
    }
}

/// The import under lease `lease` failed: its VM is unregistered and its
/// folder `dir` removed, so the import leaves nothing.
pub fn discard(st: &mut State, root: &Path, lease: &str, dir: &str) -> Result<(), Fault> {
    st.vms.retain(|v| v.import_lease.as_deref() != Some(lease));
    if !dir.is_empty() && !st.vms.iter().any(|v| v.dir() == dir) {
        match std::fs::remove_dir_all(root.join(dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// At the lab's start: every VM still marked as being imported lost its
/// lease with the process that held it, and is discarded.
pub fn discard_orphans(st: &mut State, root: &Path) -> Result<(), Fault> {
    let orphans: Vec<(String, String)> = st
        .vms
        .iter()
        .filter_map(|v| Some((v.import_lease.clone()?, v.dir().to_string())))
        .collect();
    for (lease, dir) in orphans {
        discard(st, root, &lease, &dir)?;
    }
    Ok(())
}

/// Opens the flat extent `rel` for an upload, emptied: a sparse file of
/// `capacity_bytes`, so a retried upload starts from zeros.
pub fn open_extent(root: &Path, rel: &str, capacity_bytes: u64) -> std::io::Result<File> {
    let f = OpenOptions::new().write(true).open(root.join(rel))?;
    f.set_len(0)?;
    f.set_len(capacity_bytes)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::import_spec::tests::coffer_spec;
    use crate::vsphere::vmx::value;

    #[test]
    fn the_vmx_carries_the_spec_and_only_the_options_the_spec_does_not_own() {
        let mut spec = coffer_spec();
        spec.uuid = Some("564d0011-2233-4455-6677-8899aabbccdd".into());
        spec.firmware = Some("efi".into());
        spec.extra_config = vec![
            ("guestinfo.lab.tcp_ports".into(), "22".into()),
            ("scsi0:0.fileName".into(), "../elsewhere.vmdk".into()),
            ("floppy0.fileName".into(), "/etc/passwd.vmdk".into()),
            ("memSize".into(), "1".into()),
        ];
        let name = VmFolder::new("db01-r").unwrap();
        let files = disk_files(&spec, &name).unwrap();
        assert_eq!(files, ["db01-r.vmdk", "db01-r_1.vmdk"]);
        let vmx = vmx_text(&spec, &name, &files, &[]).unwrap();
        assert_eq!(value(&vmx, "virtualHW.version"), Some("19"));
        assert_eq!(value(&vmx, "guestOS"), Some("other5xlinux-64"));
        assert_eq!(value(&vmx, "memSize"), Some("2048"));
        assert_eq!(value(&vmx, "firmware"), Some("efi"));
        assert_eq!(
            value(&vmx, "uuid.bios"),
            Some("56 4d 00 11 22 33 44 55-66 77 88 99 aa bb cc dd")
        );
        assert_eq!(value(&vmx, "scsi0.virtualDev"), Some("lsilogic"));
        assert_eq!(value(&vmx, "scsi0:1.fileName"), Some("db01-r_1.vmdk"));
        assert_eq!(value(&vmx, "scsi0:0.fileName"), Some("db01-r.vmdk"));
        assert_eq!(value(&vmx, "floppy0.fileName"), None);
        assert_eq!(value(&vmx, "guestinfo.lab.tcp_ports"), Some("22"));
    }

    #[test]
    fn folder_names_reach_nowhere_else() {
        for bad in ["", ".", "..", "a/b", "a\\b", ".hidden", "x\"y", " x"] {
            assert!(VmFolder::new(bad).is_err(), "{bad:?}");
        }
        assert!(VmFolder::new("db01 restored-2").is_ok());
    }
}
