//! One runner per policy directory: `apply`, `backup` and `daemon` hold an
//! exclusive lock on `<state_dir>/runner.lock` while they work, so two of
//! them never back up the same VM at once. The lock is an flock: it is
//! released when the process ends, however it ends.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Held while a runner works.
#[derive(Debug)]
pub struct RunnerLock {
    _file: File,
}

impl RunnerLock {
    /// Takes the lock, or says who holds it.
    pub fn take(state_dir: &Path, what: &str) -> Result<RunnerLock> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("runner.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another coffer runner is working on this policy directory ({}); try again when it is done",
                holder.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{what}, pid {}", std::process::id())?;
        Ok(RunnerLock { _file: file })
    }
}
