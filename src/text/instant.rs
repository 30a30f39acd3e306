//! Instant recovery's lines.

use crate::engine::instant::{Listed, Migrated, Started, Stopped};
use crate::policy::units::format_size;

pub fn instant_started(s: &Started) -> String {
    let x = &s.session;
    format!(
        "{} runs from point {} of {} (tier {}), served by coffer at {}:{} as datastore {}\n\
         powered on after {:.1} s, VMware Tools heartbeat after {:.1} s\n\
         its writes go to the session's overlay; move it to production storage or stop it:\n\
         \x20 coffer instant-recover migrate {} --datastore DATASTORE\n\
         \x20 coffer instant-recover stop {}\n",
        x.name,
        x.point,
        x.vm,
        x.tier,
        x.address,
        x.export,
        x.datastore,
        s.seconds_to_power_on,
        s.seconds_to_heartbeat,
        x.name,
        x.name
    ) + &s
        .not_recorded
        .as_ref()
        .map(|e| format!("coffer: the recovery could not be recorded in the catalog: {e}\n"))
        .unwrap_or_default()
}

pub fn instant_sessions(list: &[Listed]) -> String {
    if list.is_empty() {
        return "no instant-recovery sessions\n".into();
    }
    let mut out = format!(
        "{:<24} {:<24} {:<20} {:<8} {:>10}  {}\n",
        "NAME", "POINT", "SOURCE", "SERVER", "OVERLAY", "DATASTORE"
    );
    for l in list {
        let s = &l.session;
        out.push_str(&format!(
            "{:<24} {:<24} {:<20} {:<8} {:>10}  {}\n",
            s.name,
            s.point,
            s.source,
            if l.server_running {
                "running"
            } else {
                "STOPPED"
            },
            format_size(l.overlay_bytes),
            s.datastore
        ));
    }
    out
}

pub fn instant_stopped(s: &Stopped) -> String {
    format!(
        "stopped {}: powered off, unregistered, datastore {} unmounted, server stopped, overlay of {} dropped\n",
        s.session.name,
        s.session.datastore,
        format_size(s.overlay_bytes)
    )
}

pub fn instant_migrated(m: &Migrated) -> String {
    if m.storage_vmotion {
        return format!(
            "migrated {} to datastore {} by Storage vMotion, running throughout; \
             the session is over (datastore {} unmounted, server stopped, overlay dropped)\n",
            m.session.name, m.datastore, m.session.datastore
        );
    }
    format!(
        "migrated {} to datastore {}: {} copied (the point plus the session's writes), down for {:.1} s; \
         the session is over (datastore {} unmounted, server stopped, overlay dropped)\n",
        m.session.name,
        m.datastore,
        format_size(m.bytes_copied),
        m.downtime_seconds,
        m.session.datastore
    )
}
