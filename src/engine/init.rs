//! `coffer init`: a new policy directory that validates and runs as it is,
//! commented table by table so that it teaches the format. Against the
//! built-in lab by default; with a host's URL, against that host: its
//! certificate's thumbprint (shown so the operator can compare it with
//! the host's console, as `govc about.cert` shows it) and its VMs, listed
//! in the policy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::policy::model::TlsTrust;
use crate::policy::validate::parse_thumbprint;
use crate::vsphere::Session;
use crate::vsphere::transport::{Transport, format_thumbprint};

/// The file `init` writes the policies into.
pub const POLICY_FILE: &str = "coffer.toml";
/// The JSON Schema beside it, which the policy file's `#:schema` line
/// names for editors (taplo, Even Better TOML).
pub const SCHEMA_FILE: &str = "coffer.schema.json";

/// What the new policy directory backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in lab: runs anywhere, for a first try.
    Lab,
    /// A host or vCenter that answered.
    Host(HostFacts),
}

/// What `init` learned from a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The source's name in the policy (from the host's name).
    pub source: String,
    pub url: String,
    pub vcenter: bool,
    /// `sha256:AB:CD:…`
    pub thumbprint: String,
    pub user: String,
    /// The environment variable the policy reads the password from.
    pub password_env: String,
    /// What the endpoint says it is (`VMware ESXi 8.0.2 …`).
    pub product: String,
    /// Its VMs by name, sorted.
    pub vms: Vec<String>,
}

/// A source name from a URL's host: `https://esxi01.example.com:443` →
/// `esxi01`; an address keeps its digits (`host-10-0-0-5`).
pub fn source_name(url: &str) -> String {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    let first = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("host-{}", host.replace('.', "-"))
    } else {
        host.split('.').next().unwrap_or("").to_string()
    };
    let name: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "host".into() } else { name }
}

/// The certificate `url` presents, as `sha256:AB:…`: asked with a pin
/// no certificate matches, so the handshake shows it and stops before
/// any credential is sent.
pub fn presented_thumbprint(url: &str) -> Result<String> {
    let transport = Transport::new(url, &TlsTrust::Thumbprint([0; 32]))?;
    match transport.service_versions() {
        Err(crate::vsphere::Error::ThumbprintMismatch { presented, .. }) => Ok(presented),
        Err(e) => Err(e).with_context(|| format!("reading the certificate of {url}")),
        Ok(_) => bail!("{url} answered without TLS verification failing; refusing to go on"),
    }
}

/// Logs in to `url` trusting exactly `thumbprint`, and reads what the
/// policy needs.
pub fn read_host(
    url: &str,
    thumbprint: &str,
    user: &str,
    password: &str,
    password_env: &str,
) -> Result<HostFacts> {
    let pin = parse_thumbprint(thumbprint).map_err(|e| anyhow::anyhow!("{thumbprint}: {e}"))?;
    let session = Session::connect(url, &TlsTrust::Thumbprint(pin), user, password)
        .with_context(|| format!("logging in to {url} as {user}"))?;
    let about = &session.service_content().about;
    let mut vms: Vec<String> = session
        .list_vms()
        .context("listing the VMs")?
        .into_iter()
        .map(|v| v.name)
        .collect();
    vms.sort();
    let facts = HostFacts {
        source: source_name(url),
        url: url
            .trim_end_matches('/')
            .trim_end_matches("/sdk")
            .to_string(),
        vcenter: about.is_vcenter(),
        thumbprint: format_thumbprint(&pin),
        user: user.to_string(),
        password_env: password_env.to_string(),
        product: about.full_name.clone(),
        vms,
    };
    let _ = session.logout();
    Ok(facts)
}

