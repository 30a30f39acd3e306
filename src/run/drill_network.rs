//! The network a boot drill's VM is connected to: a copy of a production
//! VM carries its IP addresses and host names, so it must never meet
//! production. With `network = "isolated"` (the default) coffer builds, on
//! the drill host, a standard switch with no physical uplink and a port
//! group on it (`HostNetworkSystem.AddVirtualSwitch` / `AddPortGroup`),
//! reusing them when a run before left them, and removes both when the
//! drill is over. A named port group must exist and sit on a switch with no
//! uplink: coffer refuses, before restoring anything, a port group that
//! reaches the physical network.

use crate::vsphere::Session;
use crate::vsphere::soap;
use crate::vsphere::types::MoRef;

/// The switch and port group coffer builds for isolated drills (a switch
/// name is at most 32 characters).
pub const ISOLATED_SWITCH: &str = "coffer-drill";
pub const ISOLATED_PORT_GROUP: &str = "coffer-drill-isolated";

/// What `drill.network` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillNetwork {
    /// coffer's own switch and port group, removed after the drill.
    Isolated,
    /// An existing port group, which must have no uplink.
    PortGroup(String),
}

impl DrillNetwork {
    pub fn from_policy(network: Option<&str>) -> DrillNetwork {
        match network {
            None | Some("isolated") => DrillNetwork::Isolated,
            Some(name) => DrillNetwork::PortGroup(name.to_string()),
        }
    }
}

/// The drill's network, ready: the port group to connect the VM to, and
/// what coffer built for it (removed when dropped, after the VM).
pub struct Prepared<'a> {
    pub port_group: String,
    built: Option<Built<'a>>,
    /// What the preparation did, for the drill's detail.
    pub note: String,
}

struct Built<'a> {
    session: &'a Session,
    system: MoRef,
}

/// Makes the drill's network ready on `host`.
pub fn prepare<'a>(
    session: &'a Session,
    host: &MoRef,
    wanted: &DrillNetwork,
) -> Result<Prepared<'a>, String> {
    let system = session
        .network_system(host)
        .map_err(|e| format!("finding the network system of {host}: {e}"))?;
    let net = session
        .host_network(&system)
        .map_err(|e| format!("reading the networks of {host}: {e}"))?;
    match wanted {
        DrillNetwork::PortGroup(name) => {
            let switch = net.switch_of(name).ok_or_else(|| {
                format!(
                    "port group `{name}` does not exist on the drill host (it has {}); create it on a switch without uplink, or use network = \"isolated\"",
                    net.port_groups
                        .iter()
                        .map(|p| format!("`{}`", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            refuse_uplinks(name, &switch.name, &switch.uplinks)?;
            Ok(Prepared {
                port_group: name.clone(),
                built: None,
                note: format!(
                    "network: port group {name} (switch {}, no uplink)",
                    switch.name
                ),
            })
        }
        DrillNetwork::Isolated => {
            // What an earlier drill left is reused, but never a switch, or
            // a port group of that name on another switch, that someone
            // gave an uplink.
            let switch = net.vswitches.iter().find(|v| v.name == ISOLATED_SWITCH);
            for s in switch
                .iter()
                .copied()
                .chain(net.switch_of(ISOLATED_PORT_GROUP))
            {
                refuse_uplinks(ISOLATED_PORT_GROUP, &s.name, &s.uplinks)?;
            }
            if switch.is_none() {
                session
                    .call_empty(&soap::add_virtual_switch(&system, ISOLATED_SWITCH))
                    .map_err(|e| format!("creating switch {ISOLATED_SWITCH}: {e}"))?;
            }
            if net.switch_of(ISOLATED_PORT_GROUP).is_none() {
                session
                    .call_empty(&soap::add_port_group(
                        &system,
                        ISOLATED_PORT_GROUP,
                        ISOLATED_SWITCH,
                    ))
                    .map_err(|e| format!("creating port group {ISOLATED_PORT_GROUP}: {e}"))?;
            }
            Ok(Prepared {
                port_group: ISOLATED_PORT_GROUP.into(),
                note: format!(
                    "network: isolated port group {ISOLATED_PORT_GROUP} on switch {ISOLATED_SWITCH} (no uplink){}",
                    if switch.is_none() {
                        ", built for the drill"
                    } else {
                        ", left by an earlier drill"
                    }
                ),
                built: Some(Built { session, system }),
            })
        }
    }
}

fn refuse_uplinks(port_group: &str, switch: &str, uplinks: &[String]) -> Result<(), String> {
    if uplinks.is_empty() {
        return Ok(());
    }
    let nics: Vec<&str> = uplinks
        .iter()
        .map(|u| u.rsplit('-').next().unwrap_or(u))
        .collect();
    Err(format!(
        "port group `{port_group}` is on switch {switch}, which has the uplink(s) {}: a drill VM there would meet production with its IP addresses and host names; use a port group on a switch without uplink, or network = \"isolated\"",
        nics.join(", ")
    ))
}

impl Drop for Prepared<'_> {
    /// Removes what coffer built: the port group, then the switch. A port
    /// group another drill still uses is left (the host refuses with
    /// ResourceInUse), and that drill removes it.
    fn drop(&mut self) {
        let Some(b) = self.built.take() else {
            return;
        };
        if let Err(e) = b
            .session
            .call_empty(&soap::remove_port_group(&b.system, ISOLATED_PORT_GROUP))
        {
            eprintln!(
                "coffer: removing drill port group {ISOLATED_PORT_GROUP} failed: {e}; the next drill removes it"
            );
            return;
        }
        if let Err(e) = b
            .session
            .call_empty(&soap::remove_virtual_switch(&b.system, ISOLATED_SWITCH))
        {
            eprintln!(
                "coffer: removing drill switch {ISOLATED_SWITCH} failed: {e}; the next drill removes it"
            );
        }
    }
}
