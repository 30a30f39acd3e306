//! The OVF 1.0 descriptor of a point, for an OVA export (`export`) and for
//! a restore through a host's OVF import (`import`): the virtual hardware
//! read from the point's .vmx (CPUs, memory, guest, SCSI controllers,
//! network cards, firmware, BIOS UUID), and each disk on the controller and
//! unit it had.
//!
//! An export describes a VM to be copied, so it leaves the identity out
//! (`VmHardware::without_identity`); a restore keeps it as the VMware
//! extensions ovftool writes with `--exportFlags=mac,uuid` (the VMware OVF
//! Tool user's guide): `vmw:Config` `uuid` in the hardware section, and on
//! a network card `rasd:Address` with `vmw:Config` `addressType` (`manual`
//! for an address set by hand, `generated` for one the host made; see
//! `OvfNic::mac_static`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::vsphere::soap::escape as xml_escape;

/// A network card as the OVF describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfNic {
    /// The network (port group) it is on.
    pub connection: String,
    /// OVF ResourceSubType: `VmxNet3`, `E1000`, `E1000e`, `PCNet32`.
    pub subtype: String,
    pub start_connected: bool,
    /// Its MAC address, to keep.
    pub mac: Option<String>,
    /// The address was set by hand (`addressType = static`): it stays a
    /// manual one. A generated one is asked for again as generated, which
    /// a host keeps when it lies in its range and no other card has it
    /// (vSphere API reference, `VirtualEthernetCard.macAddress`: "the
    /// server might override the specified value for Generated or
    /// Assigned if it does not fall in the right ranges or is determined
    /// to be a duplicate"); a manual address must lie in the range VMware
    /// reserves for them (VMware KB 219), which a generated one does not.
    pub mac_static: bool,
}

/// The virtual hardware an OVF describes, from the point's .vmx when it
/// has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHardware {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// vSphere guest id (`guestOS` of the .vmx).
    pub guest_os: String,
    /// OVF ResourceSubType of SCSI controller 0.
    pub scsi_controller: String,
    /// ResourceSubType of each SCSI controller the .vmx has, by bus.
    pub controllers: BTreeMap<u32, String>,
    /// `vmx-NN`.
    pub hardware_version: String,
    /// `efi` or `bios`, when the .vmx says.
    pub firmware: Option<String>,
    /// The BIOS UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: Option<String>,
    pub nics: Vec<OvfNic>,
    /// The .vmx's other settings (`guestinfo.*`, `disk.EnableUUID`, …), as
    /// `vmw:ExtraConfig` (ovftool's `--exportFlags=extraconfig`).
    pub extra_config: Vec<(String, String)>,
}

impl Default for VmHardware {
    fn default() -> Self {
        VmHardware {
            vcpus: 1,
            memory_mib: 1024,
            guest_os: "otherGuest".into(),
            scsi_controller: "lsilogic".into(),
            controllers: BTreeMap::new(),
            hardware_version: "vmx-14".into(),
            firmware: None,
            uuid: None,
            nics: Vec::new(),
            extra_config: Vec::new(),
        }
    }
}

/// Whether a .vmx key is said another way in the OVF (hardware, devices,
/// identity) or is the host's own record of a VM it ran (its log, swap
/// file, suspend state): such keys are no extra configuration to carry.
pub fn carried_otherwise(key: &str) -> bool {
    const OWN: [&str; 22] = [
        ".encoding",
        "config.version",
        "virtualhw.version",
        "virtualhw.productcompatibility",
        "displayname",
        "guestos",
        "memsize",
        "numvcpus",
        "firmware",
        "nvram",
        "uuid.bios",
        "uuid.location",
        "vc.uuid",
        "extendedconfigfile",
        "vmxstats.filename",
        "checkpoint.vmstate",
        "migrate.hostlog",
        "sched.swap.derivedname",
        "cleanshutdown",
        "softpoweroff",
        "monitor.phys_bits_used",
        "ctkenabled",
    ];
    const DEVICES: [&str; 14] = [
        "scsi",
        "ethernet",
        "ide",
        "sata",
        "nvme",
        "floppy",
        "serial",
        "parallel",
        "usb",
        "ehci",
        "sound",
        "pcibridge",
        "vmci",
        "svga",
    ];
    let k = key.to_ascii_lowercase();
    OWN.contains(&k.as_str())
        || k.starts_with("toolsinstallmanager.")
        || k.starts_with("replay.")
        || DEVICES.iter().any(|d| {
            k.strip_prefix(d).is_some_and(|r| {
                r.starts_with(|c: char| c.is_ascii_digit() || c == '.') || r.is_empty()
            })
        })
}

