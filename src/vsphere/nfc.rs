//! Importing a VM through an HttpNfcLease, the way a host or vCenter takes
//! an OVF package (vSphere API reference: `OvfManager.CreateImportSpec`,
//! `ResourcePool.ImportVApp`, `HttpNfcLease`):
//!
//! 1. `CreateImportSpec` turns an OVF descriptor into an import spec (a
//!    `VirtualMachineConfigSpec` the host made) and one file item per disk
//!    to upload, or says what it cannot import;
//! 2. `ImportVApp` creates the VM from that spec and answers a lease, which
//!    starts `initializing` and becomes `ready` with one upload URL per
//!    disk (`info.deviceUrl`, matched to file items by `importKey`);
//! 3. the client uploads each disk to its URL and calls
//!    `HttpNfcLeaseProgress` more often than `info.leaseTimeout` seconds,
//!    or the lease times out and enters `error`;
//! 4. `HttpNfcLeaseComplete` ends the import; `HttpNfcLeaseAbort` gives it
//!    up, and the host removes what the import created.
//!
//! This file builds those calls and reads their answers; the upload itself
//! is `transport::Transport::upload`, and the order of the steps is the
//! restore's (`run::import`).

use std::time::Duration;

use roxmltree::Node;

use super::Error;
use super::fault::VimFault;
use super::props::parse_page;
use super::response::{
    localized_fault, parse_bool, parse_number, protocol, required_text, with_response,
};
use super::session::Session;
use super::soap::{self, Call, Request, escape};
use super::types::MoRef;
use super::xml::{XSI_NS, child_text, children_named, find_child, moref_of, text_of};

/// The XML Schema namespace, whose types (`xsd:string`) an import spec's
/// `extraConfig` values carry.
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// One file of the OVF the host wants uploaded (`OvfFileItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileItem {
    /// Matches the `importKey` of the lease's device URL for it.
    pub device_id: String,
    /// The file's `href` in the OVF's References.
    pub path: String,
    pub size: Option<u64>,
}

/// What `CreateImportSpec` answered.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    /// The `importSpec` element's type (`VirtualMachineImportSpec`).
    pub kind: String,
    /// Its content, written again in coffer's own envelope: `ImportVApp`
    /// takes it back as is.
    pub content: String,
    pub files: Vec<FileItem>,
    /// What the host cannot import (`error`): the import must not go on.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The state of a lease (`HttpNfcLeaseState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Initializing,
    Ready,
    Done,
    Error,
}

/// Where one disk goes (`HttpNfcLeaseDeviceUrl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUrl {
    pub import_key: String,
    /// `https://*/nfc/…` on a host: `*` stands for the address the client
    /// reached the host at.
    pub url: String,
    pub target_id: String,
    pub disk: bool,
    /// SHA-1 thumbprint of the certificate of the host in `url`.
    pub ssl_thumbprint: Option<String>,
}

/// What a ready lease says (`HttpNfcLeaseInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The VM the import created.
    pub entity: MoRef,
    pub device_urls: Vec<DeviceUrl>,
    /// Seconds without `HttpNfcLeaseProgress` before the lease times out.
    pub timeout_seconds: u64,
}

/// A lease as `state`, `error` and `info` describe it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub state: LeaseState,
    pub error: Option<VimFault>,
    pub info: Option<LeaseInfo>,
}

pub fn create_import_spec(
    ovf_manager: &MoRef,
    descriptor: &str,
    pool: &MoRef,
    datastore: &MoRef,
    entity_name: &str,
) -> Request {
    let mut call = Call::new("CreateImportSpec", ovf_manager);
    call.text("ovfDescriptor", descriptor)
        .moref("resourcePool", pool)
        .moref("datastore", datastore)
        // OvfCreateImportSpecParams, in the WSDL's order: the common
        // parameters (locale, deploymentOption) first.
        .open("cisp")
        .text("locale", "")
        .text("deploymentOption", "")
        .text("entityName", entity_name)
        .text("diskProvisioning", "thin")
        .close("cisp");
    call.finish()
}

pub fn import_vapp(
    pool: &MoRef,
    spec: &ImportSpec,
    folder: Option<&MoRef>,
    host: Option<&MoRef>,
) -> Request {
    let mut call = Call::new("ImportVApp", pool);
    call.open_typed("spec", &spec.kind)
        .raw(&spec.content)
        .close("spec");
    if let Some(folder) = folder {
        call.moref("folder", folder);
    }
    if let Some(host) = host {
        call.moref("host", host);
    }
    call.finish()
}

pub fn lease_progress(lease: &MoRef, percent: u8) -> Request {
    let mut call = Call::new("HttpNfcLeaseProgress", lease);
    call.value("percent", percent.min(100));
    call.finish()
}

