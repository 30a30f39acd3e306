//! The built-in lab (DESIGN.md §5): an in-process ESXi simulator on
//! loopback that speaks the same SOAP subset and datastore HTTP interface as
//! a real host, so coffer runs on a fresh machine with no host, and the
//! end-to-end tests have a fast, fault-injectable test bed.
//!
//! It owns a state directory: the VMs, their sparse disks with deltas per
//! snapshot in the formats ESXi writes (`vmfsSparse`, or `SEsparse` on a
//! VMFS6 datastore, as the vSphere Storage guide's "Snapshot Formats" says;
//! see `disk`), snapshots a user took before coffer (`user_snapshot`),
//! change tracking, the made-up guest data (`content`) or the content of
//! a disk image (`image`), what a guest needs to boot (`boot`),
//! all persisted under an flock (`state`) so a backup in one run and an
//! incremental in the next work, and `coffer lab write` can change a VM's
//! disks beside a running lab. It serves HTTPS with a certificate of its
//! own (kept in the state directory, so a pinned thumbprint survives
//! restarts) through a small threaded server (`http`); `vim` answers SOAP,
//! `datastore` the file transfers, `faults` holds the switches tests flip;
//! `props` renders property collector answers and `wire` the small pieces of
//! vim25 XML both share. A restore through the OVF import path meets the
//! OvfManager (`ovf` reads the descriptor, `import_spec` answers
//! CreateImportSpec), ResourcePool.ImportVApp (`import`) and the
//! HttpNfcLease with its NFC upload endpoint (`nfc`, which decodes the
//! streamOptimized disks with `vmdk_stream`).
//!
//! It must never be mistaken for a host: it binds to 127.0.0.1 only, and it
//! implements the subset `src/vsphere` speaks, not vim25 at large.

mod boot;
mod config_spec;
mod content;
mod datastore;
pub mod datastore_system;
pub mod disk;
pub mod faults;
pub mod guest;
pub mod guestops;
pub mod hostnet;
mod http;
mod image;
mod import;
mod import_spec;
#[cfg(test)]
mod import_tests;
pub mod inventory;
pub mod lifecycle;
pub mod net;
pub mod nfc;
pub mod ops;
mod ovf;
mod props;
pub mod state;
mod vim;
mod vmdk_stream;
mod wire;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use faults::{FAULTS_ENV, Faults, NfcDiskStats, NfcLeaseStats, Stats};
pub use ops::DiskWrite;
pub use state::{MadeDisk, NewDisk, NewDiskError};

use crate::policy::model::TlsTrust;
use crate::vsphere::delta::DeltaFormat;
use crate::vsphere::transport::{format_thumbprint, thumbprint_of};

/// The user the lab creates unless told otherwise.
pub const DEFAULT_USER: &str = "root";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup of the lab: {0}")]
    Tls(String),
    #[error("{0}")]
    Faults(String),
    #[error("{name}: {message}")]
    Lab { name: String, message: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

impl From<state::Fault> for Error {
    fn from(f: state::Fault) -> Error {
        Error::Lab {
            name: f.name,
            message: f.message,
        }
    }
}

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Holds `state.json`, `datastore/` and `tls/`; created if missing.
    pub state_dir: PathBuf,
    /// Lab VMs to have (`lab-vm-01` …): missing ones are created, none removed.
    pub vms: u32,
    /// 0: any free port.
    pub port: u16,
    pub user: String,
    /// The password on first start (random when `None`); later starts keep
    /// the stored one.
    pub password: Option<String>,
    /// Most objects in one property collector page.
    pub page_objects: usize,
    /// How much of a disk one QueryChangedDiskAreas answer covers.
    pub changed_areas_window_bytes: u64,
    /// New VMs' instance UUIDs derive from this and their names; `None`:
    /// from their names alone, the same in every lab (VMs copied between
    /// hosts).
    pub uuid_seed: Option<String>,
    /// Whether the datastore is VMFS6, where snapshot deltas are SEsparse
    /// as ESXi writes them there (vSphere Storage guide, "Snapshot
    /// Formats"), or VMFS5 (vmfsSparse).
    /// `None` keeps what the state says (VMFS5 for a new lab).
    pub vmfs6: Option<bool>,
    /// Answer as a vCenter with two datacenters and a host in each (see
    /// `inventory`) rather than as a standalone ESXi host.
    pub vcenter: bool,
}

