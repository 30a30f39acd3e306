//! Reaching a source of the policy: log in to an ESXi host or vCenter with
//! the source's trust settings and secret, and know the datacenter its
//! datastore URLs need. A `kind = "lab"` source is the built-in lab, started
//! in-process on loopback for as long as the connection lives, with its
//! state (disks, snapshots, CBT) kept under the state directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use crate::lab::{Lab, LabConfig, LabHandle};
use crate::policy::model::{LabMode, Source, SourceKind, TlsTrust};
use crate::repo::backup::ReadShape;
use crate::vsphere::Session;
use crate::vsphere::datastore::ReadOptions;
use crate::vsphere::transport::{TicketSource, Transport};

/// A logged-in source.
pub struct Connected {
    pub source: String,
    /// Shared with the ticket source of host reads (`host_route`).
    pub session: Arc<Session>,
    /// How the source's certificates are trusted; a host read through a
    /// vCenter trusts the host's the same way.
    pub trust: TlsTrust,
    /// `dcPath` of datastore HTTP URLs for what has no datacenter of its
    /// own: the source's `datacenter`, `ha-datacenter` on a standalone
    /// host, empty on a vCenter without one. A VM's files are read through
    /// its own datacenter (`datacenter_of`).
    pub datacenter: String,
    /// The lab server, for a lab source: it stops when this is dropped.
    pub lab: Option<LabHandle>,
    /// How this source's datastores are read.
    pub read: ReadOptions,
}

/// The source's datastore read settings.
pub fn read_options(source: &Source) -> ReadOptions {
    ReadOptions {
        max_requests: source.max_requests as usize,
        shape: ReadShape {
            max_request_bytes: source.read_request,
            merge_gap_bytes: source.read_gap,
        },
        ..ReadOptions::default()
    }
}

/// Where a lab source keeps its state.
pub fn lab_state_dir(state_dir: &Path, source: &str) -> std::path::PathBuf {
    state_dir.join("lab").join(source)
}

impl Connected {
    /// `dcPath` of `vm`'s datastore URLs: the datacenter its parent chain
    /// leads to, else the source's `datacenter`.
    pub fn datacenter_of<'a>(&'a self, vm: &'a crate::vsphere::VmRecord) -> Result<&'a str> {
        match vm.datacenter.as_deref() {
            Some(dc) => Ok(dc),
            None if !self.datacenter.is_empty() => Ok(&self.datacenter),
            None => bail!(
                "the datacenter of VM {} on source `{}` is unknown (its inventory parents do not \
                 lead to one); name it with `datacenter = \"…\"` on the source",
                vm.name,
                self.source
            ),
        }
    }

    /// The VM named `name` on this source, as the host shows it now.
    pub fn vm(&self, name: &str) -> Result<crate::vsphere::VmRecord> {
        self.session
            .list_vms()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| anyhow!("VM {name} is gone from source `{}`", self.source))
    }
}

/// Where a VM's disks are read when the source is a vCenter.
pub enum HostRoute {
    /// From the file service of the ESXi host that runs the VM (`name`),
    /// each request with a generic service ticket from the vCenter: not
    /// through vCenter's own `/folder`, which proxies to a host (slow,
    /// capped, and HTTP 500 when it picks a host that does not hold the
    /// file's lock).
    Host {
        name: String,
        transport: Box<Transport>,
    },
    /// Through vCenter's own `/folder`, and why not from the host.
    Fallback(String),
}

impl Connected {
    /// How `vm`'s disks are read: `None` on a standalone host (its own
    /// `/folder`), else from the host that runs it or, when that host
    /// cannot be named, through the vCenter.
    pub fn host_route(&self, vm: &crate::vsphere::VmRecord) -> Option<HostRoute> {
        if !self.session.service_content().about.is_vcenter() {
            return None;
        }
        let Some(host) = &vm.host else {
            return Some(HostRoute::Fallback(
                "the vCenter does not say which host runs the VM".into(),
            ));
        };
        let name = match self.session.host_name(host) {
            Ok(n) => n,
            Err(e) => {
                return Some(HostRoute::Fallback(format!(
                    "the name of host {} is unknown: {e}",
                    host.value
                )));
            }
        };
        let session = self.session.clone();
        let tickets: TicketSource = Box::new(move |url| Ok(session.service_ticket(url)?.id));
        Some(
            match Transport::for_host(&format!("https://{name}"), &self.trust, tickets) {
                Ok(transport) => HostRoute::Host {
                    name,
                    transport: Box::new(transport),
                },
                Err(e) => HostRoute::Fallback(format!("host {name}: {e}")),
            },
        )
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = self.session.logout();
    }
}

/// Logs in to a source; a lab source is started first. `state_dir` is the
/// policy's `settings.state_dir`.
pub fn connect(source: &Source, state_dir: &Path) -> Result<Connected> {
    if source.kind == SourceKind::Lab {
        let mut config = LabConfig::new(lab_state_dir(state_dir, &source.name));
        config.vms = source.lab_vms;
        config.vcenter = source.lab_mode == LabMode::Vcenter;
        // What has no datacenter of its own goes to the first one.
        let datacenter = crate::lab::inventory::datacenters(config.vcenter)[0]
            .path
            .to_string();
        let lab = Lab::start(config)
            .with_context(|| format!("starting the built-in lab of source `{}`", source.name))?;
        let session = Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
            .with_context(|| format!("logging in to the lab of source `{}`", source.name))?;
        return Ok(Connected {
            source: source.name.clone(),
            session: Arc::new(session),
            trust: lab.tls_trust(),
            datacenter,
            lab: Some(lab),
            read: read_options(source),
        });
    }
    let url = source
        .url
        .as_deref()
        .ok_or_else(|| anyhow!("source `{}` has no url", source.name))?;
    let user = source
        .user
        .as_deref()
        .ok_or_else(|| anyhow!("source `{}` has no user", source.name))?;
    let password = source
        .password
        .as_ref()
        .ok_or_else(|| anyhow!("source `{}` has no password", source.name))?
        .read()
        .map_err(|e| anyhow!("source `{}`: password: {e}", source.name))?;
    let session = Session::connect(url, &source.tls, user, &password)
        .with_context(|| format!("logging in to source `{}` ({url})", source.name))?;
    let datacenter = match (
        &source.datacenter,
        session.service_content().about.is_vcenter(),
    ) {
        (Some(dc), _) => dc.clone(),
        (None, false) => "ha-datacenter".to_string(),
        // Each VM's own datacenter is found from the inventory.
        (None, true) => String::new(),
    };
    Ok(Connected {
        source: source.name.clone(),
        session: Arc::new(session),
        trust: source.tls.clone(),
        datacenter,
        lab: None,
        read: read_options(source),
    })
}