pub fn lease_complete(lease: &MoRef) -> Request {
    Call::new("HttpNfcLeaseComplete", lease).finish()
}

/// Gives the import up, telling the host why (a `SystemError` fault with
/// the reason, so the task of the import shows it).
pub fn lease_abort(lease: &MoRef, reason: &str) -> Request {
    let mut call = Call::new("HttpNfcLeaseAbort", lease);
    call.open_typed("fault", "SystemError")
        .text("reason", reason)
        .close("fault");
    call.finish()
}

/// Writes `node`'s children again for a request: elements by their vim25
/// local name (coffer's call element makes vim25 the default namespace),
/// `xsi:type` with its prefix resolved by namespace, not by spelling (an
/// XML Schema type stays `xsd:…`, a vim25 type is written bare), moref
/// `type` attributes as they are, text escaped.
fn write_again(node: Node<'_, '_>, out: &mut String) {
    for child in node.children() {
        if child.is_text() {
            out.push_str(&escape(child.text().unwrap_or_default()));
            continue;
        }
        if !child.is_element() {
            continue;
        }
        let name = child.tag_name().name();
        out.push('<');
        out.push_str(name);
        for a in child.attributes() {
            if a.namespace() == Some(XSI_NS) && a.name() == "type" {
                let value = a.value();
                let typed = match value.split_once(':') {
                    Some((prefix, local)) => match child.lookup_namespace_uri(Some(prefix)) {
                        Some(XSD_NS) => format!("xsd:{local}"),
                        _ => local.to_string(),
                    },
                    None => value.to_string(),
                };
                out.push_str(&format!(" xsi:type=\"{}\"", escape(&typed)));
            } else if a.namespace().is_none() {
                out.push_str(&format!(" {}=\"{}\"", a.name(), escape(a.value())));
            }
        }
        out.push('>');
        write_again(child, out);
        out.push_str(&format!("</{name}>"));
    }
}

fn messages(rv: Node<'_, '_>, local: &str) -> Vec<String> {
    children_named(rv, local)
        .map(|n| {
            let fault = localized_fault(n);
            let text = fault.to_string();
            if text.trim().is_empty() {
                "the host gave no reason".to_string()
            } else {
                text
            }
        })
        .collect()
}

pub fn parse_import_spec(xml: &str) -> Result<ImportSpec, Error> {
    let method = "CreateImportSpec";
    with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        let errors = messages(rv, "error");
        let spec = find_child(rv, "importSpec");
        if spec.is_none() && errors.is_empty() {
            return Err(protocol(method, "neither an importSpec nor an error"));
        }
        let (kind, content) = match spec {
            Some(s) => {
                let kind = super::xml::xsi_type(s).unwrap_or_else(|| "ImportSpec".into());
                let mut content = String::new();
                write_again(s, &mut content);
                (kind, content)
            }
            None => (String::new(), String::new()),
        };
        let mut files = Vec::new();
        for item in children_named(rv, "fileItem") {
            files.push(FileItem {
                device_id: required_text(item, "deviceId", method)?,
                path: required_text(item, "path", method)?,
                size: child_text(item, "size").and_then(|s| s.trim().parse().ok()),
            });
        }
        Ok(ImportSpec {
            kind,
            content,
            files,
            errors,
            warnings: messages(rv, "warning"),
        })
    })
}

fn lease_state(text: &str) -> Result<LeaseState, Error> {
    Ok(match text.trim() {
        "initializing" => LeaseState::Initializing,
        "ready" => LeaseState::Ready,
        "done" => LeaseState::Done,
        "error" => LeaseState::Error,
        other => {
            return Err(protocol(
                "RetrievePropertiesEx",
                format!("unknown lease state {other:?}"),
            ));
        }
    })
}

fn lease_info(node: Node<'_, '_>, method: &str) -> Result<LeaseInfo, Error> {
    let entity = find_child(node, "entity")
        .and_then(moref_of)
        .ok_or_else(|| protocol(method, "the lease's info names no entity"))?;
    let mut device_urls = Vec::new();
    for d in children_named(node, "deviceUrl") {
        device_urls.push(DeviceUrl {
            import_key: child_text(d, "importKey").unwrap_or_default(),
            url: required_text(d, "url", method)?,
            target_id: child_text(d, "targetId").unwrap_or_default(),
            disk: child_text(d, "disk").is_some_and(|t| parse_bool(&t)),
            ssl_thumbprint: child_text(d, "sslThumbprint").filter(|t| !t.trim().is_empty()),
        });
    }
    let timeout_seconds = match child_text(node, "leaseTimeout") {
        Some(t) => parse_number(&t, "leaseTimeout", method)?,
        // A server that leaves it out gets the five minutes vCenter is
        // known to allow a lease without progress.
        None => 300,
    };
    Ok(LeaseInfo {
        entity,
        device_urls,
        timeout_seconds,
    })
}