impl LabConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            state_dir: state_dir.into(),
            vms: 2,
            port: 0,
            user: DEFAULT_USER.into(),
            password: None,
            page_objects: 100,
            changed_areas_window_bytes: 16 << 20,
            uuid_seed: None,
            vmfs6: None,
            vcenter: false,
        }
    }
}

/// The request router: SOAP, datastore, admin.
struct Shared {
    store: state::Store,
    faults: Arc<Faults>,
    stats: Arc<Stats>,
    vim: vim::Vim,
    user: String,
    password: String,
}

impl Shared {
    fn authenticated(&self, head: &http::Head) -> bool {
        if self
            .vim
            .is_session(vim::cookie_session(head.header("cookie")).as_deref())
        {
            return true;
        }
        // Basic auth with the lab's credentials, for admin calls from scripts.
        use base64::Engine;
        head.header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .is_some_and(|d| d == format!("{}:{}", self.user, self.password).as_bytes())
    }
}

impl http::Handler for Shared {
    fn handle(&self, head: &http::Head, body: &mut http::Body<'_>) -> http::Response {
        use http::Response;
        // Sessions expire between requests (see `Faults::expire_sessions`).
        if self
            .faults
            .expire_sessions
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.vim.expire_sessions();
        }
        self.vim.leases.expire(&self.store, &self.faults);
        match (head.method.as_str(), head.path()) {
            ("GET", "/sdk/vimServiceVersions.xml") => {
                Response::new(200, "text/xml", vim::service_versions_xml())
            }
            ("POST", "/sdk") | ("POST", "/sdk/") => {
                let xml = match body.read_all() {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => return Response::text(400, format!("cannot read the body: {e}")),
                };
                let session = vim::cookie_session(head.header("cookie"));
                let answer = self.vim.call(
                    &self.store,
                    &self.faults,
                    (&self.user, &self.password),
                    session,
                    &xml,
                );
                let mut r = Response::new(answer.status, "text/xml; charset=utf-8", answer.xml);
                if let Some(c) = answer.set_cookie {
                    r = r.header("Set-Cookie", c);
                }
                r
            }
            (_, p) if p.starts_with("/folder/") && self.proxy_picks_wrong_host(p) => {
                Response::text(
                    500,
                    "Internal Server Error: the request went to a host that does not hold \
                     the file's lock (fault injected by the lab)",
                )
            }
            (_, p) if p.starts_with("/folder/") => datastore::handle(
                &self.store,
                &self.faults,
                &self.stats,
                self.authenticated(head),
                self.vim.vcenter,
                head,
                body,
            ),
            // A disk of an OVF import, by its lease (see `nfc`): a host
            // serves it; a vCenter hands out its hosts' URLs instead.
            (_, p) if p.starts_with("/nfc/") => {
                if self.vim.vcenter {
                    return Response::text(
                        404,
                        "a vCenter serves no NFC uploads; use the host URL of the lease",
                    );
                }
                nfc::serve_upload(
                    &self.vim.leases,
                    &self.store,
                    &self.faults,
                    None,
                    head,
                    body,
                )
            }
            // A guest file, once, by the token of its transfer (see
            // `guestops`): the token is the authorisation, as on a host.
            ("GET", "/guestFile") => {
                let id = head
                    .query()
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("id="))
                    .unwrap_or_default();
                let taken = self
                    .vim
                    .guest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take_transfer(id);
                match taken {
                    Some(bytes) => Response::new(200, "application/octet-stream", bytes),
                    None => Response::text(404, "no such transfer"),
                }
            }
            ("POST", "/lab/faults") => {
                if !self.authenticated(head) {
                    return Response::text(401, "log in, or use basic auth with the lab's user");
                }
                let spec = body.read_all().unwrap_or_default();
                match self.faults.apply(&String::from_utf8_lossy(&spec)) {
                    Ok(()) => Response::text(204, ""),
                    Err(e) => Response::text(400, e),
                }
            }
            ("GET", "/lab/stats") => {
                if !self.authenticated(head) {
                    return Response::text(401, "log in, or use basic auth with the lab's user");
                }
                let json = serde_json::json!({
                    "served_bytes": self.stats.served(),
                    "nfc": self.stats.nfc_leases(),
                });
                Response::new(200, "application/json", json.to_string())
            }
            _ => Response::text(404, "404 page not found"),
        }
    }
}

