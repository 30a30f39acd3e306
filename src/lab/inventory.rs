//! The lab's inventory tree: where each VM sits (its datacenter, VM folder
//! and host) and the Folder, Datacenter, ComputeResource and HostSystem
//! objects above it, as a standalone ESXi host or, in vCenter mode, as a
//! vCenter with two datacenters and one host in each.
//!
//! The shape follows the vSphere Web Services API reference: every
//! Datacenter has its dedicated `vmFolder`, `hostFolder` and
//! `datastoreFolder`, datacenters are never nested in one another but may
//! sit in folders below the root folder, and a HostSystem sits under a
//! ComputeResource in its datacenter's `hostFolder` ("Managed Object -
//! Datacenter", "Managed Object - Folder", and the inventory diagram of
//! "Managed Object - ServiceInstance"). The morefs follow what vCenter
//! hands out and what govmomi's simulator (vcsim, `simulator/vpx` model)
//! mirrors: `group-d1` for the root folder, `datacenter-N`, `group-vN`,
//! `group-hN`, `group-sN` for a datacenter's folders, `domain-sN`, `host-N`;
//! a standalone host uses the fixed `ha-*` ids.
//!
//! Both datacenters have a datastore named `datastore1`: vCenter allows the
//! same datastore name in two datacenters, which is exactly why a
//! datastore URL names its datacenter (`dcPath`). The lab keeps one folder
//! on disk for both, and serves a VM's files only through the `dcPath` of
//! the VM's own datacenter.
//!
//! It only answers questions about the tree and renders it; it must never
//! change the lab's state.

use super::datastore_system::{NasDatastore, datastore_system_of, datastores_of, datastores_prop};
use super::state::{DATACENTER, Fault, State, Vm};
use super::wire::moref;
use crate::vsphere::soap::escape;

/// The root folder of a standalone host and of the lab's vCenter.
pub const ESXI_ROOT_FOLDER: &str = "ha-folder-root";
pub const VCENTER_ROOT_FOLDER: &str = "group-d1";

/// A datacenter of the lab: its moref, its name, the folder it sits in,
/// and its dedicated folders, compute resource and host.
#[derive(Debug, Clone, Copy)]
pub struct Datacenter {
    pub moref: &'static str,
    pub name: &'static str,
    /// `dcPath` of its datastore URLs: its inventory path below the root
    /// folder (govmomi's `object.Datastore` builds `dcPath` from the
    /// datacenter's inventory path the same way).
    pub path: &'static str,
    pub parent: &'static str,
    pub vm_folder: &'static str,
    pub host_folder: &'static str,
    pub datastore_folder: &'static str,
    pub compute_resource: &'static str,
    /// The compute resource's root resource pool (`resourcePool`), where
    /// RegisterVM_Task puts a VM on a vCenter.
    pub resource_pool: &'static str,
    pub host: &'static str,
    pub host_name: &'static str,
}

const ESXI: Datacenter = Datacenter {
    moref: "ha-datacenter",
    name: DATACENTER,
    path: DATACENTER,
    parent: ESXI_ROOT_FOLDER,
    vm_folder: "ha-folder-vm",
    host_folder: "ha-folder-host",
    datastore_folder: "ha-folder-datastore",
    compute_resource: "ha-compute-res",
    resource_pool: "ha-root-pool",
    host: "ha-host",
    host_name: "localhost.localdomain",
};

/// The lab's vCenter: the first datacenter under the root folder, the
/// second inside a folder (`region-b/lab-dc-2`), so a `dcPath` that is a
/// path, not just a name, is exercised too.
const VCENTER: [Datacenter; 2] = [
    Datacenter {
        moref: "datacenter-1",
        name: "lab-dc-1",
        path: "lab-dc-1",
        parent: VCENTER_ROOT_FOLDER,
        vm_folder: "group-v1",
        host_folder: "group-h1",
        datastore_folder: "group-s1",
        compute_resource: "domain-s1",
        resource_pool: "resgroup-1",
        host: "host-1",
        host_name: "esx-1.lab.invalid",
    },
    Datacenter {
        moref: "datacenter-2",
        name: "lab-dc-2",
        path: "region-b/lab-dc-2",
        parent: REGION_FOLDER,
        vm_folder: "group-v2",
        host_folder: "group-h2",
        datastore_folder: "group-s2",
        compute_resource: "domain-s2",
        resource_pool: "resgroup-2",
        host: "host-2",
        host_name: "esx-2.lab.invalid",
    },
];