/// The OVF ResourceSubType of a .vmx `scsiN.virtualDev`.
fn scsi_subtype(virtual_dev: &str) -> &'static str {
    match virtual_dev.to_ascii_lowercase().as_str() {
        "pvscsi" => "VirtualSCSI",
        "lsisas1068" => "lsilogicsas",
        "buslogic" => "buslogic",
        _ => "lsilogic",
    }
}

/// The OVF ResourceSubType of a .vmx `ethernetN.virtualDev`; a card
/// without one is the host's default for the guest, an E1000 on the guests
/// coffer's lab models.
fn nic_subtype(virtual_dev: &str) -> &'static str {
    match virtual_dev.to_ascii_lowercase().as_str() {
        "vmxnet3" => "VmxNet3",
        "e1000e" => "E1000e",
        "vlance" => "PCNet32",
        "vmxnet2" | "vmxnet" => "VmxNet2",
        _ => "E1000",
    }
}

/// `42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8` (the .vmx's
/// `uuid.bios`) as vSphere writes a UUID.
fn vsphere_uuid(vmx_uuid: &str) -> Option<String> {
    let hex: String = vmx_uuid
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(crate::inventory::dashed_uuid(&hex.to_ascii_lowercase()))
}

fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

impl VmHardware {
    /// Reads numvcpus, memSize, guestOS, the SCSI controllers, the network
    /// cards, firmware, uuid.bios and virtualHW.version; what is missing
    /// or unreadable keeps its default.
    pub fn from_vmx(vmx: &str) -> Self {
        let mut hw = VmHardware::default();
        // Per card: present, virtualDev, networkName, startConnected,
        // addressType, address, generatedAddress.
        let mut cards: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (written, value) in crate::vsphere::vmx::entries(vmx) {
            let key = written.to_ascii_lowercase();
            if let Some((card, field)) = key
                .strip_prefix("ethernet")
                .and_then(|rest| rest.split_once('.'))
                && let Ok(n) = card.parse::<u32>()
            {
                cards
                    .entry(n)
                    .or_default()
                    .insert(field.to_string(), value.to_string());
                continue;
            }
            if let Some(bus) = key
                .strip_prefix("scsi")
                .and_then(|rest| rest.strip_suffix(".virtualdev"))
                .and_then(|b| b.parse::<u32>().ok())
            {
                hw.controllers.insert(bus, scsi_subtype(value).into());
                if bus == 0 {
                    hw.scsi_controller = scsi_subtype(value).into();
                }
                continue;
            }
            match key.as_str() {
                "numvcpus" => {
                    if let Ok(n @ 1..) = value.parse() {
                        hw.vcpus = n;
                    }
                }
                "memsize" => {
                    if let Ok(n @ 1..) = value.parse() {
                        hw.memory_mib = n;
                    }
                }
                "guestos" if !value.is_empty() => hw.guest_os = value.to_string(),
                "virtualhw.version" => {
                    if let Ok(n) = value.parse::<u32>() {
                        hw.hardware_version = format!("vmx-{n:02}");
                    }
                }
                "firmware" if !value.is_empty() => hw.firmware = Some(value.to_ascii_lowercase()),
                "uuid.bios" => hw.uuid = vsphere_uuid(value),
                _ if !carried_otherwise(&key) => hw
                    .extra_config
                    .push((written.to_string(), value.to_string())),
                _ => {}
            }
        }
        for fields in cards.values() {
            let get = |k: &str| fields.get(k).map(String::as_str);
            if !get("present").is_some_and(is_true) {
                continue;
            }
            // A static address is `address`; a generated one (`generated`,
            // `vpx`) is `generatedAddress` (VMware KB 219, "Setting a
            // static MAC address for a virtual NIC").
            let mac_static = get("addresstype").is_some_and(|t| t.eq_ignore_ascii_case("static"));
            let mac = match mac_static {
                true => get("address"),
                false => get("generatedaddress"),
            }
            .filter(|m| !m.is_empty())
            .map(str::to_ascii_lowercase);
            hw.nics.push(OvfNic {
                connection: get("networkname").unwrap_or("VM Network").to_string(),
                subtype: nic_subtype(get("virtualdev").unwrap_or_default()).into(),
                start_connected: get("startconnected").is_none_or(is_true),
                mac,
                mac_static,
            });
        }
        hw
    }

