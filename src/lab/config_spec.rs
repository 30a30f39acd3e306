//! The part of a VirtualMachineConfigSpec an OVF import carries, as a
//! value both ways: rendered into CreateImportSpec's answer in the WSDL's
//! element order with the `xsi:type`s vim25 needs, and read back from
//! ImportVApp's `spec` (a client sends the `importSpec` back verbatim) with
//! no memory of what was handed out. The device models map between their
//! OVF `ResourceSubType`, vim type and .vmx `virtualDev`.

use std::fmt::Write as _;

use roxmltree::Node;

use super::state::Fault;
use super::wire::moref;
use crate::vsphere::soap::{XSI_NS, escape};

/// A SCSI controller model: its OVF `ResourceSubType`, vim type and .vmx
/// `virtualDev` (ovftool's names; coffer's `VmHardware::from_vmx` reads
/// the same .vmx values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScsiKind {
    LsiLogic,
    ParaVirtual,
    LsiLogicSas,
    BusLogic,
}

const SCSI_KINDS: [(ScsiKind, &str, &str, &str, &str); 4] = [
    (
        ScsiKind::LsiLogic,
        "lsilogic",
        "VirtualLsiLogicController",
        "lsilogic",
        "LSI Logic",
    ),
    (
        ScsiKind::ParaVirtual,
        "VirtualSCSI",
        "ParaVirtualSCSIController",
        "pvscsi",
        "VMware paravirtual SCSI",
    ),
    (
        ScsiKind::LsiLogicSas,
        "lsilogicsas",
        "VirtualLsiLogicSASController",
        "lsisas1068",
        "LSI Logic SAS",
    ),
    (
        ScsiKind::BusLogic,
        "buslogic",
        "VirtualBusLogicController",
        "buslogic",
        "BusLogic",
    ),
];

impl ScsiKind {
    fn row(
        self,
    ) -> &'static (
        ScsiKind,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        SCSI_KINDS
            .iter()
            .find(|r| r.0 == self)
            .expect("every kind has a row")
    }

    pub(super) fn from_ovf(sub_type: &str) -> Option<ScsiKind> {
        SCSI_KINDS
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(sub_type.trim()))
            .map(|r| r.0)
    }

    pub fn from_vim_type(t: &str) -> Option<ScsiKind> {
        SCSI_KINDS.iter().find(|r| r.2 == t).map(|r| r.0)
    }

    pub fn vim_type(self) -> &'static str {
        self.row().2
    }

    pub fn vmx_dev(self) -> &'static str {
        self.row().3
    }
}

/// An ethernet card model: its OVF `ResourceSubType`, vim type and .vmx
/// `virtualDev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    Vmxnet3,
    E1000,
    E1000e,
    PcNet32,
    Vmxnet2,
}

const NIC_KINDS: [(NicKind, &str, &str, &str); 5] = [
    (NicKind::Vmxnet3, "VmxNet3", "VirtualVmxnet3", "vmxnet3"),
    (NicKind::E1000, "E1000", "VirtualE1000", "e1000"),
    (NicKind::E1000e, "E1000e", "VirtualE1000e", "e1000e"),
    (NicKind::PcNet32, "PCNet32", "VirtualPCNet32", "vlance"),
    (NicKind::Vmxnet2, "VmxNet2", "VirtualVmxnet2", "vmxnet"),
];

impl NicKind {
    fn row(self) -> &'static (NicKind, &'static str, &'static str, &'static str) {
        NIC_KINDS
            .iter()
            .find(|r| r.0 == self)
            .expect("every kind has a row")
    }

    pub(super) fn from_ovf(sub_type: &str) -> Option<NicKind> {
        NIC_KINDS
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(sub_type.trim()))
            .map(|r| r.0)
    }

    pub fn from_vim_type(t: &str) -> Option<NicKind> {
        NIC_KINDS.iter().find(|r| r.2 == t).map(|r| r.0)
    }

    pub fn vim_type(self) -> &'static str {
        self.row().2
    }

    pub fn vmx_dev(self) -> &'static str {
        self.row().3
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSpec {
    pub key: i32,
    pub bus: u32,
    pub kind: ScsiKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub key: i32,
    pub controller_key: i32,
    pub unit: u32,
    pub capacity_bytes: u64,
    /// `[datastore1] NAME/NAME.vmdk`
    pub file_name: String,
    pub thin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub key: i32,
    pub kind: NicKind,
    /// The port group (`backing.deviceName`).
    pub network: String,
    pub start_connected: bool,
    /// A MAC address asked for: kept as given when `manual`; a generated
    /// one is kept when the host finds it in its range and free (see
    /// `import::vmx_text`). `None`: the host generates one.
    pub mac: Option<String>,
    /// `addressType` manual.
    pub manual: bool,
}