/// The folder of datacenters that holds the second datacenter.
const REGION_FOLDER: &str = "group-d2";

/// A folder or resource pool an administrator made: below a datacenter's
/// VM folder (`Folder.CreateFolder`) or below a compute resource's root
/// pool (`ResourcePool.CreateResourcePool`), both in the vSphere Web
/// Services API reference. A restore is placed into them by name.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub id: &'static str,
    pub name: &'static str,
    pub parent: &'static str,
}

/// The lab's vCenter has a VM folder `restored` in the first datacenter,
/// and `apps/restored` (a folder in a folder) in the second; vCenter
/// numbers VM folders `group-vN` like a datacenter's own.
const VCENTER_VM_FOLDERS: [Child; 3] = [
    Child {
        id: "group-v3",
        name: "restored",
        parent: "group-v1",
    },
    Child {
        id: "group-v4",
        name: "apps",
        parent: "group-v2",
    },
    Child {
        id: "group-v5",
        name: "restored",
        parent: "group-v4",
    },
];

/// A child pool `restores` below each compute resource's root pool, with
/// the same name in both: a pool name is only unique below its parent.
const VCENTER_POOLS: [Child; 2] = [
    Child {
        id: "resgroup-3",
        name: "restores",
        parent: "resgroup-1",
    },
    Child {
        id: "resgroup-4",
        name: "restores",
        parent: "resgroup-2",
    },
];

/// The name vCenter and ESXi give every root resource pool: "Resources"
/// (govmomi's simulator model: "every cluster has a root ResourcePool
/// named \"Resources\", as real vCenter does").
const ROOT_POOL_NAME: &str = "Resources";

/// The VM folders below the datacenters' own.
pub fn vm_folders(vcenter: bool) -> &'static [Child] {
    if vcenter { &VCENTER_VM_FOLDERS } else { &[] }
}

/// The resource pools below the root pools.
pub fn child_pools(vcenter: bool) -> &'static [Child] {
    if vcenter { &VCENTER_POOLS } else { &[] }
}

/// `id`, or the top of its chain among `children`: the datacenter folder
/// or root pool it is below (a bounded walk; the tables have no cycle).
fn top_of(children: &[Child], id: &str) -> String {
    let mut at = id;
    for _ in 0..=children.len() {
        match children.iter().find(|c| c.id == at) {
            Some(c) => at = c.parent,
            None => break,
        }
    }
    at.to_string()
}

/// The datacenter whose VM folder `folder` is or is below.
pub fn datacenter_of_folder(vcenter: bool, folder: &str) -> Option<&'static Datacenter> {
    let top = top_of(vm_folders(vcenter), folder);
    datacenters(vcenter).iter().find(|d| d.vm_folder == top)
}

/// The datacenter whose compute resource's root pool `pool` is or is
/// below.
pub fn datacenter_of_pool(vcenter: bool, pool: &str) -> Option<&'static Datacenter> {
    let top = top_of(child_pools(vcenter), pool);
    datacenters(vcenter).iter().find(|d| d.resource_pool == top)
}

/// The datacenters the lab has.
pub fn datacenters(vcenter: bool) -> &'static [Datacenter] {
    if vcenter {
        &VCENTER
    } else {
        std::slice::from_ref(&ESXI)
    }
}

