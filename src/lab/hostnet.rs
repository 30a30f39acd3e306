//! The hosts' standard virtual switches and port groups, as a
//! `HostNetworkSystem` (`HostSystem.configManager.networkSystem`) serves
//! them: `networkInfo` lists the switches with their physical uplinks and
//! the port groups with their switch, and `AddVirtualSwitch`,
//! `AddPortGroup`, `RemovePortGroup` and `RemoveVirtualSwitch` change them
//! (vSphere API reference, HostNetworkSystem; govmomi's simulator,
//! `simulator/host_network_system.go`, answers the same faults).
//!
//! A host starts as an ESXi installation leaves it: `vSwitch0` with the
//! uplink `vmnic0` and the port groups `Management Network` and `VM
//! Network` (vSphere Networking guide, "vSphere Standard Switches"). A
//! switch added without a bridge has no uplink: its VMs reach each other
//! and nothing else, which is what a drill's isolated network is.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::{Fault, State, Vm};
use super::wire::moref;
use crate::vsphere::soap::escape;

/// One host's switches and port groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetwork {
    pub vswitches: Vec<VSwitch>,
    pub port_groups: Vec<PortGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSwitch {
    pub name: String,
    /// Physical NICs bridged to it (`vmnic0`): none means isolated.
    pub uplinks: Vec<String>,
    pub num_ports: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortGroup {
    pub name: String,
    pub vswitch: String,
    pub vlan: u32,
}

impl Default for HostNetwork {
    fn default() -> Self {
        let pg = |name: &str| PortGroup {
            name: name.into(),
            vswitch: "vSwitch0".into(),
            vlan: 0,
        };
        HostNetwork {
            vswitches: vec![VSwitch {
                name: "vSwitch0".into(),
                uplinks: vec!["vmnic0".into()],
                num_ports: 128,
            }],
            port_groups: vec![pg("Management Network"), pg("VM Network")],
        }
    }
}

/// The moref value of `host`'s network system: `networkSystem` on a
/// standalone host (as ESXi names it), one per host under a vCenter.
pub fn network_system_of(host: &str) -> String {
    if host == "ha-host" {
        "networkSystem".into()
    } else {
        format!("networkSystem-{host}")
    }
}

/// The host whose network system `value` is.
fn host_of(value: &str) -> Result<String, Fault> {
    match value {
        "networkSystem" => Ok("ha-host".into()),
        v => v
            .strip_prefix("networkSystem-")
            .map(str::to_string)
            .ok_or_else(|| Fault::not_found("HostNetworkSystem", v)),
    }
}

fn network_mut<'s>(st: &'s mut State, system: &str) -> Result<&'s mut HostNetwork, Fault> {
    Ok(st.host_networks.entry(host_of(system)?).or_default())
}

/// The network of the host of `system`, as it is now.
pub fn network(st: &State, system: &str) -> Result<HostNetwork, Fault> {
    Ok(network_of_host(st, &host_of(system)?))
}

/// The network of `host`: an installation's until changed.
fn network_of_host(st: &State, host: &str) -> HostNetwork {
    st.host_networks.get(host).cloned().unwrap_or_default()
}

fn already_exists(name: &str) -> Fault {
    Fault::new(
        "AlreadyExists",
        format!("The specified key, name, or identifier '{name}' already exists."),
    )
    .with("name", name)
}

fn not_found(what: &str) -> Fault {
    Fault::new(
        "NotFound",
        format!("The object or item referred to could not be found: {what}"),
    )
}

/// `AddVirtualSwitch`: a switch with no uplink (coffer never bridges one).
pub fn add_vswitch(st: &mut State, system: &str, name: &str, num_ports: u32) -> Result<(), Fault> {
    if name.is_empty() || name.len() > 32 {
        // Switch names are at most 32 characters (HostVirtualSwitch.name).
        return Err(Fault::new(
            "InvalidArgument",
            "A specified parameter was not correct: vswitchName",
        )
        .with("invalidProperty", "vswitchName"));
    }
    let net = network_mut(st, system)?;
    if net.vswitches.iter().any(|v| v.name == name) {
        return Err(already_exists(name));
    }
    net.vswitches.push(VSwitch {
        name: name.into(),
        uplinks: Vec::new(),
        num_ports: num_ports.max(8),
    });
    Ok(())
}

/// `AddPortGroup` on an existing switch.
pub fn add_port_group(
    st: &mut State,
    system: &str,
    name: &str,
    vswitch: &str,
    vlan: u32,
) -> Result<(), Fault> {
    if name.is_empty() {
        return Err(Fault::new(
            "InvalidArgument",
            "A specified parameter was not correct: name",
        )
        .with("invalidProperty", "name"));
    }
    let net = network_mut(st, system)?;
    if !net.vswitches.iter().any(|v| v.name == vswitch) {
        return Err(not_found(&format!("virtual switch {vswitch}")));
    }
    if net.port_groups.iter().any(|p| p.name == name) {
        return Err(already_exists(name));
    }
    net.port_groups.push(PortGroup {
        name: name.into(),
        vswitch: vswitch.into(),
        vlan,
    });
    Ok(())
}