impl Shared {
    /// vCenter's `/folder` proxy under the `proxy-wrong-host` fault: a VM's
    /// disk file is asked of a host without its lock (see `Faults`).
    fn proxy_picks_wrong_host(&self, path: &str) -> bool {
        use std::sync::atomic::Ordering;
        if !self.vim.vcenter || !self.faults.proxy_wrong_host.load(Ordering::SeqCst) {
            return false;
        }
        let rel = datastore::percent_decode(path.trim_start_matches("/folder/"), false);
        self.store
            .read(|st, _| Ok(inventory::is_locked_disk_file(st, &rel)))
            .unwrap_or(false)
    }
}

/// One ESXi host of the lab's vCenter: its own `/folder`, for requests
/// that carry a generic service ticket vCenter made for them (the cookie
/// `vmware_cgi_ticket`, as govmomi's `object.Datastore.ServiceTicket`
/// sends it), serving the files of the VMs it runs. It speaks as a host:
/// `dcPath` is `ha-datacenter` or left out.
struct HostHandler {
    shared: Arc<Shared>,
    /// The host's moref.
    host: &'static str,
    /// `127.0.0.1:port` it answers at.
    addr: String,
}

/// The cookie a generic service ticket travels in.
const TICKET_COOKIE: &str = "vmware_cgi_ticket";

impl http::Handler for HostHandler {
    fn handle(&self, head: &http::Head, body: &mut http::Body<'_>) -> http::Response {
        use http::Response;
        if head.path().starts_with("/nfc/") {
            let shared = &self.shared;
            shared.vim.leases.expire(&shared.store, &shared.faults);
            return nfc::serve_upload(
                &shared.vim.leases,
                &shared.store,
                &shared.faults,
                Some(self.host),
                head,
                body,
            );
        }
        let Some(raw) = head.path().strip_prefix("/folder/") else {
            return Response::text(404, "404 page not found");
        };
        if head.method != "GET" {
            return Response::text(405, "the lab's hosts serve GET with a ticket only");
        }
        let ticket = head.header("cookie").and_then(|c| {
            c.split(';').find_map(|kv| {
                let (n, v) = kv.trim().split_once('=')?;
                (n.trim() == TICKET_COOKIE).then(|| v.trim().trim_matches('"').to_string())
            })
        });
        let valid =
            ticket.is_some_and(|t| self.shared.vim.take_ticket(&t, &self.addr, &head.target));
        if !valid {
            return Response::text(401, "a valid vmware_cgi_ticket cookie is needed");
        }
        let rel = datastore::percent_decode(raw, false);
        let here = self
            .shared
            .store
            .read(|st, _| Ok(inventory::host_serves(st, self.host, &rel)))
            .unwrap_or(false);
        if !here {
            return Response::text(404, format!("{rel}: not on this host's datastore"));
        }
        datastore::handle(
            &self.shared.store,
            &self.shared.faults,
            &self.shared.stats,
            true,
            false,
            head,
            body,
        )
    }
}

/// Starts labs.
pub struct Lab;

/// A running lab; the server stops when it is dropped.
pub struct LabHandle {
    shared: Arc<Shared>,
    url: String,
    thumbprint: [u8; 32],
    ca_pem: String,
    /// Fails the import leases that time out.
    _reaper: nfc::Reaper,
    /// vCenter mode: the hosts' own listeners.
    _hosts: Vec<http::Server>,
    // Dropped last: stops the server.
    _server: http::Server,
}