/// The datacenter (and so the host) `vm` lives in: on a vCenter, the one
/// of the host it was registered on (a NAS VM's), else VMs with an odd id
/// in the first, the others in the second, so consecutive lab VMs
/// alternate.
pub fn placement(vcenter: bool, vm: &Vm) -> &'static Datacenter {
    if let Some(d) = VCENTER
        .iter()
        .find(|d| vcenter && vm.host.as_deref() == Some(d.host))
    {
        return d;
    }
    if vcenter {
        &VCENTER[usize::from(vm.id.is_multiple_of(2))]
    } else {
        &ESXI
    }
}

/// The host a VM registered into VM folder `folder` with RegisterVM_Task's
/// `host` and `pool` runs on, on a vCenter: `host` when given, else the
/// host of `pool`'s compute resource; `None` on a standalone host or with
/// neither (the lab's placement by id). The vSphere API reference
/// (RegisterVM_Task) requires `host` to be a member of `pool`'s compute
/// resource, and the folder, pool and host to be of one datacenter; the
/// lab answers InvalidArgument otherwise.
pub fn registered_host(
    vcenter: bool,
    folder: &str,
    host: Option<&str>,
    pool: Option<&str>,
) -> Result<Option<&'static str>, Fault> {
    if !vcenter {
        return Ok(None);
    }
    let invalid = |what: &str, value: &str| {
        Fault::new(
            "InvalidArgument",
            format!("A specified parameter was not correct: {what} {value}"),
        )
        .with("invalidProperty", what)
    };
    let by_host = match host {
        Some(h) => Some(
            VCENTER
                .iter()
                .find(|d| d.host == h)
                .ok_or_else(|| invalid("host", h))?,
        ),
        None => None,
    };
    let by_pool = match pool {
        Some(p) => Some(datacenter_of_pool(true, p).ok_or_else(|| invalid("pool", p))?),
        None => None,
    };
    let by_folder =
        datacenter_of_folder(true, folder).ok_or_else(|| Fault::not_found("Folder", folder))?;
    let Some(d) = by_host.or(by_pool) else {
        return Ok(None);
    };
    if by_pool.is_some_and(|p| p.host != d.host) {
        return Err(invalid("host", d.host));
    }
    if by_folder.moref != d.moref {
        return Err(invalid("folder", folder));
    }
    Ok(Some(d.host))
}

/// The folder and pool a VM registered into `folder` and `pool` records:
/// those an administrator made (`None` for a datacenter's own VM folder
/// and a root pool, which the VM's placement already gives).
pub fn chosen(vcenter: bool, folder: &str, pool: Option<&str>) -> (Option<String>, Option<String>) {
    let made =
        |children: &[Child], id: &str| children.iter().any(|c| c.id == id).then(|| id.to_string());
    (
        made(vm_folders(vcenter), folder),
        pool.and_then(|p| made(child_pools(vcenter), p)),
    )
}

pub fn root_folder(vcenter: bool) -> &'static str {
    if vcenter {
        VCENTER_ROOT_FOLDER
    } else {
        ESXI_ROOT_FOLDER
    }
}

/// Whether `/folder/<rel>?dcPath=<dc>` reaches the file: a VM's files only
/// through its own datacenter, any other file through any datacenter of
/// the lab. A standalone host also takes a request without `dcPath`; a
/// vCenter needs one to know which datastore is meant.
pub fn datacenter_serves(st: &State, dc: Option<&str>, rel: &str) -> bool {
    let dcs = datacenters(st.vcenter);
    let Some(dc) = dc else {
        return !st.vcenter;
    };
    let Some(asked) = dcs.iter().find(|d| d.path == dc) else {
        return false;
    };
    let dir = rel.split('/').next().unwrap_or("");
    match st.vms.iter().find(|v| !dir.is_empty() && v.dir() == dir) {
        Some(v) => placement(st.vcenter, v).moref == asked.moref,
        None => true,
    }
}

/// Whether the ESXi host `host` (a moref) has the file `rel`: the files of
/// the VMs it runs, and any other file (its datastore is its datacenter's).
pub fn host_serves(st: &State, host: &str, rel: &str) -> bool {
    let dir = rel.split('/').next().unwrap_or("");
    match st.vms.iter().find(|v| !dir.is_empty() && v.dir() == dir) {
        Some(v) => placement(st.vcenter, v).host == host,
        None => true,
    }
}

