//! Tape tiers: a drive and an optional changer (`device`, `changer`), the
//! records coffer writes on tape (`format`), a library emulated in a
//! directory for the tests (`emulated`), the hardware a tier opens
//! (`hardware`), the tier itself as a repository store with its media
//! catalog (`tier`), and reading points back (`staging`) or the whole
//! catalog (`scan`) from tape.

pub mod changer;
pub mod device;
pub mod emulated;
pub mod format;
pub mod hardware;
pub mod scan;
pub mod staging;
pub mod tier;
