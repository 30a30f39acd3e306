//! Instant recovery: a VM booted straight from a restore point, with no
//! copy first. coffer serves the point over NFS v3 as a small datastore
//! (`export`, `serve`), the host mounts it (`CreateNasDatastore`),
//! registers the VM from it and powers it on; the guest's writes land in a
//! per-session overlay on coffer's disk, never in the repository. A session
//! lasts until `stop` (power off, unregister, unmount, overlay dropped) or
//! `migrate` (the VM moved onto a production datastore).

pub mod client;
pub mod export;
pub mod serve;
pub mod session;
