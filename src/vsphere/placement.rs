//! Where each VM sits: the datacenter whose datastore URLs reach its files,
//! found from the inventory's parent chains.
//!
//! A datastore URL names its datacenter (`/folder/…?dcPath=…&dsName=…`),
//! and on a vCenter two datacenters may each have a datastore of the same
//! name, so a VM's files must be asked for through its own datacenter.
//! `dcPath` is the datacenter's inventory path below the root folder
//! (folders included: `region-b/dc-2`), as govmomi's `object.Datastore`
//! builds it from the datacenter's inventory path. A VM's `parent` is a VM
//! folder; folders lead up to the Datacenter, which may itself sit in
//! folders below the root folder ("Managed Object - Datacenter" and
//! "Managed Object - Folder" in the vSphere Web Services API reference:
//! datacenters are never nested, folders are).
//!
//! The walk is a pure function over `Entity` values (tested without a
//! server); `Session::datacenter_paths` fetches them: one container view
//! over the root folder, one property query per type.

use std::collections::HashMap;

use super::Error;
use super::Session;
use super::soap::{self, Objects};
use super::types::MoRef;

/// `name` and `parent` of one managed entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub obj: MoRef,
    pub name: Option<String>,
    pub parent: Option<MoRef>,
}

/// The parent chains of an inventory, walked in a bounded number of steps
/// so that a malformed answer with a cycle cannot hang a walk.
struct Tree<'a> {
    by_ref: HashMap<&'a MoRef, &'a Entity>,
    limit: usize,
}

impl<'a> Tree<'a> {
    fn new(entities: &'a [Entity]) -> Tree<'a> {
        Tree {
            by_ref: entities.iter().map(|e| (&e.obj, e)).collect(),
            limit: entities.len() + 1,
        }
    }

    /// The datacenter above `start` (or `start` itself).
    fn datacenter_of(&self, start: &MoRef) -> Option<&'a Entity> {
        let mut at = self.by_ref.get(start).copied()?;
        for _ in 0..self.limit {
            if at.obj.kind == "Datacenter" {
                return Some(at);
            }
            at = self.by_ref.get(at.parent.as_ref()?).copied()?;
        }
        None
    }

    /// A datacenter's path: the names of the folders between it and the
    /// root folder (which has no parent and is not part of the path), then
    /// its own.
    fn path_of(&self, dc: &Entity) -> Option<String> {
        let mut names = vec![dc.name.clone()?];
        let mut up = dc.parent.as_ref();
        for _ in 0..self.limit {
            let Some(p) = up.and_then(|p| self.by_ref.get(p).copied()) else {
                break;
            };
            if p.parent.is_none() {
                break;
            }
            names.push(p.name.clone()?);
            up = p.parent.as_ref();
        }
        names.reverse();
        Some(names.join("/"))
    }
}

/// For each VM among `entities`, its datacenter's inventory path. A VM
/// whose chain does not reach a Datacenter (a VM in a vApp, whose parent is
/// not a folder; a chain cut by missing rights) is left out.
pub fn datacenter_paths(entities: &[Entity]) -> HashMap<MoRef, String> {
    let tree = Tree::new(entities);
    entities
        .iter()
        .filter(|e| e.obj.kind == "VirtualMachine")
        .filter_map(|vm| {
            let dc = tree.datacenter_of(vm.parent.as_ref()?)?;
            Some((vm.obj.clone(), tree.path_of(dc)?))
        })
        .collect()
}

/// Where a new VM goes on a host of a vCenter: the host, the compute
/// resource (or cluster) it belongs to, and its datacenter with its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlace {
    pub host: MoRef,
    pub host_name: String,
    pub compute: MoRef,
    pub datacenter: MoRef,
    pub datacenter_path: String,
}

/// Where a new VM goes, as the operator names it. Each part is a name
/// (a folder or pool by its path below the datacenter's VM folder or the
/// host's root pool, `apps/restored`) or a managed object id
/// (`group-v12`); each `None` takes the default: the only host (of the
/// datacenter), the datacenter's VM folder, the host's root pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaceNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl PlaceNames {
    /// Only a host, by name (the other parts by default).
    pub fn host(host: Option<&str>) -> PlaceNames {
        PlaceNames {
            host: host.map(str::to_string),
            ..PlaceNames::default()
        }
    }
}