/// A TOML string, quoted and escaped.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The policy file for `origin`.
pub fn policy_text(origin: &Origin) -> String {
    let (source_name, source) = match origin {
        Origin::Lab => (
            "lab".to_string(),
            "# The built-in lab: an ESXi simulator coffer runs inside itself on\n\
             # loopback, with VMs whose disks hold real data. Replace it with your\n\
             # hosts when you are ready (see the commented example below, and\n\
             # `coffer init --from-source https://HOST` to fill one in for you).\n\
             [sources.lab]\n\
             kind = \"lab\"\n\
             lab_vms = 2\n\
             \n\
             # [sources.esxi01]\n\
             # kind = \"esxi\"                      # or \"vcenter\"\n\
             # url = \"https://esxi01.example.com\"\n\
             # user = \"svc-coffer\"                # a role of its own: docs/operations.md, \"Privileges\"\n\
             # password = { env = \"COFFER_ESXI01_PASSWORD\" }\n\
             # thumbprint = \"sha256:…\"            # the host's certificate, or ca_file = \"…\"\n"
                .to_string(),
        ),
        Origin::Host(h) => {
            let mut s = format!(
                "# {product}, read by `coffer init` on its first contact. Compare the\n\
                 # thumbprint with the one the host shows (its console, or its\n\
                 # certificate in the vSphere Client) before trusting this file.\n\
                 [sources.{name}]\n\
                 kind = {kind}\n\
                 url = {url}\n\
                 user = {user}   # a role of its own: docs/operations.md, \"Privileges\"\n\
                 password = {{ env = {env} }}\n\
                 thumbprint = {thumb}\n",
                product = h.product,
                name = h.source,
                kind = quoted(if h.vcenter { "vcenter" } else { "esxi" }),
                url = quoted(&h.url),
                user = quoted(&h.user),
                env = quoted(&h.password_env),
                thumb = quoted(&h.thumbprint),
            );
            if !h.vms.is_empty() {
                s.push_str(&format!(
                    "# Its VMs when `coffer init` asked ({}):\n",
                    h.vms.len()
                ));
                for vm in &h.vms {
                    s.push_str(&format!("#   {vm}\n"));
                }
            }
            (h.source.clone(), s)
        }
    };
    format!(
        "#:schema ./{SCHEMA_FILE}\n\
         # A coffer policy directory: every *.toml here (and below) is read.\n\
         # Check it with `coffer validate`, see what would happen with `coffer\n\
         # plan`, do it with `coffer apply` (docs/policy.md has every key).\n\
         \n\
         [settings]\n\
         timezone = \"UTC\"      # schedules and reports speak this time zone\n\
         # state_dir = \".coffer\"  # the catalog, reports and locks (the default)\n\
         \n\
         {source}\n\
         # Where restore points go. A local directory first; add an offsite tier\n\
         # (S3 with Object Lock, docs/policy.md \"Tiers\") for 3-2-1.\n\
         [tiers.local]\n\
         backend = \"local\"\n\
         path = \"repo\"        # relative to this directory, never inside the state directory\n\
         site = \"here\"        # a tier at another site than the source counts as offsite\n\
         \n\
         # What to back up, when, and how long to keep it.\n\
         [policies.nightly]\n\
         description = \"every VM of {source_name}, nightly\"\n\
         sources = [{source_q}]\n\
         vms = [\"*\"]               # names or patterns; exclude = [\"test-*\"] leaves some out\n\
         schedule = \"0 0 1 * * *\"  # sec min hour day month weekday: 01:00:00 every day\n\
         rpo = \"26h\"               # a VM without a point this recent is out of policy\n\
         consistency = \"application-preferred\"  # quiesce; take a crash-consistent point if that fails\n\
         backup_to = \"local\"\n\
         \n\
         [policies.nightly.retain.local]\n\
         last = 3     # the newest three, whatever their age\n\
         daily = 14   # and one a day for two weeks\n\
         \n\
         # Prove the points: read every chunk back weekly.\n\
         [[policies.nightly.drills]]\n\
         kind = \"verify\"\n\
         every = \"7d\"\n",
        source_q = quoted(&source_name),
    )
}

/// The files `init` writes into `dir`, with their contents.
pub fn scaffold(origin: &Origin) -> Vec<(&'static str, String)> {
    vec![
        (POLICY_FILE, policy_text(origin)),
        (SCHEMA_FILE, crate::policy::schema::schema_text()),
        (
            ".gitignore",
            "# coffer's state (catalog, reports, locks) and the local tier's\n\
             # repository: not policy, not for git.\n\
             .coffer/\n\
             repo/\n"
                .to_string(),
        ),
    ]
}

/// Writes the scaffold into `dir` (made if missing). A directory that
/// already holds policy files, or any of the files, is left alone.
pub fn write(dir: &Path, origin: &Origin) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing = crate::policy::load(dir).files;
    if let Some(f) = existing.first() {
        bail!(
            "{} already holds policies ({}); coffer init starts a new directory",
            dir.display(),
            f.display()
        );
    }
    let files = scaffold(origin);
    for (name, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            bail!("{} exists; coffer init leaves it alone", path.display());
        }
    }
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_come_from_the_host() {
        assert_eq!(source_name("https://ESXi01.example.com"), "esxi01");
        assert_eq!(source_name("https://vc.site-a.example:8443/sdk"), "vc");
        assert_eq!(source_name("https://10.0.0.5"), "host-10-0-0-5");
        assert_eq!(source_name("https://127.0.0.1:4430"), "host-127-0-0-1");
    }

    /// Both scaffolds load without a diagnostic: what init writes runs.
    #[test]
    fn the_scaffolds_validate_cleanly() {
        let host = Origin::Host(HostFacts {
            source: "esxi01".into(),
            url: "https://esxi01.example.com".into(),
            vcenter: false,
            thumbprint: format!("sha256:{}", ["AB"; 32].join(":")),
            user: "svc-coffer".into(),
            password_env: "COFFER_ESXI01_PASSWORD".into(),
            product: "VMware ESXi 8.0.2 build-22380479".into(),
            vms: vec!["db01".into(), "web \"01\"".into()],
        });
        for origin in [Origin::Lab, host] {
            let t = tempfile::tempdir().unwrap();
            write(t.path(), &origin).unwrap();
            let loaded = crate::policy::load(t.path());
            assert!(
                loaded.diagnostics.is_empty() && loaded.config.is_some(),
                "{}",
                loaded.render()
            );
            assert!(write(t.path(), &origin).is_err(), "never over a directory");
        }
    }
}
