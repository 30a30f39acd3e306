//! `coffer init`: a new policy directory, against the lab or a host.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{EXIT_OK, print};
use crate::engine::init::{self, Origin};
use crate::text;

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
    let origin = match &args.from_source {
        None => Origin::Lab,
        Some(url) => {
            let thumbprint = init::presented_thumbprint(url)?;
            print(text::host_presents(url, &thumbprint))?;
            let password = std::env::var(&args.password_env).with_context(|| {
                format!(
                    "set {} to the password of {} (the policy reads it from there too)",
                    args.password_env, args.user
                )
            })?;
            let facts =
                init::read_host(url, &thumbprint, &args.user, &password, &args.password_env)?;
            print(text::host_read(&facts))?;
            Origin::Host(facts)
        }
    };
    let files = init::write(&args.dir, &origin)?;
    let from_host = matches!(origin, Origin::Host(_));
    print(text::policy_dir_written(&files, &args.dir, from_host))?;
    Ok(EXIT_OK)
}
