//! One runner per policy directory: `apply`, `backup` and `daemon` hold an
//! exclusive lock on `<state_dir>/runner.lock` while they work, so two of
//! them never back up the same VM at once. The lock is an flock: it is
//! released when the process ends, however it ends.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// Whether this process holds a runner lock (an flock taken twice in one
/// process through two descriptors conflicts with itself, so the holder
/// must know without asking the file).
static HELD_HERE: AtomicBool = AtomicBool::new(false);

/// Held while a runner works.
#[derive(Debug)]
pub struct RunnerLock {
    _file: File,
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        HELD_HERE.store(false, Ordering::SeqCst);
    }
}

/// Whether no run of the installation whose state dir is `state_dir` can be
/// alive but this process's own: it holds the runner lock, or nobody does.
/// Then every coffer snapshot that installation's earlier runs left is
/// dead and may be removed. A `plan` beside a working `apply` says no.
pub fn other_runs_are_dead(state_dir: &Path) -> bool {
    if HELD_HERE.load(Ordering::SeqCst) {
        return true;
    }
    let Ok(file) = std::fs::File::open(state_dir.join("runner.lock")) else {
        // No lock file: no runner ever worked here.
        return !state_dir.join("runner.lock").exists();
    };
    // SAFETY: flock on a descriptor this function owns; the lock taken is
    // released when `file` is closed at the end of this function.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
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
        HELD_HERE.store(true, Ordering::SeqCst);
        Ok(RunnerLock { _file: file })
    }
}