impl std::fmt::Debug for LabHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabHandle")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The lab's certificate: a CA and a leaf for 127.0.0.1 it signed, made on
/// first start and kept in `tls/` so the thumbprint stays the same. Made
/// under the lab's lock: two processes starting the lab at once would
/// otherwise each write a key, and one would pair its certificate with the
/// other's key.
fn certificate(
    store: &state::Store,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), Error> {
    let _lock = store
        .lock()
        .map_err(io("taking the lab lock for its certificate"))?;
    let tls = store.dir().join("tls");
    let (ca_path, cert_path, key_path) = (
        tls.join("ca.pem"),
        tls.join("cert.pem"),
        tls.join("key.pem"),
    );
    if !cert_path.exists() {
        std::fs::create_dir_all(&tls).map_err(io(format!("creating {}", tls.display())))?;
        let err = |e: rcgen::Error| Error::Tls(e.to_string());
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coffer lab CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coffer lab");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        std::fs::write(&ca_path, ca_cert.pem()).map_err(io("writing the lab CA"))?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(io("writing the lab key"))?;
        // The certificate last and whole (renamed into place): its presence
        // means the set is complete, even if this process is killed.
        let partial = tls.join("cert.pem.tmp");
        std::fs::write(&partial, cert.pem())
            .and_then(|()| std::fs::rename(&partial, &cert_path))
            .map_err(io("writing the lab certificate"))?;
    }
    let tls_err = |what: &str, e: rustls::pki_types::pem::Error| Error::Tls(format!("{what}: {e}"));
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err("reading the lab certificate", e))?;
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|e| tls_err("reading the lab key", e))?;
    let ca = std::fs::read_to_string(&ca_path).map_err(io("reading the lab CA"))?;
    Ok((chain, key, ca))
}

impl Lab {
    /// Loads or creates the state in `config.state_dir` and serves it on
    /// 127.0.0.1. Faults named in `COFFER_LAB_FAULTS` are switched on.
    pub fn start(config: LabConfig) -> Result<LabHandle, Error> {
        let store = state::Store::new(&config.state_dir);
        let st = store
            .init_with(
                config.vms,
                &config.user,
                config.password.as_deref(),
                config.uuid_seed.as_deref(),
            )
            .map_err(io(format!(
                "preparing the lab state in {}",
                config.state_dir.display()
            )))?;
        if let Some(vmfs6) = config.vmfs6.filter(|&v| v != st.vmfs6) {
            store
                .update(|s, _| {
                    s.vmfs6 = vmfs6;
                    Ok(())
                })
                .map_err(Error::from)?;
        }
        if config.vcenter != st.vcenter {
            store
                .update(|s, _| {
                    s.vcenter = config.vcenter;
                    Ok(())
                })
                .map_err(Error::from)?;
        }
        // Imports whose lease died with an earlier lab process.
        if st.vms.iter().any(|v| v.import_lease.is_some()) {
            store.update(import::discard_orphans).map_err(Error::from)?;
        }
        let (chain, key, ca_pem) = certificate(&store)?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Tls("the lab certificate file holds no certificate".into()))?;
        let thumbprint = thumbprint_of(leaf.as_ref());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let faults = Arc::new(Faults::default());
        if let Ok(spec) = std::env::var(FAULTS_ENV) {
            faults
                .apply(&spec)
                .map_err(|e| Error::Faults(format!("{FAULTS_ENV}: {e}")))?;
        }
        let stats: Arc<Stats> = Arc::default();
        let mut vim = vim::Vim::new(
            config.page_objects,
            config.changed_areas_window_bytes.max(disk::BLOCK_BYTES),
            config.vcenter,
        );
        vim.leases = nfc::Leases::new(stats.clone());
        let shared = Arc::new(Shared {
            store,
            faults,
            stats,
            vim,
            user: st.user,
            password: st.password,
        });
        let listener = TcpListener::bind(("127.0.0.1", config.port))
            .map_err(io(format!("listening on 127.0.0.1:{}", config.port)))?;
        let tls_config = Arc::new(tls);
        let server = http::Server::start(listener, tls_config.clone(), shared.clone())
            .map_err(io("starting the lab server"))?;
        // vCenter mode: each host answers on a listener of its own.
        let mut hosts = Vec::new();
        if config.vcenter {
            for dc in inventory::datacenters(true) {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .map_err(io(format!("listening for host {}", dc.host)))?;
                let addr = listener
                    .local_addr()
                    .map_err(io("the address of a host's listener"))?
                    .to_string();
                let handler = Arc::new(HostHandler {
                    shared: shared.clone(),
                    host: dc.host,
                    addr: addr.clone(),
                });
                hosts.push(
                    http::Server::start(listener, tls_config.clone(), handler)
                        .map_err(io("starting a host's listener"))?,
                );
                vim::lock_map(&shared.vim.host_addrs).insert(dc.host.to_string(), addr);
            }
        }
        let reaper = {
            let shared = shared.clone();
            nfc::Reaper::start(move || shared.vim.leases.expire(&shared.store, &shared.faults))
                .map_err(io("starting the lease reaper"))?
        };
        Ok(LabHandle {
            url: format!("https://{}/sdk", server.addr()),
            _reaper: reaper,
            shared,
            thumbprint,
            ca_pem,
            _hosts: hosts,
            _server: server,
        })
    }
}