/// The part of a VirtualMachineConfigSpec an import carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    pub name: String,
    /// `vmx-19`
    pub version: String,
    /// The BIOS UUID (`config.uuid`), when the OVF keeps it.
    pub uuid: Option<String>,
    pub guest_id: String,
    /// `[datastore1]`: the host names the VM's folder.
    pub vm_path_name: String,
    pub num_cpus: u32,
    pub memory_mb: u64,
    pub controllers: Vec<ControllerSpec>,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    pub extra_config: Vec<(String, String)>,
    /// `bios` or `efi`, when the OVF says.
    pub firmware: Option<String>,
}

/// `/<entity>/VirtualLsiLogicController0:0`: a disk by its controller.
pub fn device_id(entity: &str, kind: ScsiKind, bus: u32, unit: u32) -> String {
    format!("/{entity}/{}{bus}:{unit}", kind.vim_type())
}

/// The disk files ESXi gives a new VM `name`: `NAME.vmdk`, `NAME_1.vmdk`, …
pub fn disk_file_name(name: &str, index: usize) -> String {
    match index {
        0 => format!("{name}.vmdk"),
        n => format!("{name}_{n}.vmdk"),
    }
}

/// `564d1234-…` or `56 4d 12 34 …-…`: 16 hex bytes, as a UUID.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// `00:50:56:aa:bb:cc` (or with dashes), lower case.
pub fn canonical_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// The content of a `configSpec` element (a VirtualMachineConfigSpec), in
/// the WSDL's order: name, version, uuid, guestId, files, numCPUs,
/// memoryMB, deviceChange, extraConfig, firmware.
pub fn render_config_spec(s: &ConfigSpec) -> String {
    let mut out = format!(
        "<name>{}</name><version>{}</version>",
        escape(&s.name),
        escape(&s.version)
    );
    if let Some(u) = &s.uuid {
        let _ = write!(out, "<uuid>{}</uuid>", escape(u));
    }
    let _ = write!(
        out,
        "<guestId>{}</guestId><files><vmPathName>{}</vmPathName></files>\
         <numCPUs>{}</numCPUs><memoryMB>{}</memoryMB>",
        escape(&s.guest_id),
        escape(&s.vm_path_name),
        s.num_cpus,
        s.memory_mb
    );
    for c in &s.controllers {
        let _ = write!(
            out,
            "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>{}</key>\
             <deviceInfo><label>SCSI controller {}</label><summary>{}</summary></deviceInfo>\
             <busNumber>{}</busNumber><hotAddRemove>true</hotAddRemove><sharedBus>noSharing</sharedBus>\
             </device></deviceChange>",
            c.kind.vim_type(),
            c.key,
            c.bus,
            c.kind.row().4,
            c.bus
        );
    }
    for (i, d) in s.disks.iter().enumerate() {
        let datastore = d
            .file_name
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map_or("", |(ds, _)| ds);
        let _ = write!(
            out,
            "<deviceChange><operation>add</operation><fileOperation>create</fileOperation>\
             <device xsi:type=\"VirtualDisk\"><key>{}</key><deviceInfo><label>Hard disk {}</label>\
             <summary>{} KB</summary></deviceInfo><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\">\
             <fileName>{}</fileName>{}<diskMode>persistent</diskMode><thinProvisioned>{}</thinProvisioned>\
             </backing><controllerKey>{}</controllerKey><unitNumber>{}</unitNumber>\
             <capacityInKB>{}</capacityInKB><capacityInBytes>{}</capacityInBytes></device></deviceChange>",
            d.key,
            i + 1,
            d.capacity_bytes.div_ceil(1024),
            escape(&d.file_name),
            moref("datastore", "Datastore", datastore),
            d.thin,
            d.controller_key,
            d.unit,
            d.capacity_bytes.div_ceil(1024),
            d.capacity_bytes
        );
    }
    for (i, n) in s.nics.iter().enumerate() {
        let _ = write!(
            out,
            "<deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>{}</key>\
             <deviceInfo><label>Network adapter {}</label><summary>{}</summary></deviceInfo>\
             <backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName></backing>\
             <connectable><startConnected>{}</startConnected><allowGuestControl>true</allowGuestControl>\
             <connected>false</connected></connectable>",
            n.kind.vim_type(),
            n.key,
            i + 1,
            escape(&n.network),
            escape(&n.network),
            n.start_connected
        );
        let kind = if n.manual { "manual" } else { "generated" };
        match &n.mac {
            Some(mac) => {
                let _ = write!(
                    out,
                    "<addressType>{kind}</addressType><macAddress>{}</macAddress>",
                    escape(mac)
                );
            }
            None => out.push_str("<addressType>generated</addressType>"),
        }
        out.push_str("</device></deviceChange>");
    }
    for (k, v) in &s.extra_config {
        let _ = write!(
            out,
            "<extraConfig xsi:type=\"OptionValue\"><key>{}</key><value xsi:type=\"xsd:string\">{}</value></extraConfig>",
            escape(k),
            escape(v)
        );
    }
    if let Some(f) = &s.firmware {
        let _ = write!(out, "<firmware>{}</firmware>", escape(f));
    }
    out
}

