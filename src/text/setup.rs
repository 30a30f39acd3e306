//! A policy directory for people: what `coffer init` found and wrote,
//! what `coffer validate` thinks of it, and when a schedule fires.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::engine::init::HostFacts;
use crate::policy::Loaded;
use crate::policy::model::Policy;
use crate::policy::schedule::FireTime;

/// A command found its policy directory invalid (the errors are printed
/// above): how to go on.
pub fn policy_dir_invalid(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "policy directory `{dir}` is invalid; run `coffer validate -p {dir}` after fixing the errors above\n"
    )
}

/// `man --out DIR`: how many pages went where.
pub fn man_pages_written(pages: usize, dir: &Path) -> String {
    format!("wrote {pages} pages into {}\n", dir.display())
}

/// `init --from-source`: the certificate the host presented, to compare.
pub fn host_presents(url: &str, thumbprint: &str) -> String {
    format!("{url} presents the certificate {thumbprint}\n")
}

/// `init --from-source`: what the host is and how many VMs it has.
pub fn host_read(facts: &HostFacts) -> String {
    format!(
        "{}: {} ({}), {} VMs\n",
        facts.source,
        facts.product,
        if facts.vcenter { "vCenter" } else { "ESXi" },
        facts.vms.len()
    )
}

/// `init`: the files written into `dir`, and the commands to run next
/// (after comparing the thumbprint, when it came `from_host`).
pub fn policy_dir_written(files: &[PathBuf], dir: &Path, from_host: bool) -> String {
    let mut out = String::new();
    for file in files {
        let _ = writeln!(out, "wrote {}", file.display());
    }
    let p = dir.display();
    if from_host {
        let _ = writeln!(
            out,
            "compare the thumbprint above with the one the host shows before you go on"
        );
    }
    let _ = writeln!(
        out,
        "next: coffer validate -p {p}; coffer repo init --all -p {p}; coffer plan -p {p}; coffer apply -p {p}"
    );
    out
}

/// `validate`: every diagnostic, then the verdict on `dir`.
pub fn validated(loaded: &Loaded, dir: &Path, errors: usize, warnings: usize) -> String {
    let mut out = loaded.render();
    let _ = match &loaded.config {
        Some(config) => writeln!(
            out,
            "{}: valid ({} files; {} sources, {} tiers, {} policies, {} drills, {} notifiers; {} warnings)",
            dir.display(),
            loaded.files.len(),
            config.sources.len(),
            config.tiers.len(),
            config.policies.len(),
            config
                .policies
                .values()
                .map(|p| p.drills.len())
                .sum::<usize>(),
            config.notify.len(),
            warnings,
        ),
        None => writeln!(
            out,
            "{}: invalid ({errors} errors, {warnings} warnings)",
            dir.display()
        ),
    };
    out
}

/// `schedule explain`: the policy's schedule and its next fire times, in
/// its time zone and in UTC, with DST changes marked.
pub fn schedule(policy: &Policy, fires: &[FireTime]) -> String {
    let s = &policy.schedule;
    let mut out = String::new();
    let _ = writeln!(out, "policy {}: `{}` in {}", policy.name, s.text, s.tz);
    for fire in fires {
        let _ = write!(
            out,
            "  {}  ({})",
            fire.local.format("%a %Y-%m-%d %H:%M:%S %Z (%:z)"),
            fire.at.format("%Y-%m-%dT%H:%M:%SZ")
        );
        if let Some((before, after)) = &fire.offset_change {
            let _ = write!(out, "  <- DST change {before} -> {after}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn an_invalid_policy_directory_says_how_to_check_it_again() {
        assert_eq!(
            super::policy_dir_invalid(Path::new("pol")),
            "policy directory `pol` is invalid; run `coffer validate -p pol` after fixing the errors above\n"
        );
    }
}
