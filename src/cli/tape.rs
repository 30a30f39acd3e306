//! `coffer tape`: the media of a tape tier (`media`), its catalog rebuilt
//! from the tapes (`scan`), and an emulated tape library to try tape tiers
//! without a drive (`emulate`).

use anyhow::{Result, anyhow};

use super::{EXIT_OK, PolicyArgs, print};
use crate::engine::tiers::tape_tier;
use crate::policy::units::ByteSize;

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
}

#[derive(Debug, clap::Args)]
pub struct MediaArgs {
    /// The tape tier.
    #[arg(long)]
    pub tier: String,
    /// Do not ask the library where each medium is (no changer access).
    #[arg(long)]
    pub offline: bool,
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
    #[arg(long, default_value = "1GiB", value_parser = crate::policy::units::parse_size)]
    pub capacity: ByteSize,
    /// Barcodes are this prefix, a number and "L9" (LTO-9), e.g. CF0001L9.
    #[arg(long, default_value = "CF")]
    pub barcode_prefix: String,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    match command {
        Command::Media(a) => {
            let media = tape_tier(&p.load()?, &a.tier)?.media(!a.offline)?;
            print(crate::text::tape_media(&a.tier, &media))?;
        }
        Command::Scan(a) => {
            let scanned = tape_tier(&p.load()?, &a.tier)?.scan()?;
            print(crate::text::tape_scanned(&a.tier, &scanned))?;
        }
        Command::Emulate(a) => {
            let (dir, size) = (&a.dir, a.capacity.0);
            let barcodes = crate::tape::emulated::FileChanger::create_lto(
                dir,
                a.slots,
                a.cartridges,
                size,
                &a.barcode_prefix,
            )
            .map_err(|e| anyhow!("creating the library in {}: {e}", dir.display()))?;
            print(crate::text::tape_library_made(
                dir, a.slots, &barcodes, size,
            ))?;
        }
    }
    Ok(EXIT_OK)
}