// ---- reading configSpecs and calls' arguments ------------------------------

pub(super) fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == local)
}

pub(super) fn text(node: Node<'_, '_>) -> String {
    node.children()
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

pub(super) fn field(node: Node<'_, '_>, local: &str) -> Option<String> {
    child(node, local).map(text)
}

/// The `xsi:type` of an element, its namespace prefix left off.
pub(super) fn xsi_type(node: Node<'_, '_>) -> Option<String> {
    node.attributes()
        .find(|a| a.name() == "type" && a.namespace() == Some(XSI_NS))
        .map(|a| a.value().rsplit(':').next().unwrap_or_default().to_string())
}

pub(super) fn spec_fault(property: &str, message: String) -> Fault {
    Fault::new("InvalidArgument", message).with("invalidProperty", property)
}

pub(super) fn spec_number<T: std::str::FromStr>(
    node: Node<'_, '_>,
    local: &str,
) -> Result<Option<T>, Fault> {
    field(node, local)
        .map(|v| {
            v.parse()
                .map_err(|_| spec_fault(local, format!("{local} `{v}` is not a number")))
        })
        .transpose()
}

/// A moref argument's value, when its type is `kind`.
pub(super) fn moref_arg(node: Node<'_, '_>, local: &str, kind: &str) -> Option<String> {
    let n = child(node, local)?;
    let t = n
        .attributes()
        .find(|a| a.name() == "type" && a.namespace().is_none())?;
    (t.value() == kind).then(|| text(n))
}

/// ImportVApp's `spec` (a VirtualMachineImportSpec, as CreateImportSpec
/// answered it) and its optional `folder` and `host`.
pub fn import_args(
    call: Node<'_, '_>,
    pool: &str,
) -> Result<(ConfigSpec, super::import::Placement), Fault> {
    let spec =
        child(call, "spec").ok_or_else(|| spec_fault("spec", "a spec is required".into()))?;
    // Only a VM's spec: a vApp's is not imported by the lab (govmomi's
    // simulator refuses any other type the same way).
    if xsi_type(spec).is_some_and(|t| t != "VirtualMachineImportSpec") {
        return Err(spec_fault(
            "spec",
            "the lab imports a VirtualMachineImportSpec only".into(),
        ));
    }
    let config = child(spec, "configSpec")
        .ok_or_else(|| spec_fault("spec.configSpec", "a configSpec is required".into()))?;
    Ok((
        parse_config_spec(config)?,
        super::import::Placement {
            pool: pool.to_string(),
            folder: moref_arg(call, "folder", "Folder"),
            host: moref_arg(call, "host", "HostSystem"),
        },
    ))
}

/// Reads a `configSpec` element as CreateImportSpec wrote it (or a client
/// changed it): the fields of `ConfigSpec`; other fields are left alone.
/// A device the lab does not model, or an operation other than `add`, is
/// a fault.
pub fn parse_config_spec(node: Node<'_, '_>) -> Result<ConfigSpec, Fault> {
    let mut s = ConfigSpec {
        name: field(node, "name").unwrap_or_default(),
        version: field(node, "version").unwrap_or_else(|| "vmx-19".into()),
        uuid: field(node, "uuid").filter(|u| !u.is_empty()),
        guest_id: field(node, "guestId").unwrap_or_else(|| "otherGuest".into()),
        vm_path_name: child(node, "files")
            .and_then(|f| field(f, "vmPathName"))
            .unwrap_or_default(),
        num_cpus: spec_number(node, "numCPUs")?.unwrap_or(1),
        memory_mb: spec_number(node, "memoryMB")?.unwrap_or(1024),
        controllers: Vec::new(),
        disks: Vec::new(),
        nics: Vec::new(),
        extra_config: Vec::new(),
        firmware: field(node, "firmware").filter(|f| !f.is_empty()),
    };
    for change in node
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "deviceChange")
    {
        let op = field(change, "operation").unwrap_or_default();
        if op != "add" {
            return Err(spec_fault(
                "deviceChange.operation",
                format!("an import adds devices; `{op}` is not `add`"),
            ));
        }
        let device = child(change, "device").ok_or_else(|| {
            spec_fault(
                "deviceChange.device",
                "a device change without a device".into(),
            )
        })?;
        let kind = xsi_type(device).unwrap_or_default();
        let key = spec_number(device, "key")?.unwrap_or(0);
        if let Some(scsi) = ScsiKind::from_vim_type(&kind) {
            s.controllers.push(ControllerSpec {
                key,
                bus: spec_number(device, "busNumber")?.unwrap_or(0),
                kind: scsi,
            });
        } else if kind == "VirtualDisk" {
            let backing = child(device, "backing");
            let bytes: Option<u64> = spec_number(device, "capacityInBytes")?;
            let kb: Option<u64> = spec_number(device, "capacityInKB")?;
            s.disks.push(DiskSpec {
                key,
                controller_key: spec_number(device, "controllerKey")?.unwrap_or(0),
                unit: spec_number(device, "unitNumber")?.unwrap_or(0),
                capacity_bytes: bytes.or(kb.map(|k| k * 1024)).unwrap_or(0),
                file_name: backing
                    .and_then(|b| field(b, "fileName"))
                    .unwrap_or_default(),
                thin: backing
                    .and_then(|b| field(b, "thinProvisioned"))
                    .is_none_or(|t| t == "true" || t == "1"),
            });
        } else if let Some(nic) = NicKind::from_vim_type(&kind) {
            let connectable = child(device, "connectable");
            let manual = field(device, "addressType").is_some_and(|t| t == "manual");
            let mac = match (manual, field(device, "macAddress")) {
                (true, Some(m)) => Some(canonical_mac(&m).ok_or_else(|| {
                    spec_fault("macAddress", format!("`{m}` is not a MAC address"))
                })?),
                (true, None) => {
                    return Err(spec_fault(
                        "macAddress",
                        "a manual address type needs a macAddress".into(),
                    ));
                }
                // A generated address asked for: the host may keep it.
                (false, Some(m)) => canonical_mac(&m),
                (false, None) => None,
            };
            s.nics.push(NicSpec {
                key,
                kind: nic,
                network: child(device, "backing")
                    .and_then(|b| field(b, "deviceName"))
                    .unwrap_or_default(),
                start_connected: connectable
                    .and_then(|c| field(c, "startConnected"))
                    .is_none_or(|v| v == "true" || v == "1"),
                mac,
                manual,
            });
        } else {
            return Err(Fault::new(
                "NotSupported",
                format!("The lab does not model devices of type `{kind}`."),
            ));
        }
    }
    for o in node
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "extraConfig")
    {
        if let Some(k) = field(o, "key") {
            s.extra_config
                .push((k, field(o, "value").unwrap_or_default()));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::super::import_spec::tests::coffer_spec;
    use super::*;
    use crate::vsphere::soap::VIM_NS;

    #[test]
    fn the_rendered_spec_reads_back_as_it_was() {
        let mut spec = coffer_spec();
        spec.uuid = Some("564d0000-1111-2222-3333-444455556666".into());
        spec.firmware = Some("efi".into());
        spec.extra_config = vec![("disk.EnableUUID".into(), "TRUE".into())];
        spec.nics.push(NicSpec {
            key: -300,
            kind: NicKind::Vmxnet3,
            network: "VM Network".into(),
            start_connected: false,
            mac: Some("00:50:56:01:02:03".into()),
            manual: true,
        });
        let xml = format!(
            "<configSpec xmlns=\"{VIM_NS}\" xmlns:xsi=\"{XSI_NS}\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">{}</configSpec>",
            render_config_spec(&spec)
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(parse_config_spec(doc.root_element()).unwrap(), spec);
        // Elements in the WSDL's order.
        let order: Vec<&str> = doc
            .root_element()
            .children()
            .filter(|c| c.is_element())
            .map(|c| c.tag_name().name())
            .collect();
        assert_eq!(
            order,
            [
                "name",
                "version",
                "uuid",
                "guestId",
                "files",
                "numCPUs",
                "memoryMB",
                "deviceChange",
                "deviceChange",
                "deviceChange",
                "deviceChange",
                "extraConfig",
                "firmware"
            ]
        );
    }

    #[test]
    fn a_device_the_lab_does_not_model_is_refused() {
        let xml = format!(
            "<configSpec xmlns=\"{VIM_NS}\" xmlns:xsi=\"{XSI_NS}\"><name>x</name>\
             <deviceChange><operation>add</operation><device xsi:type=\"VirtualCdrom\"><key>-1</key>\
             </device></deviceChange></configSpec>"
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            parse_config_spec(doc.root_element()).unwrap_err().name,
            "NotSupported"
        );
    }
}
