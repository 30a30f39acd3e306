//! The lab guests' network, as far as drills need it: a running guest whose
//! .vmx declares `guestinfo.lab.tcp_ports = "22,80"` answers on those ports
//! at its own loopback address (`127.77.x.y`, from its id), and reports that
//! address as `guest.ipAddress`. A guest that stops running (powered off,
//! destroyed, a disk that no longer boots) stops listening, so a TCP check
//! against it fails as it would on a real host; so does a guest with no
//! card connected to a port group of its host (`hostnet::online`).
//!
//! Not modelled: reachability. Every lab guest's address is on loopback,
//! so coffer reaches a guest on an isolated switch (no uplink) as well as
//! one on `VM Network`; on a real host coffer's own machine reaches a drill
//! VM's ports only when it is attached to that network itself.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::state::{Store, Vm};

/// The vmx key that declares a guest's listening ports.
pub const PORTS_KEY: &str = "guestinfo.lab.tcp_ports";

/// Listeners open in this process: (address, port).
static OPEN: Mutex<BTreeSet<(String, u16)>> = Mutex::new(BTreeSet::new());

/// A guest's loopback address.
pub fn guest_ip(vm: &Vm) -> String {
    format!("127.77.{}.{}", (vm.id >> 8) & 255, vm.id & 255)
}

/// The ports the guest's .vmx declares.
pub fn declared_ports(vm: &Vm, root: &Path) -> Vec<u16> {
    vm.vmx_text(root)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(PORTS_KEY))
        .flat_map(|(_, v)| {
            v.trim()
                .trim_matches('"')
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect()
}

fn running(store: &Store, id: u64) -> bool {
    store
        .read(|st, root| {
            Ok(st.vms.iter().any(|v| {
                v.id == id && v.powered_on && v.boots(root) && super::hostnet::online(st, v, root)
            }))
        })
        .unwrap_or(false)
}

/// Opens the declared ports of every running guest that is not listening
/// yet. Each listener answers with a banner and closes, and ends itself
/// when its guest stops running.
pub fn ensure_listeners(store: &Store) {
    let Ok(wanted) = store.read(|st, root| {
        Ok(st
            .vms
            .iter()
            .filter(|v| v.powered_on && v.boots(root) && super::hostnet::online(st, v, root))
            .flat_map(|v| {
                let ip = guest_ip(v);
                declared_ports(v, root)
                    .into_iter()
                    .map(move |p| (v.id, ip.clone(), p))
            })
            .collect::<Vec<_>>())
    }) else {
        return;
    };
    for (id, ip, port) in wanted {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if open.contains(&(ip.clone(), port)) {
            continue;
        }
        let Ok(listener) = TcpListener::bind((ip.as_str(), port)) else {
            continue;
        };
        let _ = listener.set_nonblocking(true);
        open.insert((ip.clone(), port));
        drop(open);
        let store = store.clone();
        std::thread::spawn(move || {
            let mut idle = 0u32;
            loop {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"coffer-lab guest\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
                idle += 1;
                if idle.is_multiple_of(5) && !running(&store, id) {
                    break;
                }
            }
            drop(listener);
            OPEN.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(ip, port));
        });
    }
}
