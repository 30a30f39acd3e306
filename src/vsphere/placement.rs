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

/// For each VM among `entities`, its datacenter's inventory path. A VM
/// whose chain does not reach a Datacenter (a VM in a vApp, whose parent is
/// not a folder; a chain cut by missing rights) is left out. The walk
/// stops after a bounded number of steps, so a malformed answer with a
/// cycle cannot hang it.
pub fn datacenter_paths(entities: &[Entity]) -> HashMap<MoRef, String> {
    let by_ref: HashMap<&MoRef, &Entity> = entities.iter().map(|e| (&e.obj, e)).collect();
    let limit = entities.len() + 1;
    // The datacenter above `start` (or `start` itself).
    let datacenter_of = |start: &MoRef| -> Option<&Entity> {
        let mut at = by_ref.get(start).copied()?;
        for _ in 0..limit {
            if at.obj.kind == "Datacenter" {
                return Some(at);
            }
            at = by_ref.get(at.parent.as_ref()?).copied()?;
        }
        None
    };
    // Its path: the names of the folders between it and the root folder
    // (which has no parent and is not part of the path), then its own.
    let path_of = |dc: &Entity| -> Option<String> {
        let mut names = vec![dc.name.clone()?];
        let mut up = dc.parent.as_ref();
        for _ in 0..limit {
            let Some(p) = up.and_then(|p| by_ref.get(p).copied()) else {
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
    };
    entities
        .iter()
        .filter(|e| e.obj.kind == "VirtualMachine")
        .filter_map(|vm| {
            let dc = datacenter_of(vm.parent.as_ref()?)?;
            Some((vm.obj.clone(), path_of(dc)?))
        })
        .collect()
}

impl Session {
    /// Every VM's datacenter path (see `datacenter_paths`).
    pub fn datacenter_paths(&self) -> Result<HashMap<MoRef, String>, Error> {
        let content = self.service_content();
        let req = soap::create_container_view(
            &content.view_manager,
            &content.root_folder,
            &["Folder", "Datacenter", "VirtualMachine"],
            true,
        );
        let view = self.call(&req, |x| soap::parse_moref_result(x, req.method))?;
        let mut entities = self.entities(&view, "Folder", &["name", "parent"]);
        if let Ok(e) = &mut entities {
            match self.entities(&view, "Datacenter", &["name", "parent"]) {
                Ok(mut more) => e.append(&mut more),
                Err(err) => entities = Err(err),
            }
        }
        if let Ok(e) = &mut entities {
            match self.entities(&view, "VirtualMachine", &["parent"]) {
                Ok(mut more) => e.append(&mut more),
                Err(err) => entities = Err(err),
            }
        }
        // The root folder is the view's container, not in it: it is the
        // top of every chain.
        if let Ok(e) = &mut entities {
            e.push(Entity {
                obj: content.root_folder.clone(),
                name: None,
                parent: None,
            });
        }
        let destroy = soap::destroy_view(&view);
        let _ = self.call(&destroy, |x| soap::parse_empty(x, destroy.method));
        Ok(datacenter_paths(&entities?))
    }

    /// The `name` of a host: the address its own services answer at.
    pub fn host_name(&self, host: &MoRef) -> Result<String, Error> {
        let pc = &self.service_content().property_collector;
        let req = soap::retrieve_properties_ex(
            pc,
            &host.kind,
            &["name"],
            &Objects::One(host.clone()),
            None,
        );
        let page = self.call(&req, |x| soap::parse_entity_page(x, req.method))?;
        page.items
            .into_iter()
            .find_map(|e| e.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Protocol {
                method: req.method.into(),
                detail: format!("host {} has no name", host.value),
            })
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
}