impl LabHandle {
    /// `https://127.0.0.1:<port>/sdk`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `sha256:AB:CD:…` of the server certificate, as policies pin it.
    pub fn thumbprint(&self) -> String {
        format_thumbprint(&self.thumbprint)
    }

    pub fn thumbprint_bytes(&self) -> [u8; 32] {
        self.thumbprint
    }

    /// How a client trusts this lab: its pinned thumbprint.
    pub fn tls_trust(&self) -> TlsTrust {
        TlsTrust::Thumbprint(self.thumbprint)
    }

    /// The PEM of the CA that signed the lab's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn user(&self) -> &str {
        &self.shared.user
    }

    pub fn password(&self) -> &str {
        &self.shared.password
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn state_dir(&self) -> &Path {
        self.shared.store.dir()
    }

    /// The datastore's folder: `[datastore1] x` is `<this>/x`.
    pub fn datastore_dir(&self) -> PathBuf {
        self.shared.store.datastore_root()
    }

    /// The folder of the lab's datastore `name` (`datastore1`, `nfs1`).
    pub fn datastore_folder(&self, name: &str) -> PathBuf {
        state::datastore_folder(&self.shared.store.datastore_root(), name)
    }

    /// `write(state_dir, vm, percent)` on this lab's state.
    pub fn write(&self, vm: &str, percent: f64) -> Result<Vec<DiskWrite>, Error> {
        write(self.state_dir(), vm, percent)
    }

    /// `user_snapshot(state_dir, vm, name, format)` on this lab's state.
    pub fn user_snapshot(
        &self,
        vm: &str,
        name: &str,
        format: Option<DeltaFormat>,
    ) -> Result<String, Error> {
        user_snapshot(self.state_dir(), vm, name, format)
    }
}

/// Sets the delta format of `vm`'s next snapshots (coffer's and users'
/// alike); `None` goes back to the datastore's (`LabConfig::vmfs6`).
pub fn set_delta_format(
    state_dir: &Path,
    vm: &str,
    format: Option<DeltaFormat>,
) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, _| {
        let v = st
            .vms
            .iter_mut()
            .find(|v| v.name == vm || v.moref() == vm)
            .ok_or_else(|| state::Fault::not_found("VirtualMachine", vm))?;
        v.delta_format = format;
        Ok(())
    })?)
}

/// Takes a snapshot of `vm` (name or `vm-N`) as a user would in the vSphere
/// client (CreateSnapshot, no memory, not quiesced), its deltas in `format`
/// or, when `None`, in the format the datastore and the VM call for.
/// Answers the snapshot's moref. Safe beside a running lab.
pub fn user_snapshot(
    state_dir: &Path,
    vm: &str,
    name: &str,
    format: Option<DeltaFormat>,
) -> Result<String, Error> {
    let store = state::Store::new(state_dir);
    let spec = ops::SnapshotSpec {
        name: name.into(),
        description: "taken by a user, not by coffer".into(),
        memory: false,
        quiesce: false,
    };
    let id = store.update(|st, root| {
        let moref = st
            .vms
            .iter()
            .find(|v| v.name == vm || v.moref() == vm)
            .map(|v| v.moref())
            .ok_or_else(|| state::Fault::not_found("VirtualMachine", vm))?;
        ops::create_snapshot_as(st, root, &moref, &spec, ops::Injected::default(), format)
    })?;
    Ok(state::snapshot_moref(id))
}

/// Where the lab keeps its state when no directory is given:
/// `$XDG_STATE_HOME/coffer/lab`, else `~/.local/state/coffer/lab`.
pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("coffer").join("lab")
}

