//! Resolving one `[policies.NAME]`: schedule and time zone, RPO against the
//! schedule, window, chunk size, selection, retention per tier and drills.
//! Split from `validate` (which holds the shared checks and the cross-file
//! rules) because a policy is where most of the vocabulary lives.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;

use super::diag::{Diagnostic, one_of};
use super::load::{Entry, Merged, valid_name};
use super::model::*;
use super::raw::*;
use super::units::{self, ByteSize};
use super::validate::{DEFAULT_CHUNK, MAX_CHUNK, MIN_CHUNK, Resolver, count_errors, names_hint};

impl Resolver<'_> {
    pub(super) fn policy(
        &mut self,
        name: &str,
        e: &Entry<RawPolicy>,
        merged: &Merged,
        default_tz: Tz,
    ) -> Option<Policy> {
        let (f, r) = (e.file.as_path(), &e.value);
        let before = count_errors(self.diags);
        let tz = match &r.timezone {
            Some(t) => self.timezone(t, f),
            None => Some(default_tz),
        };
        let schedule = tz.and_then(|tz| self.schedule(&r.schedule, tz, f));
        let rpo = self.duration(&r.rpo, f, "rpo");
        if let (Some(s), Some(rpo), Some(rpo_v)) = (&schedule, rpo, &r.rpo)
            && let Some(gap) = s.longest_gap(Utc::now())
            && gap.to_std().is_ok_and(|g| g > rpo)
        {
            self.diags.push(
                Diagnostic::warning("rpo-unreachable", format!(
                    "the schedule leaves up to {} between backups, longer than the rpo of {}",
                    units::format_duration(gap.to_std().unwrap_or_default()), units::format_duration(rpo)))
                .at(f, rpo_v.span())
                .hint("schedule backups more often or allow a longer rpo; as written the RPO is breached every cycle"),
            );
        }
        let chunk_size = match &r.chunk_size {
            None => ByteSize(DEFAULT_CHUNK),
            Some(c) => match units::parse_size(&c.get().0) {
                Ok(s) if s.0.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(&s.0) => s,
                Ok(_) => {
                    self.err("bad-chunk-size", f, c.span(), format!("chunk size `{}` is not supported", c.get().0),
                        "a power of two from 64KiB to 4MiB: 64KiB, 128KiB, 256KiB, 512KiB, 1MiB, 2MiB or 4MiB".into());
                    ByteSize(DEFAULT_CHUNK)
                }
                Err(err) => {
                    self.err(
                        "bad-size",
                        f,
                        c.span(),
                        format!("`chunk_size`: {err}"),
                        units::SIZE_FORMS.into(),
                    );
                    ByteSize(DEFAULT_CHUNK)
                }
            },
        };
        let window = r.window.as_ref().and_then(|w| {
            units::parse_window(&w.get().0)
                .map_err(|err| {
                    self.err(
                        "bad-window",
                        f,
                        w.span(),
                        format!("`window`: {err}"),
                        units::WINDOW_FORMS.into(),
                    )
                })
                .ok()
        });

        if let (Some(s), Some(w), Some(wv)) = (&schedule, window, &r.window) {
            use chrono::Timelike;
            // A week of fire times (bounded) sees every hour a schedule uses.
            let now = Utc::now();
            let horizon = now + chrono::Duration::days(8);
            let fires: Vec<_> = s
                .upcoming(now, 20_000)
                .into_iter()
                .take_while(|f| f.at <= horizon)
                .collect();
            let inside =
                |f: &super::schedule::FireTime| w.contains(f.local.hour() * 60 + f.local.minute());
            if !fires.is_empty() && !fires.iter().any(inside) {
                self.err("window-never-open", f, wv.span(),
                    format!("the schedule `{}` never fires inside the window `{}`: no backup would ever start", s.text, wv.get().0),
                    "move the schedule into the window, or widen the window".into());
            } else if !fires.iter().all(inside) {
                self.diags.push(Diagnostic::warning("fires-outside-window",
                    format!("the schedule `{}` fires outside the window `{}` at times; those backups wait for the window", s.text, wv.get().0))
                    .at(f, wv.span())
                    .hint("align the schedule with the window to make start times predictable"));
            }
        }

        // Selection.
        if let Some(list) = &r.sources {
            for s in list.get() {
                self.reference(s, "source", &merged.sources, f);
            }
        }
        let selector = Selector {
            sources: r
                .sources
                .as_ref()
                .map(|l| l.get().iter().map(|s| s.get().clone()).collect()),
            vms: self.patterns(&r.vms, f, "vms", false),
            tags: r
                .tags
                .as_ref()
                .map(|l| l.get().iter().map(|s| s.get().clone()).collect())
                .unwrap_or_default(),
            folders: self.patterns(&r.folders, f, "folders", true),
            datastores: self.patterns(&r.datastores, f, "datastores", false),
            exclude: self.patterns(&r.exclude, f, "exclude", false),
        };
        let empty = |v: &Option<Sp<Vec<Sp<String>>>>| v.as_ref().is_none_or(|l| l.get().is_empty());
        if empty(&r.vms) && empty(&r.tags) && empty(&r.folders) {
            self.err(
                "selects-nothing",
                f,
                e.name_span.clone(),
                format!("policy `{name}` selects no VM"),
                "add `vms = [\"*\"]`, `tags = [\"backup:gold\"]` or `folders = [\"/Prod/**\"]`"
                    .into(),
            );
        }

        // Tiers and retention.
        self.reference(&r.backup_to, "tier", &merged.tiers, f);
        let mut retain = BTreeMap::new();
        for (tier, rules) in r.retain.get() {
            // The key's own span is not kept by serde for map keys; the
            // rules' span points into the `[policies.X.retain.TIER]` table.
            if !merged.tiers.contains_key(tier) {
                if merged.broken.contains(tier) {
                    continue;
                }
                let hint = names_hint(tier, "tier", &merged.tiers);
                self.err(
                    "unknown-reference",
                    f,
                    rules.span(),
                    format!("retention for unknown tier `{tier}`"),
                    hint,
                );
                continue;
            }
            if let Some(rt) = self.retention(rules, f, tier) {
                retain.insert(tier.clone(), rt);
            }
        }
        if !r.retain.get().contains_key(r.backup_to.get())
            && merged.tiers.contains_key(r.backup_to.get())
        {
            self.err(
                "missing-retention",
                f,
                r.backup_to.span(),
                format!(
                    "backups go to `{}` but the policy has no retention for it",
                    r.backup_to.get()
                ),
                format!(
                    "add `[policies.{name}.retain.{}]` with e.g. `daily = 14`",
                    r.backup_to.get()
                ),
            );
        }

        if merged
            .tiers
            .get(r.backup_to.get())
            .is_some_and(|t| *t.value.backend.get() == super::raw::BackendKind::Tape)
        {
            self.err(
                "tape-backup",
                f,
                r.backup_to.span(),
                format!(
                    "`{}` is a tape tier: tape receives copies of points, never backups straight from hosts",
                    r.backup_to.get()
                ),
                format!(
                    "back up to a disk or object tier and keep `[policies.{name}.retain.{}]`: the plan copies the kept points to tape",
                    r.backup_to.get()
                ),
            );
        }
        let full_every = self.duration(&r.full_every, f, "full_every");
        let io_limit = self.rate(&r.io_limit, f, "io_limit");
        let max_snapshot_lifetime =
            self.duration(&r.max_snapshot_lifetime, f, "max_snapshot_lifetime");
        let drills: Vec<Drill> = r
            .drills
            .iter()
            .filter_map(|d| self.drill(name, d, r, merged, f))
            .collect();

        let consistency = match r.consistency.as_ref().map(|c| *c.get()) {
            Some(ConsistencyText::Application) => Consistency::Application,
            Some(ConsistencyText::ApplicationPreferred) => Consistency::ApplicationPreferred,
            Some(ConsistencyText::Filesystem) => Consistency::Filesystem,
            Some(ConsistencyText::Crash) | None => Consistency::Crash,
        };
        let policy = Policy {
            name: name.to_string(),
            description: r.description.as_ref().map(|d| d.get().clone()),
            selector,
            schedule: schedule?,
            rpo,
            consistency,
            full_every,
            io_limit,
            max_snapshot_lifetime,
            window,
            chunk_size,
            backup_to: r.backup_to.get().clone(),
            retain,
            drills,
        };
        (count_errors(self.diags) == before).then_some(policy)
    }

    fn retention(&mut self, rules: &Sp<RawRetain>, f: &Path, tier: &str) -> Option<Retention> {
        let r = rules.get();
        let count = |v: &Option<Sp<u32>>| v.as_ref().map(|v| *v.get());
        let rt = Retention {
            last: count(&r.last),
            hourly: count(&r.hourly),
            daily: count(&r.daily),
            weekly: count(&r.weekly),
            monthly: count(&r.monthly),
            yearly: count(&r.yearly),
            within: self.duration(&r.within, f, "within"),
        };
        let keeps = [
            rt.last, rt.hourly, rt.daily, rt.weekly, rt.monthly, rt.yearly,
        ]
        .iter()
        .any(|c| c.is_some_and(|n| n > 0))
            || rt.within.is_some();
        if !keeps && r.within.is_none() {
            self.err("retention-keeps-nothing", f, rules.span(), format!("retention for tier `{tier}` keeps nothing"),
                "give at least one of `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly` (> 0) or `within`".into());
            return None;
        }
        keeps.then_some(rt)
    }

    /// A boot drill's `method` and, for an instant one, its `listen`.
    fn drill_method(&mut self, r: &RawDrill, f: &Path, merged: &Merged) -> DrillMethod {
        let instant = r
            .method
            .as_ref()
            .is_some_and(|m| *m.get() == DrillMethodText::Instant);
        if !instant {
            if let Some(l) = &r.listen {
                self.err(
                    "not-applicable",
                    f,
                    l.span(),
                    "`listen` applies to instant boot drills only".into(),
                    "remove the key or set `method = \"instant\"`".into(),
                );
            }
            return DrillMethod::Restore;
        }
        let listen = match &r.listen {
            Some(l) => match l.get().trim().parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.err(
                        "bad-value",
                        f,
                        l.span(),
                        format!("`listen` is not an IP address: `{}`", l.get()),
                        "give this machine's address that the drill host reaches, e.g. \"10.0.0.5\"".into(),
                    );
                    None
                }
            },
            None => {
                let on_lab = r
                    .host
                    .as_ref()
                    .and_then(|h| merged.sources.get(h.get()))
                    .is_some_and(|s| *s.value.kind.get() == SourceKind::Lab);
                if !on_lab && let Some(m) = &r.method {
                    self.err(
                        "missing-key",
                        f,
                        m.span(),
                        "an instant boot drill needs `listen`: the address the drill host reaches for NFS".into(),
                        "add `listen = \"10.0.0.5\"` (this machine's address; ports 111 and 2049)".into(),
                    );
                }
                None
            }
        };
        DrillMethod::Instant { listen }
    }

    fn drill(
        &mut self,
        policy: &str,
        d: &Sp<RawDrill>,
        p: &RawPolicy,
        merged: &Merged,
        f: &Path,
    ) -> Option<Drill> {
        let r = d.get();
        let before = count_errors(self.diags);
        let kind = match r.kind.get() {
            DrillKindText::Verify => DrillKind::Verify,
            DrillKindText::Restore => DrillKind::Restore,
            DrillKindText::Boot => DrillKind::Boot,
        };
        let kind_name = format!("{:?}", kind).to_lowercase();
        let name = r
            .name
            .as_ref()
            .map_or_else(|| format!("{policy}-{kind_name}"), |n| n.get().clone());
        if let Some(n) = &r.name
            && !valid_name(n.get())
        {
            self.err(
                "invalid-name",
                f,
                n.span(),
                format!("`{}` is not a valid drill name", n.get()),
                "names start with a letter or digit and use letters, digits, `.`, `_`, `-`".into(),
            );
        }
        let tier = match &r.tier {
            Some(t) => {
                if self.reference(t, "tier", &merged.tiers, f)
                    && !p.retain.get().contains_key(t.get())
                {
                    self.err(
                        "unknown-reference",
                        f,
                        t.span(),
                        format!("policy `{policy}` keeps no points on tier `{}`", t.get()),
                        format!(
                            "drill a tier the policy retains: {}",
                            one_of(
                                &p.retain
                                    .get()
                                    .keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                            )
                        ),
                    );
                }
                t.get().clone()
            }
            None => p.backup_to.get().clone(),
        };
        let only_for = |key: &str, kinds: &str| format!("`{key}` applies to {kinds} drills only");
        if kind != DrillKind::Boot {
            for (key, span) in [
                ("host", r.host.as_ref().map(Sp::span)),
                ("esx_host", r.esx_host.as_ref().map(Sp::span)),
                ("folder", r.folder.as_ref().map(Sp::span)),
                ("resource_pool", r.resource_pool.as_ref().map(Sp::span)),
                ("datastore", r.datastore.as_ref().map(Sp::span)),
                ("network", r.network.as_ref().map(Sp::span)),
                ("method", r.method.as_ref().map(Sp::span)),
                ("listen", r.listen.as_ref().map(Sp::span)),
                ("guest_user", r.guest_user.as_ref().map(Sp::span)),
                ("guest_password", r.guest_password.as_ref().map(Sp::span)),
            ]
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            {
                self.err(
                    "not-applicable",
                    f,
                    span,
                    only_for(key, "boot"),
                    "remove the key or set `kind = \"boot\"`".into(),
                );
            }
            if let Some(c) = r.checks.first() {
                self.err(
                    "not-applicable",
                    f,
                    c.span(),
                    only_for("checks", "boot"),
                    "remove the checks or set `kind = \"boot\"`".into(),
                );
            }
        }
        if kind != DrillKind::Restore
            && let Some(fsck) = &r.fsck
        {
            self.err(
                "not-applicable",
                f,
                fsck.span(),
                only_for("fsck", "restore"),
                "remove the key or set `kind = \"restore\"`".into(),
            );
        }
        if kind == DrillKind::Boot {
            match &r.host {
                Some(h) => {
                    self.reference(h, "source", &merged.sources, f);
                }
                None => self.err(
                    "missing-key",
                    f,
                    d.span(),
                    "a boot drill needs a `host` to boot on".into(),
                    "add `host = \"SOURCE\"`: the ESXi host or lab that runs drills".into(),
                ),
            }
        }
        if let Some(n) = &r.network
            && n.get().chars().any(|c| c == '"' || c.is_control())
        {
            // It is written into the drill VM's .vmx (`networkName`).
            self.err(
                "bad-value",
                f,
                n.span(),
                "`network` holds a quote or a control character".into(),
                "write the port group's name as the vSphere Client shows it, or \"isolated\""
                    .into(),
            );
        }
        let method = self.drill_method(r, f, merged);
        let checks: Vec<Check> = r.checks.iter().filter_map(|c| self.check(c, f)).collect();
        let guest_user = self.text(&r.guest_user, f, "guest_user");
        let guest_password = self.secret(&r.guest_password, f, "guest_password");
        if checks.iter().any(|c| matches!(c, Check::Guest { .. }))
            && (r.guest_user.is_none() || r.guest_password.is_none())
        {
            self.err(
                "missing-key",
                f,
                d.span(),
                "a `guest` check runs inside the guest and needs `guest_user` and `guest_password`".into(),
                "add `guest_user = \"root\"` and `guest_password = { env = \"COFFER_GUEST_PASSWORD\" }`".into(),
            );
        }
        let every = self.duration(&Some(r.every.clone()), f, "every");
        let timeout = self
            .duration(&r.timeout, f, "timeout")
            .unwrap_or(Duration::from_secs(3600));
        let drill = Drill {
            name,
            kind,
            method,
            every: every?,
            tier,
            host: r.host.as_ref().map(|h| h.get().clone()),
            esx_host: self.text(&r.esx_host, f, "esx_host"),
            folder: self.text(&r.folder, f, "folder"),
            resource_pool: self.text(&r.resource_pool, f, "resource_pool"),
            datastore: self.text(&r.datastore, f, "datastore"),
            network: self.text(&r.network, f, "network"),
            fsck: r.fsck.as_ref().map(|c| c.get().clone()),
            timeout,
            checks,
            guest_user,
            guest_password,
        };
        (count_errors(self.diags) == before).then_some(drill)
    }

    fn check(&mut self, c: &Sp<RawCheck>, f: &Path) -> Option<Check> {
        let r = c.get();
        let timeout = self
            .duration(&r.timeout, f, "timeout")
            .unwrap_or(Duration::from_secs(300));
        match (&r.tcp, &r.heartbeat, &r.script, &r.guest) {
            (Some(p), None, None, None) if *p.get() > 0 => Some(Check::Tcp {
                port: *p.get(),
                timeout,
            }),
            (None, Some(h), None, None) if *h.get() => Some(Check::Heartbeat { timeout }),
            (None, None, Some(s), None) if !s.get().trim().is_empty() => Some(Check::Script {
                path: s.get().clone(),
                timeout,
            }),
            (None, None, None, Some(g)) if !g.get().trim().is_empty() => Some(Check::Guest {
                command: g.get().clone(),
                timeout,
            }),
            _ => {
                self.err("bad-check", f, c.span(), "a check needs exactly one of `tcp`, `heartbeat`, `script`, `guest`".into(),
                    "e.g. `{ tcp = 443 }`, `{ heartbeat = true }`, `{ script = \"/etc/coffer/checks/web.sh\" }` or `{ guest = \"systemctl is-active postgresql\" }`".into());
                None
            }
        }
    }
}