/// The host named `name` among `entities` (or whose managed object id is
/// `name`, such as `host-12`; the only one when `None`), among the hosts
/// of datacenter `datacenter` (by name, inventory path or id) when given,
/// with the compute resource above it (a HostSystem's `parent`: "Managed
/// Object - HostSystem") and its datacenter.
pub fn host_in(
    entities: &[Entity],
    datacenter: Option<&str>,
    name: Option<&str>,
) -> Result<HostPlace, String> {
    let tree = Tree::new(entities);
    let dc = match datacenter {
        Some(wanted) => {
            let dcs: Vec<&Entity> = entities
                .iter()
                .filter(|e| e.obj.kind == "Datacenter")
                .collect();
            let found = dcs.iter().find(|d| {
                d.obj.value == wanted
                    || d.name.as_deref() == Some(wanted)
                    || tree.path_of(d).as_deref() == Some(wanted.trim_matches('/'))
            });
            let paths = || {
                dcs.iter()
                    .filter_map(|d| tree.path_of(d))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Some(
                found
                    .ok_or_else(|| format!("no datacenter `{wanted}` (datacenters: {})", paths()))?
                    .obj
                    .clone(),
            )
        }
        None => None,
    };
    let hosts: Vec<&Entity> = entities
        .iter()
        .filter(|e| e.obj.kind == "HostSystem")
        .filter(|h| {
            dc.as_ref().is_none_or(|dc| {
                h.parent
                    .as_ref()
                    .and_then(|c| tree.datacenter_of(c))
                    .is_some_and(|d| &d.obj == dc)
            })
        })
        .collect();
    let names = || {
        hosts
            .iter()
            .filter_map(|h| h.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let host = match name {
        Some(n) => hosts
            .iter()
            .find(|h| h.name.as_deref() == Some(n))
            .or_else(|| hosts.iter().find(|h| h.obj.value == n))
            .ok_or_else(|| format!("no host named `{n}` (hosts: {})", names()))?,
        None if hosts.len() == 1 => &hosts[0],
        None => return Err(format!("name the host with --host (hosts: {})", names())),
    };
    let compute = host
        .parent
        .clone()
        .ok_or_else(|| format!("host {} has no compute resource", host.obj.value))?;
    let dc = tree
        .datacenter_of(&compute)
        .ok_or_else(|| format!("host {} is in no datacenter", host.obj.value))?;
    Ok(HostPlace {
        host: host.obj.clone(),
        host_name: host.name.clone().unwrap_or_else(|| host.obj.value.clone()),
        compute,
        datacenter: dc.obj.clone(),
        datacenter_path: tree
            .path_of(dc)
            .ok_or_else(|| format!("datacenter {} has no name", dc.obj.value))?,
    })
}

/// The folder or resource pool `wanted` below `top` (a datacenter's VM
/// folder, a compute resource's root pool), or `top` itself: by managed
/// object id, or by the path of names from `top` down (`apps/restored`;
/// names are unique only among siblings, as in vCenter's inventory).
/// The error names `what` it looked for and where (`at`), and lists what
/// there is below `top`.
pub fn below(
    entities: &[Entity],
    top: &MoRef,
    wanted: &str,
    (what, at): (&str, &str),
) -> Result<MoRef, String> {
    let tree = Tree::new(entities);
    // The path from `top` down to `e`, `None` when `e` is not below it.
    let path_to = |e: &Entity| -> Option<String> {
        let mut names = Vec::new();
        let mut at = e;
        for _ in 0..tree.limit {
            if &at.obj == top {
                names.reverse();
                return Some(names.join("/"));
            }
            names.push(at.name.clone()?);
            at = tree.by_ref.get(at.parent.as_ref()?).copied()?;
        }
        None
    };
    let kind = &top.kind;
    let family =
        |e: &&Entity| e.obj.kind == *kind || (kind == "ResourcePool" && e.obj.kind == "VirtualApp");
    let wanted_path = wanted.trim_matches('/');
    let found = entities.iter().filter(family).find(|e| {
        e.obj.value == wanted || path_to(e).is_some_and(|p| !p.is_empty() && p == wanted_path)
    });
    if let Some(e) = found.filter(|e| path_to(e).is_some()) {
        return Ok(e.obj.clone());
    }
    if wanted == top.value {
        return Ok(top.clone());
    }
    let mut there: Vec<String> = entities
        .iter()
        .filter(family)
        .filter_map(path_to)
        .filter(|p| !p.is_empty())
        .collect();
    there.sort();
    let there = if there.is_empty() {
        "there are none".to_string()
    } else {
        format!("there are: {}", there.join(", "))
    };
    let at = if at.is_empty() {
        String::new()
    } else {
        format!(" {at}")
    };
    Err(format!("no {what} `{wanted}`{at} ({there})"))
}

impl Session {
    /// Every VM's datacenter path (see `datacenter_paths`).
    pub fn datacenter_paths(&self) -> Result<HashMap<MoRef, String>, Error> {
        let entities = self.inventory(&[
            ("Folder", &["name", "parent"]),
            ("Datacenter", &["name", "parent"]),
            ("VirtualMachine", &["parent"]),
        ])?;
        Ok(datacenter_paths(&entities))
    }

    /// Where a new VM goes on a vCenter, as `names` says: the host, the
    /// resource pool (by default its compute resource's root pool,
    /// `resourcePool`), the VM folder (by default its datacenter's
    /// `vmFolder`) and the datacenter's path. The inner error says which
    /// name fits nothing, and what there is.
    #[allow(clippy::type_complexity)]
    pub fn host_placement(
        &self,
        names: &PlaceNames,
    ) -> Result<Result<(HostPlace, MoRef, MoRef), String>, Error> {
        let entities = self.inventory(&[
            ("Folder", &["name", "parent"]),
            ("Datacenter", &["name", "parent"]),
            ("ComputeResource", &["name", "parent"]),
            ("ResourcePool", &["name", "parent"]),
            ("HostSystem", &["name", "parent"]),
        ])?;
        let place = match host_in(
            &entities,
            names.datacenter.as_deref(),
            names.host.as_deref(),
        ) {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let moref = |obj: &MoRef, path: &'static str| -> Result<MoRef, Error> {
            self.properties_of(obj, &[path], |x| soap::parse_moref_property(x, path))?
                .ok_or_else(|| Error::Protocol {
                    method: "RetrievePropertiesEx".into(),
                    detail: format!("{} {} has no {path}", obj.kind, obj.value),
                })
        };
        let root_pool = moref(&place.compute, "resourcePool")?;
        let vm_folder = moref(&place.datacenter, "vmFolder")?;
        let chosen = |top: &MoRef, wanted: Option<&String>, what: (&str, &str)| match wanted {
            Some(w) => below(&entities, top, w, what),
            None => Ok(top.clone()),
        };
        let pool = chosen(
            &root_pool,
            names.pool.as_ref(),
            ("resource pool", &format!("on host {}", place.host_name)),
        );
        let folder = chosen(
            &vm_folder,
            names.folder.as_ref(),
            (
                "VM folder",
                &format!("in datacenter {}", place.datacenter_path),
            ),
        );
        Ok(pool.and_then(|p| folder.map(|f| (place, p, f))))
    }

    /// The resource pool `wanted` below a standalone host's root pool
    /// (`ha-root-pool`): ESXi has resource pools, but no VM folders.
    pub fn esxi_pool(&self, root: &MoRef, wanted: &str) -> Result<Result<MoRef, String>, Error> {
        let entities = self.inventory(&[
            ("ComputeResource", &["name", "parent"]),
            ("ResourcePool", &["name", "parent"]),
        ])?;
        Ok(below(&entities, root, wanted, ("resource pool", "")))
    }

    /// `paths` of every object of each type below the root folder (one
    /// container view, one property query per type), and the root folder,
    /// the top of every parent chain.
    fn inventory(&self, kinds: &[(&str, &[&str])]) -> Result<Vec<Entity>, Error> {
        let content = self.service_content();
        let types: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        let req =
            soap::create_container_view(&content.view_manager, &content.root_folder, &types, true);
        let view = self.call(&req, |x| soap::parse_moref_result(x, req.method))?;
        let mut entities = Ok(Vec::new());
        for (kind, paths) in kinds {
            if let Ok(e) = &mut entities {
                match self.entities(&view, kind, paths) {
                    Ok(mut more) => e.append(&mut more),
                    Err(err) => entities = Err(err),
                }
            }
        }
        // The root folder is the view's container, not in it.
        if let Ok(e) = &mut entities {
            e.push(Entity {
                obj: content.root_folder.clone(),
                name: None,
                parent: None,
            });
        }
        let destroy = soap::destroy_view(&view);
        let _ = self.call(&destroy, |x| soap::parse_empty(x, destroy.method));
        entities
    }

    /// The VM folder (`parent`) and resource pool (`resourcePool`) VM `vm`
    /// sits in ("Managed Object - VirtualMachine"); a template has no pool.
    pub fn folder_and_pool(&self, vm: &MoRef) -> Result<(Option<MoRef>, Option<MoRef>), Error> {
        let of = |path: &'static str| {
            self.properties_of(vm, &[path], |x| soap::parse_moref_property(x, path))
        };
        Ok((of("parent")?, of("resourcePool")?))
    }

    /// The `name` of a host: the address its own services answer at.
    pub fn host_name(&self, host: &MoRef) -> Result<String, Error> {
        self.name_of(host)
    }

    /// The `name` of a managed entity.
    pub fn name_of(&self, obj: &MoRef) -> Result<String, Error> {
        let pc = &self.service_content().property_collector;
        let req = soap::retrieve_properties_ex(
            pc,
            &obj.kind,
            &["name"],
            &Objects::One(obj.clone()),
            None,
        );
        let page = self.call(&req, |x| soap::parse_entity_page(x, req.method))?;
        page.items
            .into_iter()
            .find_map(|e| e.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Protocol {
                method: req.method.into(),
                detail: format!("{} {} has no name", obj.kind, obj.value),
            })
    }

    /// The datastore named `name` among those `host` mounts (its
    /// `datastore` property).
    pub fn datastore_named(&self, host: &MoRef, name: &str) -> Result<Option<MoRef>, Error> {
        let all = self.properties_of(host, &["datastore"], |x| {
            soap::parse_moref_list_property(x, "datastore")
        })?;
        for ds in all {
            if self.name_of(&ds)? == name {
                return Ok(Some(ds));
            }
        }
        Ok(None)
    }

    /// A generic service ticket for one GET of `url` on a host.
    pub fn service_ticket(&self, url: &str) -> Result<soap::ServiceTicket, Error> {
        let req =
            soap::acquire_generic_service_ticket(&self.service_content().session_manager, url);
        self.call(&req, soap::parse_service_ticket)
    }

    fn entities(&self, view: &MoRef, kind: &str, paths: &[&str]) -> Result<Vec<Entity>, Error> {
        let pc = &self.service_content().property_collector;
        let first =
            soap::retrieve_properties_ex(pc, kind, paths, &Objects::View(view.clone()), Some(500));
        let mut page = self.call(&first, |x| soap::parse_entity_page(x, first.method))?;
        let mut out = std::mem::take(&mut page.items);
        while let Some(token) = page.token.take() {
            let next = soap::continue_retrieve_properties_ex(pc, &token);
            page = self.call(&next, |x| soap::parse_entity_page(x, next.method))?;
            out.append(&mut page.items);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, id: &str, name: &str, parent: Option<(&str, &str)>) -> Entity {
        Entity {
            obj: MoRef::new(kind, id),
            name: (!name.is_empty()).then(|| name.to_string()),
            parent: parent.map(|(k, v)| MoRef::new(k, v)),
        }
    }

    #[test]
    fn each_vm_gets_the_path_of_its_own_datacenter_folders_included() {
        let entities = vec![
            e("Folder", "group-d1", "", None),
            e(
                "Datacenter",
                "datacenter-1",
                "dc-1",
                Some(("Folder", "group-d1")),
            ),
            e(
                "Folder",
                "group-d2",
                "region b",
                Some(("Folder", "group-d1")),
            ),
            e(
                "Datacenter",
                "datacenter-2",
                "dc-2",
                Some(("Folder", "group-d2")),
            ),
            e(
                "Folder",
                "group-v1",
                "vm",
                Some(("Datacenter", "datacenter-1")),
            ),
            e(
                "Folder",
                "group-v2",
                "vm",
                Some(("Datacenter", "datacenter-2")),
            ),
            e("Folder", "group-v9", "web", Some(("Folder", "group-v2"))),
            e("VirtualMachine", "vm-1", "", Some(("Folder", "group-v1"))),
            e("VirtualMachine", "vm-2", "", Some(("Folder", "group-v9"))),
            e(
                "VirtualMachine",
                "vm-3",
                "",
                Some(("VirtualApp", "resgroup-v1")),
            ),
        ];
        let paths = datacenter_paths(&entities);
        assert_eq!(paths[&MoRef::new("VirtualMachine", "vm-1")], "dc-1");
        assert_eq!(
            paths[&MoRef::new("VirtualMachine", "vm-2")],
            "region b/dc-2"
        );
        assert!(!paths.contains_key(&MoRef::new("VirtualMachine", "vm-3")));
    }

    #[test]
    fn a_standalone_host_gives_ha_datacenter() {
        let entities = vec![
            e("Folder", "ha-folder-root", "", None),
            e(
                "Datacenter",
                "ha-datacenter",
                "ha-datacenter",
                Some(("Folder", "ha-folder-root")),
            ),
            e(
                "Folder",
                "ha-folder-vm",
                "vm",
                Some(("Datacenter", "ha-datacenter")),
            ),
            e("VirtualMachine", "1", "", Some(("Folder", "ha-folder-vm"))),
        ];
        assert_eq!(
            datacenter_paths(&entities)[&MoRef::new("VirtualMachine", "1")],
            "ha-datacenter"
        );
    }

    #[test]
    fn a_cycle_in_a_malformed_answer_does_not_hang_the_walk() {
        let entities = vec![
            e("Folder", "a", "a", Some(("Folder", "b"))),
            e("Folder", "b", "b", Some(("Folder", "a"))),
            e("VirtualMachine", "vm-1", "", Some(("Folder", "a"))),
        ];
        assert!(datacenter_paths(&entities).is_empty());
    }

    #[test]
    fn a_host_is_found_by_name_with_its_compute_resource_and_datacenter() {
        let entities = vec![
            e("Folder", "group-d1", "", None),
            e(
                "Datacenter",
                "datacenter-1",
                "dc-1",
                Some(("Folder", "group-d1")),
            ),
            e(
                "Folder",
                "group-d2",
                "region-b",
                Some(("Folder", "group-d1")),
            ),
            e(
                "Datacenter",
                "datacenter-2",
                "dc-2",
                Some(("Folder", "group-d2")),
            ),
            e(
                "Folder",
                "group-h1",
                "host",
                Some(("Datacenter", "datacenter-1")),
            ),
            e(
                "Folder",
                "group-h2",
                "host",
                Some(("Datacenter", "datacenter-2")),
            ),
            e(
                "ComputeResource",
                "domain-s1",
                "esx-1",
                Some(("Folder", "group-h1")),
            ),
            e(
                "ComputeResource",
                "domain-c2",
                "cluster",
                Some(("Folder", "group-h2")),
            ),
            e(
                "HostSystem",
                "host-1",
                "esx-1",
                Some(("ComputeResource", "domain-s1")),
            ),
            e(
                "HostSystem",
                "host-2",
                "esx-2",
                Some(("ComputeResource", "domain-c2")),
            ),
        ];
        let p = host_in(&entities, None, Some("esx-2")).unwrap();
        assert_eq!(p.host, MoRef::new("HostSystem", "host-2"));
        assert_eq!(p.host_name, "esx-2");
        assert_eq!(p.compute, MoRef::new("ComputeResource", "domain-c2"));
        assert_eq!(p.datacenter, MoRef::new("Datacenter", "datacenter-2"));
        assert_eq!(p.datacenter_path, "region-b/dc-2");
        let none = host_in(&entities, None, None).unwrap_err();
        assert!(none.contains("esx-1, esx-2"), "{none}");
        assert!(host_in(&entities, None, Some("esx-9")).is_err());
        // A datacenter (by name, path or id) narrows the hosts: its only
        // host is the default, another datacenter's host is refused.
        for dc in ["dc-2", "region-b/dc-2", "datacenter-2"] {
            let p = host_in(&entities, Some(dc), None).unwrap();
            assert_eq!(p.host, MoRef::new("HostSystem", "host-2"), "{dc}");
        }
        let other = host_in(&entities, Some("dc-1"), Some("esx-2")).unwrap_err();
        assert!(
            other.contains("no host named `esx-2` (hosts: esx-1)"),
            "{other}"
        );
        let unknown = host_in(&entities, Some("dc-9"), None).unwrap_err();
        assert!(
            unknown.contains("no datacenter `dc-9` (datacenters: dc-1, region-b/dc-2)"),
            "{unknown}"
        );
    }

    #[test]
    fn folders_and_pools_are_found_by_path_or_id_below_their_top_only() {
        let entities = vec![
            e("Datacenter", "datacenter-1", "dc-1", None),
            e(
                "Folder",
                "group-v1",
                "vm",
                Some(("Datacenter", "datacenter-1")),
            ),
            e("Folder", "group-v3", "apps", Some(("Folder", "group-v1"))),
            e(
                "Folder",
                "group-v4",
                "restored",
                Some(("Folder", "group-v3")),
            ),
            e(
                "Folder",
                "group-v5",
                "restored",
                Some(("Folder", "group-v1")),
            ),
            e("Datacenter", "datacenter-2", "dc-2", None),
            e(
                "Folder",
                "group-v2",
                "vm",
                Some(("Datacenter", "datacenter-2")),
            ),
            e(
                "Folder",
                "group-v6",
                "elsewhere",
                Some(("Folder", "group-v2")),
            ),
            e("ComputeResource", "domain-c1", "cluster", None),
            e(
                "ResourcePool",
                "resgroup-1",
                "Resources",
                Some(("ComputeResource", "domain-c1")),
            ),
            e(
                "ResourcePool",
                "resgroup-2",
                "gold",
                Some(("ResourcePool", "resgroup-1")),
            ),
            e(
                "VirtualApp",
                "resgroup-v3",
                "app",
                Some(("ResourcePool", "resgroup-2")),
            ),
        ];
        let vm = MoRef::new("Folder", "group-v1");
        let folder = |w: &str| below(&entities, &vm, w, ("VM folder", ""));
        // Names are unique only among siblings: the path picks one.
        assert_eq!(folder("apps/restored").unwrap().value, "group-v4");
        assert_eq!(folder("/restored/").unwrap().value, "group-v5");
        assert_eq!(folder("group-v4").unwrap().value, "group-v4");
        assert_eq!(folder("group-v1").unwrap(), vm);
        // Another datacenter's folder is not below this one's.
        let err = folder("group-v6").unwrap_err();
        assert_eq!(
            err,
            "no VM folder `group-v6` (there are: apps, apps/restored, restored)"
        );
        assert!(folder("elsewhere").is_err());
        let root = MoRef::new("ResourcePool", "resgroup-1");
        let pool = |w: &str| below(&entities, &root, w, ("resource pool", "on host esx-1"));
        assert_eq!(pool("gold").unwrap().value, "resgroup-2");
        assert_eq!(pool("gold/app").unwrap().value, "resgroup-v3");
        assert_eq!(
            pool("silver").unwrap_err(),
            "no resource pool `silver` on host esx-1 (there are: gold, gold/app)"
        );
        let empty = MoRef::new("Folder", "group-v6");
        assert_eq!(
            below(&entities, &empty, "x", ("VM folder", "")).unwrap_err(),
            "no VM folder `x` (there are none)"
        );
    }
}