/// Whether `rel` is a disk file of a VM (a flat extent or a snapshot
/// delta), which the VM's host holds locked while the VM runs.
pub fn is_locked_disk_file(st: &State, rel: &str) -> bool {
    let dir = rel.split('/').next().unwrap_or("");
    st.vms.iter().any(|v| {
        !dir.is_empty()
            && v.dir() == dir
            && v.disks
                .iter()
                .any(|d| d.layers.iter().any(|l| l.data_file == rel))
    })
}

fn prop_text(name: &str, value: &str) -> String {
    format!(
        "<propSet><name>{name}</name><val xsi:type=\"xsd:string\">{}</val></propSet>",
        escape(value)
    )
}

fn prop_moref(name: &str, kind: &str, value: &str) -> String {
    format!(
        "<propSet><name>{name}</name>{}</propSet>",
        moref("val", kind, value)
    )
}

/// A property of an inventory object: its name and its value, a moref
/// (type, value) or a text.
type Prop<'a> = (&'a str, Option<(&'a str, &'a str)>, Option<&'a str>);

/// One object with the asked `paths` among `name`, `parent` and the
/// datacenter folders; `all` gives them all.
fn object(kind: &str, id: &str, props: &[Prop<'_>], paths: &[String], all: bool) -> String {
    let mut out = format!("<objects>{}", moref("obj", kind, id));
    for (name, as_moref, as_text) in props {
        if !all && !paths.iter().any(|p| p == name) {
            continue;
        }
        match (as_moref, as_text) {
            (Some((k, v)), _) => out.push_str(&prop_moref(name, k, v)),
            (None, Some(t)) => out.push_str(&prop_text(name, t)),
            (None, None) => {}
        }
    }
    out.push_str("</objects>");
    out
}

/// The objects of type `kind` a container view from the root folder holds
/// (Folder, Datacenter, ComputeResource, ResourcePool, HostSystem), rendered with the
/// asked properties; `None` for a type this module does not own.
///
/// `host_name` gives each host's `name`: the address it answers at;
/// `nas` the NAS datastores the hosts mounted, which join the lab's own
/// in a host's and its datacenter's `datastore` (vSphere API reference,
/// HostSystem.datastore and Datacenter.datastore).
pub fn objects_of(
    vcenter: bool,
    kind: &str,
    paths: &[String],
    all: bool,
    host_name: &dyn Fn(&Datacenter) -> String,
    nas: &[NasDatastore],
) -> Option<Vec<String>> {
    let with_datastores = |obj: String, host: &str| {
        if !all && !paths.iter().any(|p| p == "datastore") {
            return obj;
        }
        let list = datastores_prop("datastore", &datastores_of(nas, host));
        obj.replace("</objects>", &(list + "</objects>"))
    };
    let dcs = datacenters(vcenter);
    let mut out = Vec::new();
    match kind {
        "Folder" => {
            // The root folder is the view's container, not in it.
            let mut folders: Vec<(&str, &str, &str)> = Vec::new();
            if vcenter {
                folders.push((REGION_FOLDER, "region-b", VCENTER_ROOT_FOLDER));
            }
            for d in dcs {
                folders.push((d.vm_folder, "vm", d.moref));
                folders.push((d.host_folder, "host", d.moref));
                folders.push((d.datastore_folder, "datastore", d.moref));
            }
            for c in vm_folders(vcenter) {
                folders.push((c.id, c.name, c.parent));
            }
            for (id, name, parent) in folders {
                let parent_kind = if parent.starts_with("datacenter") || parent == ESXI.moref {
                    "Datacenter"
                } else {
                    "Folder"
                };
                out.push(object(
                    "Folder",
                    id,
                    &[
                        ("name", None, Some(name)),
                        ("parent", Some((parent_kind, parent)), None),
                    ],
                    paths,
                    all,
                ));
            }
        }
        "Datacenter" => {
            for d in dcs {
                out.push(with_datastores(
                    object(
                        "Datacenter",
                        d.moref,
                        &[
                            ("name", None, Some(d.name)),
                            ("parent", Some(("Folder", d.parent)), None),
                            ("vmFolder", Some(("Folder", d.vm_folder)), None),
                            ("hostFolder", Some(("Folder", d.host_folder)), None),
                            (
                                "datastoreFolder",
                                Some(("Folder", d.datastore_folder)),
                                None,
                            ),
                        ],
                        paths,
                        all,
                    ),
                    d.host,
                ));
            }
        }
        "ComputeResource" => {
            for d in dcs {
                out.push(object(
                    "ComputeResource",
                    d.compute_resource,
                    &[
                        ("name", None, Some(d.host_name)),
                        ("parent", Some(("Folder", d.host_folder)), None),
                        (
                            "resourcePool",
                            Some(("ResourcePool", d.resource_pool)),
                            None,
                        ),
                    ],
                    paths,
                    all,
                ));
            }
        }
        "ResourcePool" => {
            let root = |d: &Datacenter| (d.resource_pool, ROOT_POOL_NAME, d.compute_resource);
            let pools = dcs.iter().map(root).chain(
                child_pools(vcenter)
                    .iter()
                    .map(|c| (c.id, c.name, c.parent)),
            );
            for (id, name, parent) in pools {
                let parent_kind = if dcs.iter().any(|d| d.compute_resource == parent) {
                    "ComputeResource"
                } else {
                    "ResourcePool"
                };
                out.push(object(
                    "ResourcePool",
                    id,
                    &[
                        ("name", None, Some(name)),
                        ("parent", Some((parent_kind, parent)), None),
                    ],
                    paths,
                    all,
                ));
            }
        }
        "HostSystem" => {
            for d in dcs {
                let name = host_name(d);
                let network_system = super::hostnet::network_system_of(d.host);
                let datastore_system = datastore_system_of(d.host);
                out.push(with_datastores(
                    object(
                        "HostSystem",
                        d.host,
                        &[
                            ("name", None, Some(&name)),
                            (
                                "parent",
                                Some(("ComputeResource", d.compute_resource)),
                                None,
                            ),
                            (
                                "configManager.networkSystem",
                                Some(("HostNetworkSystem", &network_system)),
                                None,
                            ),
                            (
                                "configManager.datastoreSystem",
                                Some(("HostDatastoreSystem", &datastore_system)),
                                None,
                            ),
                        ],
                        paths,
                        all,
                    ),
                    d.host,
                ));
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::Store;

    #[test]
    fn a_vcenter_serves_a_vms_files_only_through_its_own_datacenter() {
        let t = tempfile::tempdir().unwrap();
        let mut st = Store::new(t.path())
            .init_with(2, "root", Some("pw"), None)
            .unwrap();
        st.vcenter = true;
        let (one, two) = (&st.vms[0], &st.vms[1]);
        let (dc_one, dc_two) = (placement(true, one).path, placement(true, two).path);
        assert_ne!(dc_one, dc_two, "the lab spreads its VMs");
        let file = |v: &Vm| format!("{}/{}-flat.vmdk", v.dir(), v.name);
        assert!(datacenter_serves(&st, Some(dc_one), &file(one)));
        assert!(!datacenter_serves(&st, Some(dc_two), &file(one)));
        assert!(datacenter_serves(&st, Some(dc_two), &file(two)));
        // A vCenter needs to be told the datacenter; a name it lacks is none.
        assert!(!datacenter_serves(&st, None, &file(one)));
        assert!(!datacenter_serves(&st, Some(DATACENTER), &file(one)));
        // Files of no VM (a restore's upload) through either datacenter.
        assert!(datacenter_serves(
            &st,
            Some(dc_two),
            "restored/restored.vmx"
        ));
        st.vcenter = false;
        assert!(datacenter_serves(&st, None, &file(two)));
        assert!(datacenter_serves(&st, Some(DATACENTER), &file(two)));
    }
}
