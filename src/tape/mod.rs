//! Tape tiers: a drive and an optional changer (`device`, `changer`), the
//! records coffer writes on tape (`format`), a library emulated in a
//! directory for the tests (`emulated`), and the tier itself as a
//! repository store with its media catalog (`tier`).

pub mod changer;
pub mod device;
pub mod emulated;
pub mod format;
pub mod tier;
