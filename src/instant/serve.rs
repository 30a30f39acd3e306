//! Serving an export over NFS v3 where an ESXi host finds it.
//!
//! ESXi mounts an NFS v3 datastore from the host and path of its
//! `HostNasVolumeSpec`, which has no port field: its client asks the
//! portmapper on port 111 for the MOUNT and NFS programs' ports, and the
//! vSphere firewall's `nfsClient` rule set opens outgoing TCP to the NFS
//! server for that (vSphere Storage guide, "NFS Firewall Configurations";
//! RFC 1833 §3 for the portmapper's GETPORT). coffer listens on two ports
//! of the address it is given:
//! - 2049, the NFS port (RFC 1813 §"Server ports"), serving MOUNT v3 and
//!   NFS v3 (and the portmapper program);
//! - 111, the portmapper's port, serving the same three programs: its
//!   GETPORT answers 111 for MOUNT and NFS, which 111 serves.
//!
//! Both ports are below 1024: binding them takes root or
//! `CAP_NET_BIND_SERVICE`. Tests bind them on their own loopback address
//! (127.x.y.z), so that several servers run side by side.

use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use nfsserve::tcp::{NFSTcp, NFSTcpListener};

use super::export::PointExport;

/// The port of NFS.
pub const NFS_PORT: u16 = 2049;
/// The portmapper's port.
pub const PORTMAP_PORT: u16 = 111;

/// A running NFS server: dropping it stops both listeners.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    pub address: IpAddr,
    pub ports: Vec<u16>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves `export` as `/<export_name>` on `address`, ports `ports` (the
/// portmapper's first).
pub fn serve(
    export: PointExport,
    export_name: &str,
    address: IpAddr,
    ports: &[u16],
) -> Result<Server> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("coffer-nfs")
        .build()
        .context("starting the NFS server's runtime")?;
    let mut bound = Vec::new();
    for port in ports {
        let fs = export.clone();
        let at = format!("{address}:{port}");
        let mut listener = runtime
            .block_on(NFSTcpListener::bind(&at, fs))
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                } else {
                    ""
                };
                anyhow!("listening on {at} for NFS: {e}{hint}")
            })?;
        listener.with_export_name(export_name);
        bound.push(listener.get_listen_port());
        runtime.spawn(async move {
            if let Err(e) = listener.handle_forever().await {
                tracing::error!("NFS listener on {at}: {e}");
            }
        });
    }
    Ok(Server {
        runtime: Some(runtime),
        address,
        ports: bound,
    })
}
