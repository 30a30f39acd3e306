//! `coffer tape`: the media of a tape tier (`media`), its catalog rebuilt
//! from the tapes (`scan`), and an emulated tape library to try tape tiers
//! without a drive (`emulate`).

use anyhow::{Result, anyhow};

use super::{EXIT_OK, PolicyArgs, print};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The media of a tape tier: label, state, where it is, its files and
    /// the points each holds.
    Media(MediaArgs),
    /// Create a tape library emulated in a directory (slots of blank
    /// cartridges and a drive), for a tier's `library` key.
    Emulate(EmulateArgs),
    /// Rebuild a tape tier's media catalog from the tapes themselves (after
    /// the catalog directory was lost): every cartridge of the pool in the
    /// library, or the one in the drive without a changer.
    Scan(ScanArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The tape tier.
    #[arg(long)]
    pub tier: String,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

#[derive(Debug, clap::Args)]
pub struct MediaArgs {
    /// The tape tier.
    #[arg(long)]
    pub tier: String,
    /// Do not ask the library where each medium is (no changer access).
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// The directory to create the library in.
    pub dir: std::path::PathBuf,
    /// Storage slots.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Blank cartridges put into the first slots.
    #[arg(long, default_value_t = 4)]
    pub cartridges: u32,
    /// Capacity of each cartridge, e.g. "1GiB".
    #[arg(long, default_value = "1GiB")]
    pub capacity: String,
    /// Barcodes are this prefix, a number and "L9" (LTO-9), e.g. CF0001L9.
    #[arg(long, default_value = "CF")]
    pub barcode_prefix: String,
}

pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Media(a) => {
            let config = a.policies.load()?;
            let tape = crate::engine::tiers::tape_store(&config, &a.tier)?
                .ok_or_else(|| anyhow!("tier `{}` is not a tape tier", a.tier))?;
            let media = tape.media(!a.offline)?;
            print(crate::text::tape_media(&a.tier, &media))?;
        }
        Command::Scan(a) => {
            let config = a.policies.load()?;
            let tape = crate::engine::tiers::tape_store(&config, &a.tier)?
                .ok_or_else(|| anyhow!("tier `{}` is not a tape tier", a.tier))?;
            print(crate::text::tape_scanned(&a.tier, &tape.scan()?))?;
        }
        Command::Emulate(a) => {
            let capacity = crate::policy::units::parse_size(&a.capacity)
                .map_err(|e| anyhow!("--capacity: {e}"))?
                .0;
            let barcodes = crate::tape::emulated::FileChanger::create_lto(
                &a.dir,
                a.slots,
                a.cartridges,
                capacity,
                &a.barcode_prefix,
            )
            .map_err(|e| anyhow!("creating the library in {}: {e}", a.dir.display()))?;
            print(format!(
                "emulated tape library in {}: {} slots, {} blank cartridges ({}) of {}\nuse it in a tier: backend = \"tape\", library = \"{}\"\n",
                a.dir.display(),
                a.slots,
                a.cartridges,
                barcodes.join(", "),
                a.capacity,
                a.dir.display()
            ))?;
        }
    }
    Ok(EXIT_OK)
}