/// `state`, `error` and `info` of a lease.
pub fn parse_lease(xml: &str) -> Result<Lease, Error> {
    let method = "RetrievePropertiesEx";
    let page = parse_page(xml, method, |oc, method| {
        let state = oc
            .props
            .get("state")
            .map(|v| lease_state(&text_of(*v)))
            .transpose()?
            .ok_or_else(|| protocol(method, "the lease has no state"))?;
        let error = oc.props.get("error").map(|v| localized_fault(*v));
        let info = oc
            .props
            .get("info")
            .map(|v| lease_info(*v, method))
            .transpose()?;
        Ok(Lease { state, error, info })
    })?;
    page.items
        .into_iter()
        .next()
        .ok_or_else(|| protocol(method, "the lease is gone"))
}

impl Session {
    /// The OVF manager, when the endpoint has one.
    pub fn ovf_manager(&self) -> Option<&MoRef> {
        self.service_content().ovf_manager.as_ref()
    }

    /// `CreateImportSpec` of `descriptor` for a VM named `name` in `pool`
    /// on `datastore`.
    pub fn create_import_spec(
        &self,
        descriptor: &str,
        pool: &MoRef,
        datastore: &MoRef,
        name: &str,
    ) -> Result<ImportSpec, Error> {
        let manager = self.ovf_manager().ok_or_else(|| Error::Protocol {
            method: "CreateImportSpec".into(),
            detail: "the server offers no OVF manager".into(),
        })?;
        let req = create_import_spec(manager, descriptor, pool, datastore, name);
        self.call(&req, parse_import_spec)
    }

    /// `ImportVApp`: the VM is created and its lease answered.
    pub fn import_vapp(
        &self,
        pool: &MoRef,
        spec: &ImportSpec,
        folder: Option<&MoRef>,
        host: Option<&MoRef>,
    ) -> Result<MoRef, Error> {
        let req = import_vapp(pool, spec, folder, host);
        self.call(&req, |x| soap::parse_moref_result(x, req.method))
    }

    pub fn lease(&self, lease: &MoRef) -> Result<Lease, Error> {
        self.properties_of(lease, &["state", "error", "info"], parse_lease)
    }

    /// Waits up to `wait` for `lease` to leave `initializing`: its info
    /// when ready, its error otherwise.
    pub fn wait_lease_ready(&self, lease: &MoRef, wait: Duration) -> Result<LeaseInfo, Error> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let l = self.lease(lease)?;
            match l.state {
                LeaseState::Ready => {
                    return l.info.ok_or_else(|| Error::Protocol {
                        method: "RetrievePropertiesEx".into(),
                        detail: format!("lease {} is ready but has no info", lease.value),
                    });
                }
                LeaseState::Initializing if started.elapsed() < wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                LeaseState::Initializing => {
                    return Err(Error::Protocol {
                        method: "ImportVApp".into(),
                        detail: format!(
                            "lease {} still initializing after {}s",
                            lease.value,
                            wait.as_secs()
                        ),
                    });
                }
                LeaseState::Done | LeaseState::Error => {
                    return Err(match l.error {
                        Some(f) => Error::Fault(f),
                        None => Error::Protocol {
                            method: "ImportVApp".into(),
                            detail: format!("lease {} ended before any upload", lease.value),
                        },
                    });
                }
            }
        }
    }

    pub fn lease_progress(&self, lease: &MoRef, percent: u8) -> Result<(), Error> {
        self.call_empty(&lease_progress(lease, percent))
    }

    pub fn lease_complete(&self, lease: &MoRef) -> Result<(), Error> {
        self.call_empty(&lease_complete(lease))
    }

    pub fn lease_abort(&self, lease: &MoRef, reason: &str) -> Result<(), Error> {
        self.call_empty(&lease_abort(lease, reason))
    }
}

