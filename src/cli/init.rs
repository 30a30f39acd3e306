//! `coffer init`: a new policy directory, against the lab or a host.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::EXIT_OK;
use crate::engine::init::{self, Origin};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to create (the default of every command's -p).
    #[arg(default_value = "policies")]
    pub dir: PathBuf,
    /// Fill the policy in from this ESXi host or vCenter (`https://HOST`):
    /// its certificate's thumbprint and its VMs. Without it, the policy
    /// backs up the built-in lab.
    #[arg(long, value_name = "URL")]
    pub from_source: Option<String>,
    /// With --from-source: the account to log in as.
    #[arg(long, default_value = "root", requires = "from_source")]
    pub user: String,
    /// With --from-source: the environment variable holding the account's
    /// password (the policy reads it from there too).
    #[arg(
        long,
        value_name = "VAR",
        default_value = "COFFER_PASSWORD",
        requires = "from_source"
    )]
    pub password_env: String,
}

pub fn run(args: Args) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    let origin = match &args.from_source {
        None => Origin::Lab,
        Some(url) => {
            let thumbprint = init::presented_thumbprint(url)?;
            writeln!(out, "{url} presents the certificate {thumbprint}")?;
            let password = std::env::var(&args.password_env).with_context(|| {
                format!(
                    "set {} to the password of {} (the policy reads it from there too)",
                    args.password_env, args.user
                )
            })?;
            let facts =
                init::read_host(url, &thumbprint, &args.user, &password, &args.password_env)?;
            writeln!(
                out,
                "{}: {} ({}), {} VMs",
                facts.source,
                facts.product,
                if facts.vcenter { "vCenter" } else { "ESXi" },
                facts.vms.len()
            )?;
            Origin::Host(facts)
        }
    };
    for file in init::write(&args.dir, &origin)? {
        writeln!(out, "wrote {}", file.display())?;
    }
    let p = args.dir.display();
    if matches!(origin, Origin::Host(_)) {
        writeln!(
            out,
            "compare the thumbprint above with the one the host shows before you go on"
        )?;
    }
    writeln!(
        out,
        "next: coffer validate -p {p}; coffer repo init --all -p {p}; coffer plan -p {p}; coffer apply -p {p}"
    )?;
    Ok(EXIT_OK)
}
