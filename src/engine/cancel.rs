//! Stopping a run cleanly. One process-wide flag says "stop starting work
//! and stop reading": a backup that sees it removes its snapshot and records
//! nothing. Ctrl-C and SIGTERM set it once the driver installs the signal
//! handler; a library caller sets it with [`request`]. A second Ctrl-C also
//! sets [`ABORT`]: the driver may then exit as soon as [`SNAPSHOTS_OPEN`] is
//! zero (no snapshot is left behind by exiting then).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Set by a second Ctrl-C: stop as soon as no snapshot is open.
pub static ABORT: AtomicBool = AtomicBool::new(false);

/// Backups with an open snapshot right now (a second Ctrl-C waits for
/// them to remove it, and only for them).
pub static SNAPSHOTS_OPEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigint(_: libc::c_int) {
    if CANCEL.swap(true, Ordering::SeqCst) {
        ABORT.store(true, Ordering::SeqCst);
    }
}

/// Returns once a second Ctrl-C asked to abort and no snapshot is open,
/// when the driver may exit without leaving one behind.
pub fn wait_for_safe_abort() {
    while !(ABORT.load(Ordering::SeqCst) && SNAPSHOTS_OPEN.load(Ordering::SeqCst) == 0) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Ctrl-C and SIGTERM set the cancel flag instead of killing the process,
/// so the snapshot is removed before coffer exits. Only a program that
/// drives the engine calls this; the engine never does.
pub fn install_signal_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

/// The cancel flag itself, for code that polls it.
pub fn flag() -> &'static AtomicBool {
    &CANCEL
}

/// Whether the run was asked to stop.
pub fn requested() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// Asks the running work to stop, as a Ctrl-C would.
pub fn request() {
    CANCEL.store(true, Ordering::SeqCst);
}