    /// The same hardware without what makes it this one VM: no BIOS UUID
    /// and no MAC address, so every import gets new ones.
    pub fn without_identity(mut self) -> Self {
        self.uuid = None;
        for n in &mut self.nics {
            n.mac = None;
        }
        self
    }
}

/// One disk as the OVF references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    pub file_name: String,
    pub file_size_bytes: u64,
    pub capacity_bytes: u64,
    /// SCSI bus and unit it had (`scsi0:1`); `None` puts it on the next
    /// free unit.
    pub slot: Option<(u32, u32)>,
}

/// The SCSI bus and unit of a manifest slot (`scsi1:3`); other buses
/// (IDE, SATA, NVMe) have no place in coffer's OVF and are put on SCSI.
pub fn scsi_slot(slot: Option<&str>) -> Option<(u32, u32)> {
    let (bus, unit) = slot?.strip_prefix("scsi")?.split_once(':')?;
    let (bus, unit) = (bus.parse().ok()?, unit.parse().ok()?);
    (bus < MAX_CONTROLLERS as u32 && unit < 16 && unit != 7).then_some((bus, unit))
}

/// The OVF format URI of a streamOptimized VMDK.
pub const STREAM_OPTIMIZED_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Disks per SCSI controller: units 0–15 but 7, the controller's own.
const DISKS_PER_CONTROLLER: usize = 15;
const MAX_CONTROLLERS: usize = 4;

/// Where each disk goes: its own slot when every disk has one and no two
/// share it, else the next free units in order.
fn placements(disks: &[OvfDisk]) -> Vec<(u32, u32)> {
    let slots: Vec<(u32, u32)> = disks.iter().filter_map(|d| d.slot).collect();
    let distinct = slots
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if slots.len() == disks.len() && distinct == slots.len() {
        return slots;
    }
    (0..disks.len())
        .map(|i| {
            let n = i % DISKS_PER_CONTROLLER;
            let unit = if n >= 7 { n + 1 } else { n };
            ((i / DISKS_PER_CONTROLLER) as u32, unit as u32)
        })
        .collect()
}

fn vmw_config(key: &str, value: &str) -> String {
    format!(
        "<vmw:Config ovf:required=\"false\" vmw:key=\"{}\" vmw:value=\"{}\"/>",
        xml_escape(key),
        xml_escape(value)
    )
}

/// One `Item`: its rasd fields (in the alphabetical order the CIM schema
/// prescribes) and VMware's `vmw:Config` lines after them.
fn item(fields: &[(&str, String)], extra: &[String]) -> String {
    let mut it = String::from("      <Item>\n");
    for (k, v) in fields {
        it.push_str(&format!("        <rasd:{k}>{}</rasd:{k}>\n", xml_escape(v)));
    }
    for e in extra {
        it.push_str(&format!("        {e}\n"));
    }
    it.push_str("      </Item>\n");
    it
}