/// Writes scattered 64 KiB blocks over `percent` % of every disk of `vm`
/// (name or `vm-N`) in the lab state at `state_dir`, as its guest would:
/// recorded by change tracking, never touching a snapshot's view. Safe
/// beside a running lab.
pub fn write(state_dir: &Path, vm: &str, percent: f64) -> Result<Vec<DiskWrite>, Error> {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("the OS random source works");
    let store = state::Store::new(state_dir);
    if !state_dir.join("state.json").exists() {
        return Err(Error::Lab {
            name: "NotFound".into(),
            message: format!(
                "no lab state in {}; start one with `coffer lab serve --state {}`",
                state_dir.display(),
                state_dir.display()
            ),
        });
    }
    Ok(store
        .update(|st, root| ops::write_percent(st, root, vm, percent, u64::from_le_bytes(seed)))?)
}

/// Extends disk `key` of `vm` to `capacity_bytes`, as an administrator's
/// ReconfigVM_Task would (see `ops::extend_disk`).
pub fn extend_disk(state_dir: &Path, vm: &str, key: i32, capacity_bytes: u64) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, root| ops::extend_disk(st, root, vm, key, capacity_bytes))?)
}

/// Adds a VM `name` with disks of `sizes` bytes of made-up data to the lab
/// in `state_dir` (see `Store::add_vm`).
pub fn add_vm(state_dir: &Path, name: &str, sizes: &[u64]) -> Result<(), Error> {
    let disks: Vec<NewDisk> = sizes
        .iter()
        .map(|&capacity_bytes| NewDisk::Generated { capacity_bytes })
        .collect();
    add_vm_with(state_dir, name, &disks).map(|_| ())
}

/// Adds a VM `name` with `disks` (made-up data or disk images) to the lab
/// in `state_dir` (see `Store::add_vm`); answers what each disk holds.
pub fn add_vm_with(
    state_dir: &Path,
    name: &str,
    disks: &[NewDisk],
) -> Result<Vec<MadeDisk>, Error> {
    state::Store::new(state_dir)
        .add_vm(name, disks)
        .map_err(io(format!(
            "adding VM {name} to the lab in {}",
            state_dir.display()
        )))
}

/// Sets the `diskMode` of disk `key` of `vm` (see `ops::set_disk_mode`).
pub fn set_disk_mode(state_dir: &Path, vm: &str, key: i32, mode: &str) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, _| ops::set_disk_mode(st, vm, key, mode))?)
}

/// Makes disk `key` of `vm` a raw device mapping in compatibility mode
/// `mode` (see `ops::map_raw_device`).
pub fn map_raw_device(
    state_dir: &Path,
    vm: &str,
    key: i32,
    mode: disk::RdmMode,
) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, root| ops::map_raw_device(st, root, vm, key, mode))?)
}

/// Sets `vm`'s guest family and `disk.EnableUUID` (see `guest::set_guest`):
/// a quiesced snapshot of a Windows guest with it gets a VSS manifest.
pub fn set_guest(
    state_dir: &Path,
    vm: &str,
    os: guest::GuestOs,
    disk_enable_uuid: bool,
) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, root| guest::set_guest(st, root, vm, os, disk_enable_uuid))?)
}

/// A Storage vMotion of every disk of `vm` to the lab's datastore
/// `datastore` (`datastore1`, VMFS, or `nfs1`, NFS): see
/// `ops::relocate_disks`.
pub fn relocate(state_dir: &Path, vm: &str, datastore: &str) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, root| ops::relocate_disks(st, root, vm, None, datastore))?)
}

/// Encrypts `vm` with vSphere VM Encryption's key `key` (its
/// `config.keyId`), or decrypts it with `None` (see `ops::set_encryption`).
pub fn set_encryption(state_dir: &Path, vm: &str, key: Option<&str>) -> Result<(), Error> {
    let store = state::Store::new(state_dir);
    Ok(store.update(|st, _| ops::set_encryption(st, vm, key))?)
}

/// Whether `vm`'s guest would boot from its disks as they are now.
pub fn boots(state_dir: &Path, vm: &str) -> Result<bool, Error> {
    let store = state::Store::new(state_dir);
    Ok(store.read(|st, root| {
        let v = st
            .vms
            .iter()
            .find(|v| v.name == vm || v.moref() == vm)
            .ok_or_else(|| state::Fault::not_found("VirtualMachine", vm))?;
        Ok(v.boots(root))
    })?)
}
