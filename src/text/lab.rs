//! The built-in lab for people: where it serves and how to log in, a VM
//! added, and what a guest's writes changed.

use std::fmt::Write as _;
use std::path::Path;

use crate::lab::{DiskWrite, LabHandle, MadeDisk, NewDisk};
use crate::policy::units::format_size;

/// `lab add-vm`: the VM and each of its disks, with where its data came
/// from.
pub fn lab_vm_added(name: &str, made: &[MadeDisk], specs: &[NewDisk], dir: &Path) -> String {
    let total: u64 = made.iter().map(|d| d.capacity_bytes).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "added VM {name} with {} disk(s), {} in all, to the lab in {}",
        made.len(),
        format_size(total),
        dir.display()
    );
    for (i, (d, spec)) in made.iter().zip(specs).enumerate() {
        let from = match spec {
            NewDisk::Image { path, .. } => format!("from image {}", path.display()),
            NewDisk::Generated { .. } => "made-up data".to_string(),
        };
        let _ = writeln!(
            out,
            "  disk {i}: {}, {from}, {} allocated",
            format_size(d.capacity_bytes),
            format_size(d.allocated_bytes)
        );
    }
    out
}

/// `lab serve`: where the lab's state is and how to reach it, for people,
/// then the same as one JSON line for scripts.
pub fn lab_serving(lab: &LabHandle, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "coffer lab: state in {}", dir.display());
    let _ = writeln!(out, "url:        {}", lab.url());
    let _ = writeln!(out, "thumbprint: {}", lab.thumbprint());
    let _ = writeln!(out, "user:       {}", lab.user());
    let _ = writeln!(out, "password:   {}", lab.password());
    let json = serde_json::json!({
        "url": lab.url(),
        "thumbprint": lab.thumbprint(),
        "user": lab.user(),
        "password": lab.password(),
        "state": dir,
        "ca": lab.ca_pem(),
    });
    let _ = writeln!(out, "{json}");
    out
}

/// `lab nfs-read`: bytes read, seconds and rate, as one JSON line.
pub fn nfs_read(bytes: u64, seconds: f64) -> String {
    let mib_per_s = bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9);
    format!("{{\"bytes\": {bytes}, \"seconds\": {seconds:.3}, \"mib_per_s\": {mib_per_s:.1}}}\n")
}

/// `lab write`: what each disk of `vm` got.
pub fn lab_written(vm: &str, written: &[DiskWrite]) -> String {
    let mut out = String::new();
    for d in written {
        let _ = writeln!(
            out,
            "{vm}: disk {} got {} blocks of 64 KiB ({} KiB) in {} areas, into {}",
            d.key,
            d.blocks,
            d.blocks * 64,
            d.areas.len(),
            d.file
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_nfs_read_is_one_json_line_with_its_rate() {
        let line = super::nfs_read(3 << 20, 2.0);
        assert_eq!(
            line,
            "{\"bytes\": 3145728, \"seconds\": 2.000, \"mib_per_s\": 1.5}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&super::nfs_read(0, 0.0)).unwrap();
        assert_eq!(v["mib_per_s"], 0.0);
    }
}