/// The OVF 1.0 descriptor of a VM named `name` with `disks`.
pub fn ovf_envelope(name: &str, hw: &VmHardware, disks: &[OvfDisk]) -> Result<String> {
    if disks.len() > DISKS_PER_CONTROLLER * MAX_CONTROLLERS {
        bail!(
            "{} disks do not fit on {MAX_CONTROLLERS} SCSI controllers",
            disks.len()
        );
    }
    let name = xml_escape(name);
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    s.push_str("  <References>\n");
    for (i, d) in disks.iter().enumerate() {
        s.push_str(&format!(
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>\n",
            xml_escape(&d.file_name),
            i + 1,
            d.file_size_bytes
        ));
    }
    s.push_str("  </References>\n");
    s.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (i, d) in disks.iter().enumerate() {
        s.push_str(&format!(
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{STREAM_OPTIMIZED_URI}\"/>\n",
            d.capacity_bytes,
            n = i + 1
        ));
    }
    s.push_str("  </DiskSection>\n");
    if !hw.nics.is_empty() {
        s.push_str("  <NetworkSection>\n    <Info>The networks the VM's cards are on</Info>\n");
        let networks: std::collections::BTreeSet<&str> =
            hw.nics.iter().map(|n| n.connection.as_str()).collect();
        for n in networks {
            s.push_str(&format!(
                "    <Network ovf:name=\"{}\">\n      <Description>{}</Description>\n    </Network>\n",
                xml_escape(n),
                xml_escape(n)
            ));
        }
        s.push_str("  </NetworkSection>\n");
    }
    s.push_str(&format!(
        "  <VirtualSystem ovf:id=\"{name}\">\n    <Info>A virtual machine exported by coffer</Info>\n    <Name>{name}</Name>\n"
    ));
    // CIM operating system 1 is "Other"; vmw:osType carries the real guest
    // by its API identifier, as ovftool writes it (the .vmx's short form
    // when the API has none).
    let os_type = super::guest_ids::api_guest_id(&hw.guest_os).unwrap_or(&hw.guest_os);
    s.push_str(&format!(
        "    <OperatingSystemSection ovf:id=\"1\" vmw:osType=\"{}\">\n      <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>\n",
        xml_escape(os_type)
    ));
    s.push_str("    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n");
    s.push_str(&format!(
        "      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>{}</vssd:VirtualSystemType>\n      </System>\n",
        xml_escape(&hw.hardware_version)
    ));
    s.push_str(&item(
        &[
            ("AllocationUnits", "hertz * 10^6".into()),
            ("Description", "Number of Virtual CPUs".into()),
            ("ElementName", format!("{} virtual CPU(s)", hw.vcpus)),
            ("InstanceID", "1".into()),
            ("ResourceType", "3".into()),
            ("VirtualQuantity", hw.vcpus.to_string()),
        ],
        &[],
    ));
    s.push_str(&item(
        &[
            ("AllocationUnits", "byte * 2^20".into()),
            ("Description", "Memory Size".into()),
            ("ElementName", format!("{}MB of memory", hw.memory_mib)),
            ("InstanceID", "2".into()),
            ("ResourceType", "4".into()),
            ("VirtualQuantity", hw.memory_mib.to_string()),
        ],
        &[],
    ));
    let places = placements(disks);
    let buses: std::collections::BTreeSet<u32> = places.iter().map(|(b, _)| *b).collect();
    let mut instance = 3;
    let mut controller_ids = BTreeMap::new();
    for bus in buses.iter().copied().chain(buses.is_empty().then_some(0)) {
        let subtype = hw
            .controllers
            .get(&bus)
            .cloned()
            .unwrap_or_else(|| hw.scsi_controller.clone());
        s.push_str(&item(
            &[
                ("Address", bus.to_string()),
                ("Description", "SCSI Controller".into()),
                ("ElementName", format!("SCSI controller {bus}")),
                ("InstanceID", instance.to_string()),
                ("ResourceSubType", subtype),
                ("ResourceType", "6".into()),
            ],
            &[],
        ));
        controller_ids.insert(bus, instance);
        instance += 1;
    }
    for (i, (bus, unit)) in places.iter().enumerate() {
        s.push_str(&item(
            &[
                ("AddressOnParent", unit.to_string()),
                ("ElementName", format!("Hard disk {}", i + 1)),
                ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
                ("InstanceID", instance.to_string()),
                ("Parent", controller_ids[bus].to_string()),
                ("ResourceType", "17".into()),
            ],
            &[],
        ));
        instance += 1;
    }
    for (i, nic) in hw.nics.iter().enumerate() {
        let mut fields = Vec::new();
        let mut extra = Vec::new();
        if let Some(mac) = &nic.mac {
            fields.push(("Address", mac.clone()));
            let kind = if nic.mac_static {
                "manual"
            } else {
                "generated"
            };
            extra.push(vmw_config("addressType", kind));
        }
        fields.extend([
            ("AddressOnParent", (7 + i).to_string()),
            (
                "AutomaticAllocation",
                if nic.start_connected { "true" } else { "false" }.into(),
            ),
            ("Connection", nic.connection.clone()),
            (
                "Description",
                format!("{} ethernet adapter on \"{}\"", nic.subtype, nic.connection),
            ),
            ("ElementName", format!("Network adapter {}", i + 1)),
            ("InstanceID", instance.to_string()),
            ("ResourceSubType", nic.subtype.clone()),
            ("ResourceType", "10".into()),
        ]);
        s.push_str(&item(&fields, &extra));
        instance += 1;
    }
    if let Some(f) = &hw.firmware {
        s.push_str(&format!("      {}\n", vmw_config("firmware", f)));
    }
    for (k, v) in &hw.extra_config {
        s.push_str(&format!(
            "      <vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"{}\" vmw:value=\"{}\"/>\n",
            xml_escape(k),
            xml_escape(v)
        ));
    }
    if let Some(u) = &hw.uuid {
        s.push_str(&format!("      {}\n", vmw_config("uuid", u)));
    }
    s.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(i: u64, slot: Option<(u32, u32)>) -> OvfDisk {
        OvfDisk {
            file_name: format!("a&b-disk{}.vmdk", i + 1),
            file_size_bytes: 1000 + i,
            capacity_bytes: 1 << 30,
            slot,
        }
    }

    fn texts<'a>(doc: &'a roxmltree::Document<'_>, tag: &str) -> Vec<&'a str> {
        doc.descendants()
            .filter(|n| n.tag_name().name() == tag)
            .filter_map(|n| n.text())
            .collect()
    }

    #[test]
    fn hardware_comes_from_the_vmx_or_defaults() {
        let hw = VmHardware::from_vmx(
            "numvcpus = \"4\"\nmemSize = \"8192\"\nguestOS = \"debian12-64\"\nscsi0.virtualDev = \"pvscsi\"\nvirtualHW.version = \"19\"\n",
        );
        assert_eq!(hw.vcpus, 4);
        assert_eq!(hw.memory_mib, 8192);
        assert_eq!(hw.guest_os, "debian12-64");
        assert_eq!(hw.scsi_controller, "VirtualSCSI");
        assert_eq!(hw.hardware_version, "vmx-19");
        assert_eq!(
            VmHardware::from_vmx("memSize = \"x\"\n"),
            VmHardware::default()
        );
    }

    #[test]
    fn cards_uuid_and_firmware_come_from_the_vmx() {
        let hw = VmHardware::from_vmx(
            "uuid.bios = \"42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8\"\nfirmware = \"efi\"\n\
             ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"Prod\"\n\
             ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:00:00:01\"\n\
             ethernet1.present = \"TRUE\"\nethernet1.addressType = \"vpx\"\nethernet1.generatedAddress = \"00:50:56:9A:12:34\"\n\
             ethernet1.startConnected = \"FALSE\"\nethernet2.present = \"FALSE\"\n",
        );
        assert_eq!(
            hw.uuid.as_deref(),
            Some("421a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8")
        );
        assert_eq!(hw.firmware.as_deref(), Some("efi"));
        assert_eq!(
            hw.nics,
            vec![
                OvfNic {
                    connection: "Prod".into(),
                    subtype: "VmxNet3".into(),
                    start_connected: true,
                    mac: Some("00:50:56:00:00:01".into()),
                    mac_static: true,
                },
                OvfNic {
                    connection: "VM Network".into(),
                    subtype: "E1000".into(),
                    start_connected: false,
                    mac: Some("00:50:56:9a:12:34".into()),
                    mac_static: false,
                },
            ]
        );
        assert!(hw.extra_config.is_empty(), "{:?}", hw.extra_config);
        let extra = VmHardware::from_vmx(
            "guestinfo.lab.tcp_ports = \"22,8022\"\ndisk.EnableUUID = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\n\
             sched.swap.derivedName = \"/vmfs/x.vswp\"\npciBridge0.present = \"TRUE\"\nsvga.present = \"TRUE\"\n",
        );
        assert_eq!(
            extra.extra_config,
            [
                ("guestinfo.lab.tcp_ports".to_string(), "22,8022".to_string()),
                ("disk.EnableUUID".to_string(), "TRUE".to_string())
            ]
        );
        let anon = hw.clone().without_identity();
        assert!(anon.uuid.is_none() && anon.nics.iter().all(|n| n.mac.is_none()));
        let xml = ovf_envelope("db01", &hw, &[disk(0, None)]).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            texts(&doc, "Address"),
            ["0", "00:50:56:00:00:01", "00:50:56:9a:12:34"]
        );
        assert_eq!(texts(&doc, "AutomaticAllocation"), ["true", "false"]);
        let configs: Vec<(&str, &str)> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Config")
            .map(|n| {
                let attr = |k| {
                    n.attribute(("http://www.vmware.com/schema/ovf", k))
                        .unwrap()
                };
                (attr("key"), attr("value"))
            })
            .collect();
        assert_eq!(
            configs,
            [
                ("addressType", "manual"),
                ("addressType", "generated"),
                ("firmware", "efi"),
                ("uuid", "421a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"),
            ]
        );
    }

    #[test]
    fn disks_keep_their_slots_or_skip_unit_seven() {
        let disks: Vec<OvfDisk> = (0..17).map(|i| disk(i, None)).collect();
        let xml = ovf_envelope("a&b", &VmHardware::default(), &disks).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let units = texts(&doc, "AddressOnParent");
        assert_eq!(units[6..9], ["6", "8", "9"]);
        assert_eq!(units[15], "0", "the 16th disk is on the second controller");
        assert_eq!(
            doc.descendants()
                .filter(|n| n.tag_name().name() == "File")
                .count(),
            17
        );
        assert!(ovf_envelope("x", &VmHardware::default(), &vec![disks[0].clone(); 61]).is_err());
        // Slots as the VM had them: scsi1:3 and scsi0:0.
        let xml = ovf_envelope(
            "x",
            &VmHardware::from_vmx("scsi1.virtualDev = \"pvscsi\"\n"),
            &[disk(0, Some((1, 3))), disk(1, Some((0, 0)))],
        )
        .unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(texts(&doc, "AddressOnParent"), ["3", "0"]);
        assert_eq!(texts(&doc, "ResourceSubType"), ["lsilogic", "VirtualSCSI"]);
        assert_eq!(scsi_slot(Some("scsi1:3")), Some((1, 3)));
        assert_eq!(scsi_slot(Some("scsi0:7")), None);
        assert_eq!(scsi_slot(Some("sata0:1")), None);
    }
}