/// The port groups the powered-on VMs of the host of `system` have
/// cards on.
fn in_use(st: &State, root: &Path, system: &str) -> Result<BTreeSet<String>, Fault> {
    let host = host_of(system)?;
    Ok(st
        .vms
        .iter()
        .filter(|v| v.powered_on && super::inventory::placement(st.vcenter, v).host == host)
        .flat_map(|v| cards(&v.vmx_text(root)))
        .map(|(port_group, _)| port_group)
        .collect())
}

/// Whether a VM's guest is on a network: one of its cards connects at
/// power-on and names a port group its host has. A card whose port group
/// the host lacks stays disconnected ("the network is not accessible"), as
/// one set not to connect does.
pub fn online(st: &State, vm: &Vm, root: &Path) -> bool {
    let host = super::inventory::placement(st.vcenter, vm).host;
    let net = network_of_host(st, host);
    cards(&vm.vmx_text(root))
        .into_iter()
        .any(|(pg, connects)| connects && net.port_groups.iter().any(|p| p.name == pg))
}

/// The present network cards of a .vmx (`ethernet0` … `ethernet9`): each
/// one's port group (`networkName`) and whether it connects at power-on
/// (`startConnected`, TRUE when absent).
fn cards(vmx: &str) -> Vec<(String, bool)> {
    let value = |card: &str, key: &str| crate::vsphere::vmx::value(vmx, &format!("{card}.{key}"));
    (0..10)
        .map(|n| format!("ethernet{n}"))
        .filter(|c| value(c, "present").is_some_and(|v| v.eq_ignore_ascii_case("true")))
        .filter_map(|c| {
            let pg = value(&c, "networkName")?.to_string();
            let connects =
                value(&c, "startConnected").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
            Some((pg, connects))
        })
        .collect()
}

/// `RemovePortGroup`: refused while a powered-on VM's card is on it
/// ("ResourceInUse: the port group cannot be removed because there are
/// virtual network adapters associated with it", vSphere API reference).
pub fn remove_port_group(
    st: &mut State,
    root: &Path,
    system: &str,
    name: &str,
) -> Result<(), Fault> {
    if in_use(st, root, system)?.contains(name) {
        return Err(
            Fault::new("ResourceInUse", format!("The resource '{name}' is in use."))
                .with("name", name),
        );
    }
    let net = network_mut(st, system)?;
    let before = net.port_groups.len();
    net.port_groups.retain(|p| p.name != name);
    if net.port_groups.len() == before {
        return Err(not_found(&format!("port group {name}")));
    }
    Ok(())
}

/// `RemoveVirtualSwitch`, with its port groups; refused while one of them
/// is in use.
pub fn remove_vswitch(st: &mut State, root: &Path, system: &str, name: &str) -> Result<(), Fault> {
    let used = in_use(st, root, system)?;
    let net = network_mut(st, system)?;
    if !net.vswitches.iter().any(|v| v.name == name) {
        return Err(not_found(&format!("virtual switch {name}")));
    }
    if net
        .port_groups
        .iter()
        .any(|p| p.vswitch == name && used.contains(&p.name))
    {
        return Err(
            Fault::new("ResourceInUse", format!("The resource '{name}' is in use."))
                .with("name", name),
        );
    }
    net.port_groups.retain(|p| p.vswitch != name);
    net.vswitches.retain(|v| v.name != name);
    Ok(())
}

/// The HostNetworkSystem object with `networkInfo` (a HostNetworkInfo:
/// `vswitch` with `name`, `pnic` keys and `portgroup` keys; `portgroup`
/// with `key`, `vswitch` key and `spec`).
pub fn object(st: &State, system: &str, paths: &[String], all: bool) -> Result<String, Fault> {
    let net = network(st, system)?;
    let mut out = format!("<objects>{}", moref("obj", "HostNetworkSystem", system));
    if all || paths.iter().any(|p| p == "networkInfo") {
        out.push_str("<propSet><name>networkInfo</name><val xsi:type=\"HostNetworkInfo\">");
        for v in &net.vswitches {
            out.push_str(&format!(
                "<vswitch><name>{n}</name><key>key-vim.host.VirtualSwitch-{n}</key><numPorts>{p}</numPorts><numPortsAvailable>{p}</numPortsAvailable><mtu>1500</mtu>",
                n = escape(&v.name),
                p = v.num_ports
            ));
            for pg in net.port_groups.iter().filter(|p| p.vswitch == v.name) {
                out.push_str(&format!(
                    "<portgroup>key-vim.host.PortGroup-{}</portgroup>",
                    escape(&pg.name)
                ));
            }
            for nic in &v.uplinks {
                out.push_str(&format!(
                    "<pnic>key-vim.host.PhysicalNic-{}</pnic>",
                    escape(nic)
                ));
            }
            out.push_str(&format!(
                "<spec><numPorts>{}</numPorts></spec></vswitch>",
                v.num_ports
            ));
        }
        for pg in &net.port_groups {
            out.push_str(&format!(
                "<portgroup><key>key-vim.host.PortGroup-{n}</key><vswitch>key-vim.host.VirtualSwitch-{s}</vswitch><spec><name>{n}</name><vlanId>{vlan}</vlanId><vswitchName>{s}</vswitchName><policy></policy></spec></portgroup>",
                n = escape(&pg.name),
                s = escape(&pg.vswitch),
                vlan = pg.vlan
            ));
        }
        out.push_str("</val></propSet>");
    }
    out.push_str("</objects>");
    Ok(out)
}