/// The URL to upload to: `*` in a host's URL stands for the address the
/// client reached it at (govmomi's `nfc.Lease` replaces it the same way).
pub fn upload_url(url: &str, reached_at: &str) -> String {
    match url.split_once("://*") {
        Some((scheme, rest)) => format!("{scheme}://{reached_at}{rest}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::VIM_NS;

    const SPEC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><CreateImportSpecResponse xmlns="urn:vim25"><returnval>
<importSpec xsi:type="VirtualMachineImportSpec"><configSpec><name>db01-r</name>
<extraConfig><key>a</key><value xsi:type="xsd:string">x &amp; y</value></extraConfig>
<deviceChange><operation>add</operation><device xmlns:v="urn:vim25" xsi:type="v:VirtualDisk"><key>-1</key></device></deviceChange>
</configSpec><resPoolEntity type="ResourcePool">ha-root-pool</resPoolEntity></importSpec>
<fileItem><deviceId>/db01-r/VirtualLsiLogicController0:0</deviceId><path>db01-disk1.vmdk</path><size>123</size><cimType>17</cimType><create>false</create></fileItem>
<warning><fault xsi:type="OvfUnsupportedType"></fault><localizedMessage>a floppy</localizedMessage></warning>
</returnval></CreateImportSpecResponse></soapenv:Body></soapenv:Envelope>"#;

    #[test]
    fn an_import_spec_goes_back_as_the_host_wrote_it() {
        let spec = parse_import_spec(SPEC).unwrap();
        assert_eq!(spec.kind, "VirtualMachineImportSpec");
        assert_eq!(
            spec.files,
            vec![FileItem {
                device_id: "/db01-r/VirtualLsiLogicController0:0".into(),
                path: "db01-disk1.vmdk".into(),
                size: Some(123),
            }]
        );
        assert!(spec.errors.is_empty());
        assert_eq!(spec.warnings.len(), 1);
        let req = import_vapp(
            &MoRef::new("ResourcePool", "ha-root-pool"),
            &spec,
            Some(&MoRef::new("Folder", "ha-folder-vm")),
            None,
        );
        // The request is well-formed, the vim25 type lost its prefix, the
        // XML Schema one kept it, and the text is escaped again.
        let doc = roxmltree::Document::parse(&req.envelope).unwrap();
        let device = doc
            .descendants()
            .find(|n| n.tag_name().name() == "device")
            .unwrap();
        assert_eq!(device.attribute((XSI_NS, "type")), Some("VirtualDisk"));
        assert_eq!(device.tag_name().namespace(), Some(VIM_NS));
        let value = doc
            .descendants()
            .find(|n| n.tag_name().name() == "value")
            .unwrap();
        assert_eq!(value.attribute((XSI_NS, "type")), Some("xsd:string"));
        assert_eq!(value.text(), Some("x & y"));
        let pool = doc
            .descendants()
            .find(|n| n.tag_name().name() == "resPoolEntity")
            .unwrap();
        assert_eq!(pool.attribute("type"), Some("ResourcePool"));
    }

    #[test]
    fn an_import_the_host_refuses_names_why() {
        let xml = SPEC.replace(
            "<warning>",
            "<error><fault xsi:type=\"OvfUnsupportedType\"></fault><localizedMessage>unsupported device</localizedMessage></error><warning>",
        );
        let spec = parse_import_spec(&xml).unwrap();
        assert_eq!(spec.errors.len(), 1);
        assert!(
            spec.errors[0].contains("unsupported device"),
            "{:?}",
            spec.errors
        );
    }

    #[test]
    fn a_star_stands_for_the_host_reached() {
        assert_eq!(
            upload_url("https://*/nfc/52c1/disk-0.vmdk", "esx1:443"),
            "https://esx1:443/nfc/52c1/disk-0.vmdk"
        );
        assert_eq!(
            upload_url("https://esx2/nfc/52c1/disk-0.vmdk", "vc:443"),
            "https://esx2/nfc/52c1/disk-0.vmdk"
        );
    }

    #[test]
    fn a_lease_reads_its_state_info_and_error() {
        let xml = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="HttpNfcLease">52c1</obj>
<propSet><name>state</name><val xsi:type="HttpNfcLeaseState">ready</val></propSet>
<propSet><name>info</name><val xsi:type="HttpNfcLeaseInfo"><lease type="HttpNfcLease">52c1</lease><entity type="VirtualMachine">12</entity>
<deviceUrl><key>/vm-12/VirtualLsiLogicController0:0</key><importKey>/db01-r/VirtualLsiLogicController0:0</importKey><url>https://*/nfc/52c1/disk-0.vmdk</url><sslThumbprint></sslThumbprint><disk>true</disk><targetId>disk-0.vmdk</targetId></deviceUrl>
<leaseTimeout>300</leaseTimeout></val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let l = parse_lease(xml).unwrap();
        assert_eq!(l.state, LeaseState::Ready);
        let info = l.info.unwrap();
        assert_eq!(info.entity, MoRef::new("VirtualMachine", "12"));
        assert_eq!(info.timeout_seconds, 300);
        assert_eq!(info.device_urls.len(), 1);
        assert!(info.device_urls[0].disk);
        assert_eq!(info.device_urls[0].ssl_thumbprint, None);
    }
}
