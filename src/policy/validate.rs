//! From merged raw files to the resolved `Config`: every value parsed, every
//! reference checked, every rule that needs the whole directory applied (a
//! drill name used twice, a VM claimed by two policies). All problems are
//! collected; a `Config` comes back only when there is no error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use globset::GlobBuilder;

use super::diag::{Diagnostic, nearest, one_of};
use super::load::{Entry, Merged};
use super::model::*;
use super::raw::*;
use super::schedule::{Schedule, ScheduleError};
use super::units;

/// Chunk sizes the repository supports: powers of two in this range.
pub const MIN_CHUNK: u64 = 64 << 10;
pub const MAX_CHUNK: u64 = 4 << 20;
/// Default chunk size (see docs/benchmarks.md for the measurement behind it).
pub const DEFAULT_CHUNK: u64 = 256 << 10;

/// Resolves and checks a merged policy directory.
pub fn resolve(dir: &Path, merged: &Merged, diags: &mut Vec<Diagnostic>) -> Option<Config> {
    let errors_before = count_errors(diags);
    let mut r = Resolver {
        diags,
        broken: merged.broken.clone(),
    };
    let settings = r.settings(dir, merged.settings.as_ref());
    let sources: BTreeMap<String, Source> = merged
        .sources
        .iter()
        .filter_map(|(name, e)| r.source(dir, name, e).map(|s| (name.clone(), s)))
        .collect();
    let tiers: BTreeMap<String, Tier> = merged
        .tiers
        .iter()
        .filter_map(|(name, e)| r.tier(dir, name, e).map(|t| (name.clone(), t)))
        .collect();
    r.distinct_tier_storage(dir, &settings, merged, &tiers);
    let compliance = r.compliance(merged.compliance.as_ref());
    let policies: BTreeMap<String, Policy> = merged
        .policies
        .iter()
        .filter_map(|(name, e)| {
            r.policy(name, e, merged, settings.timezone)
                .map(|p| (name.clone(), p))
        })
        .collect();
    let notify: BTreeMap<String, Notifier> = merged
        .notify
        .iter()
        .filter_map(|(name, e)| {
            r.notifier(dir, name, e, settings.timezone)
                .map(|n| (name.clone(), n))
        })
        .collect();
    r.settings_paths(merged.settings.as_ref(), &settings, &tiers);
    for e in merged.notify.values() {
        r.smtp_server(e);
    }
    r.unique_drill_names(merged);
    r.overlapping_selections(merged, &policies);
    if count_errors(r.diags) == 0 {
        // With errors, a policy that failed to load may be the user.
        r.unused_tiers(merged);
    }

    (count_errors(r.diags) == errors_before).then(|| Config {
        dir: dir.to_path_buf(),
        settings,
        sources,
        tiers,
        policies,
        compliance,
        notify,
    })
}

/// The hint for a name that is not defined: the nearest defined name, then
/// all of them.
pub(super) fn names_hint<T>(name: &str, kind: &str, existing: &BTreeMap<String, T>) -> String {
    let names: Vec<&str> = existing.keys().map(String::as_str).collect();
    match nearest(name, names.iter().copied()) {
        Some(n) => format!("did you mean `{n}`? defined {kind}s: {}", one_of(&names)),
        None => format!("defined {kind}s: {}", one_of(&names)),
    }
}

pub(super) fn count_errors(diags: &[Diagnostic]) -> usize {
    diags
        .iter()
        .filter(|d| d.severity == super::diag::Severity::Error)
        .count()
}

pub(super) struct Resolver<'d> {
    pub(super) diags: &'d mut Vec<Diagnostic>,
    /// Names defined in some file whose definition failed to load.
    pub(super) broken: std::collections::BTreeSet<String>,
}

impl Resolver<'_> {
    pub(super) fn err(
        &mut self,
        code: &'static str,
        file: &Path,
        span: std::ops::Range<usize>,
        msg: String,
        hint: String,
    ) {
        self.diags
            .push(Diagnostic::error(code, msg).at(file, span).hint(hint));
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<Sp<DurationText>>,
        file: &Path,
        key: &str,
    ) -> Option<Duration> {
        let v = v.as_ref()?;
        match units::parse_duration(&v.get().0) {
            Ok(d) if d.is_zero() => {
                self.err(
                    "bad-duration",
                    file,
                    v.span(),
                    format!("`{key}` must be longer than zero"),
                    units::DURATION_FORMS.into(),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    "bad-duration",
                    file,
                    v.span(),
                    format!("`{key}`: {e}"),
                    units::DURATION_FORMS.into(),
                );
                None
            }
        }
    }

    pub(super) fn rate(
        &mut self,
        v: &Option<Sp<RateText>>,
        file: &Path,
        key: &str,
    ) -> Option<units::Rate> {
        let v = v.as_ref()?;
        units::parse_rate(&v.get().0)
            .map_err(|e| {
                self.err(
                    "bad-rate",
                    file,
                    v.span(),
                    format!("`{key}`: {e}"),
                    units::RATE_FORMS.into(),
                )
            })
            .ok()
    }

    pub(super) fn timezone(&mut self, v: &Sp<TimeZoneText>, file: &Path) -> Option<Tz> {
        let text = &v.get().0;
        match text.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                let exact_case = chrono_tz::TZ_VARIANTS
                    .iter()
                    .map(|t| t.name())
                    .find(|n| n.eq_ignore_ascii_case(text));
                let abbreviation =
                    (2..=5).contains(&text.len()) && text.chars().all(|c| c.is_ascii_uppercase());
                let hint = match nearest(text, names) {
                    _ if exact_case.is_some() => format!("did you mean `{}`? time zone names are case-sensitive", exact_case.unwrap_or_default()),
                    _ if abbreviation => format!("`{text}` is an abbreviation, not a time zone; use a location such as `Europe/Berlin`, which also knows when DST applies"),
                    Some(n) => format!("did you mean `{n}`? time zones are IANA names"),
                    None => "time zones are IANA names such as `Europe/Berlin`, `America/New_York` or `UTC`".into(),
                };
                self.err(
                    "bad-timezone",
                    file,
                    v.span(),
                    format!("unknown time zone `{text}`"),
                    hint,
                );
                None
            }
        }
    }

    pub(super) fn schedule(&mut self, v: &Sp<CronText>, tz: Tz, file: &Path) -> Option<Schedule> {
        match Schedule::parse(&v.get().0, tz) {
            Ok(s) => Some(s),
            Err(ScheduleError::NeverFires) => {
                self.err("schedule-never-fires", file, v.span(), format!("schedule `{}` never fires", v.get().0),
                    "the fields name a date that does not exist (e.g. 30 February); check day of month and month".into());
                None
            }
            Err(ScheduleError::Invalid(e)) => {
                self.err("bad-cron", file, v.span(), format!("`{}` is not a cron expression: {e}", v.get().0),
                    "5 fields `min hour day month weekday` or 6 with seconds first, e.g. `0 30 2 * * *`; or `@daily`".into());
                None
            }
        }
    }

    pub(super) fn secret(
        &mut self,
        v: &Option<Sp<SecretValue>>,
        file: &Path,
        key: &str,
    ) -> Option<SecretRef> {
        let v = v.as_ref()?;
        let example_env = format!("COFFER_{}", key.to_uppercase());
        let forms = format!(
            "write `{key} = {{ env = \"{example_env}\" }}` or `{key} = {{ file = \"/etc/coffer/{key}\" }}`"
        );
        match &v.get().0 {
            toml::Value::String(_) => {
                self.err("literal-secret", file, v.span(),
                    format!("`{key}` is a literal secret; policy files are kept in git and must not hold secrets"), forms);
                None
            }
            toml::Value::Table(t) if t.len() == 1 => {
                let (k, val) = t.iter().next().expect("one entry");
                match (k.as_str(), val.as_str()) {
                    ("env", Some(name)) if !name.is_empty() && !name.contains(['=', '\0']) => {
                        Some(SecretRef::Env(name.to_string()))
                    }
                    ("file", Some(path)) if !path.is_empty() => {
                        Some(SecretRef::File(PathBuf::from(path)))
                    }
                    _ => {
                        self.err(
                            "bad-secret",
                            file,
                            v.span(),
                            format!("`{key}` is not a secret reference"),
                            forms,
                        );
                        None
                    }
                }
            }
            _ => {
                self.err(
                    "bad-secret",
                    file,
                    v.span(),
                    format!("`{key}` is not a secret reference"),
                    forms,
                );
                None
            }
        }
    }

    /// A free-text value that must not be blank.
    pub(super) fn text(
        &mut self,
        v: &Option<Sp<String>>,
        file: &Path,
        key: &str,
    ) -> Option<String> {
        let v = v.as_ref()?;
        if v.get().trim().is_empty() {
            self.err(
                "bad-value",
                file,
                v.span(),
                format!("`{key}` is empty"),
                "give a value or remove the key".into(),
            );
            return None;
        }
        Some(v.get().clone())
    }

    /// A size key within `range`, or its default (with an error naming
    /// the key and the range when it is outside or malformed).
    pub(super) fn size_within(
        &mut self,
        v: &Option<Sp<super::raw::SizeText>>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        file: &Path,
        key: &str,
    ) -> u64 {
        let Some(text) = v else { return default };
        match super::units::parse_size(&text.get().0) {
            Ok(s) if range.contains(&s.0) => s.0,
            Ok(_) => {
                let fmt = super::units::format_size;
                self.err(
                    "bad-value",
                    file,
                    text.span(),
                    format!("`{key}` = \"{}\" is out of range", text.get().0),
                    format!("from {} to {}", fmt(*range.start()), fmt(*range.end())),
                );
                default
            }
            Err(err) => {
                self.err(
                    "bad-size",
                    file,
                    text.span(),
                    format!("`{key}`: {err}"),
                    super::units::SIZE_FORMS.into(),
                );
                default
            }
        }
    }

    pub(super) fn positive(
        &mut self,
        v: &Option<Sp<u32>>,
        default: u32,
        file: &Path,
        key: &str,
    ) -> u32 {
        match v {
            Some(n) if *n.get() == 0 => {
                self.err(
                    "bad-value",
                    file,
                    n.span(),
                    format!("`{key}` must be at least 1"),
                    "remove the key to use the default".into(),
                );
                default
            }
            Some(n) => *n.get(),
            None => default,
        }
    }

    pub(super) fn reference<T>(
        &mut self,
        name: &Sp<String>,
        kind: &str,
        existing: &BTreeMap<String, T>,
        file: &Path,
    ) -> bool {
        if existing.contains_key(name.get()) {
            return true;
        }
        // Defined, but broken: its own error says why; a second one here
        // would only claim it does not exist.
        if self.broken.contains(name.get()) {
            return false;
        }
        let hint = names_hint(name.get(), kind, existing);
        self.err(
            "unknown-reference",
            file,
            name.span(),
            format!("no {kind} named `{}`", name.get()),
            hint,
        );
        false
    }

    pub(super) fn patterns(
        &mut self,
        v: &Option<Sp<Vec<Sp<String>>>>,
        file: &Path,
        key: &str,
        literal_separator: bool,
    ) -> Vec<Pattern> {
        let Some(list) = v else { return Vec::new() };
        let mut out = Vec::new();
        for p in list.get() {
            if p.get().trim().is_empty() {
                self.err(
                    "bad-glob",
                    file,
                    p.span(),
                    format!("empty pattern in `{key}`"),
                    "remove it or write a name or glob such as `db-*`".into(),
                );
                continue;
            }
            match GlobBuilder::new(p.get())
                .literal_separator(literal_separator)
                .build()
            {
                Ok(g) => out.push(Pattern {
                    text: p.get().clone(),
                    matcher: g.compile_matcher(),
                }),
                Err(e) => self.err(
                    "bad-glob",
                    file,
                    p.span(),
                    format!("`{}` is not a valid glob: {}", p.get(), e.kind()),
                    "globs use `*`, `?`, `[abc]` and `{a,b}`; `**` crosses folders".into(),
                ),
            }
        }
        out
    }

    fn settings(&mut self, dir: &Path, e: Option<&Entry<RawSettings>>) -> Settings {
        let raw = e.map(|e| e.value.clone()).unwrap_or_default();
        let file = e.map(|e| e.file.clone()).unwrap_or_default();
        let state_dir = dir.join(
            raw.state_dir
                .as_ref()
                .map_or(".coffer", |s| s.get().as_str()),
        );
        let timezone = raw
            .timezone
            .as_ref()
            .and_then(|tz| self.timezone(tz, &file))
            .unwrap_or(chrono_tz::UTC);
        let catalog_password = self.secret(&raw.catalog_password, &file, "catalog_password");
        Settings {
            catalog: match raw.catalog.as_ref() {
                None => CatalogLocation::File(state_dir.join("catalog.db")),
                Some(c) if is_postgres_url(c.get()) => {
                    self.postgres_catalog(c, catalog_password, &file)
                }
                Some(c) => CatalogLocation::File(dir.join(c.get())),
            },
            report_dir: raw
                .report_dir
                .as_ref()
                .map_or_else(|| state_dir.join("reports"), |c| dir.join(c.get())),
            state_dir,
            timezone,
            name: raw
                .name
                .as_ref()
                .map(|n| n.get().trim().to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(super::model::host_name),
            healthcheck_url: raw.healthcheck_url.as_ref().and_then(|u| {
                let text = u.get().trim_end_matches('/');
                let scheme = ["https://", "http://"]
                    .iter()
                    .find_map(|s| text.strip_prefix(s));
                if scheme.is_some_and(|rest| !rest.is_empty()) {
                    return Some(text.to_string());
                }
                self.err(
                    "bad-url",
                    &file,
                    u.span(),
                    format!("`healthcheck_url = \"{}\"` is not an http(s) URL", u.get()),
                    "write the check's ping URL, e.g. `https://hc-ping.com/<uuid>`".into(),
                );
                None
            }),
        }
    }

    fn source(&mut self, dir: &Path, name: &str, e: &Entry<RawSource>) -> Option<Source> {
        let (f, r) = (e.file.as_path(), &e.value);
        let kind = *r.kind.get();
        let before = count_errors(self.diags);
        let remote = kind != SourceKind::Lab;
        if remote {
            match &r.url {
                None => self.err("missing-key", f, e.name_span.clone(), format!("source `{name}` has no `url`"),
                    "add `url = \"https://esxi01.example.com\"`".into()),
                Some(u) if u.get().starts_with("http://") => self.err("insecure-url", f, u.span(),
                    "plain http would send the vSphere credentials in clear".into(),
                    "use https; for a self-signed host pin its certificate with `thumbprint = \"sha256:…\"`".into()),
                Some(u) if !u.get().starts_with("https://") || u.get().len() <= "https://".len() => self.err("bad-url", f, u.span(),
                    format!("`{}` is not an https URL", u.get()), "write `https://HOST` or `https://HOST:PORT`".into()),
                Some(_) => {}
            }
            if r.user.is_none() {
                self.err("missing-key", f, e.name_span.clone(), format!("source `{name}` has no `user`"),
                    "add `user = \"backup@vsphere.local\"` (a role with snapshot and datastore-browse privileges)".into());
            }
            if r.password.is_none() {
                self.err("missing-key", f, e.name_span.clone(), format!("source `{name}` has no `password`"),
                    "add `password = { env = \"COFFER_PASSWORD\" }` or `{ file = \"/etc/coffer/esxi.pass\" }`".into());
            }
        } else {
            for (key, span) in [
                ("url", r.url.as_ref().map(Sp::span)),
                ("user", r.user.as_ref().map(Sp::span)),
                ("password", r.password.as_ref().map(Sp::span)),
                ("thumbprint", r.thumbprint.as_ref().map(Sp::span)),
                ("ca_file", r.ca_file.as_ref().map(Sp::span)),
            ] {
                if let Some(span) = span {
                    self.err(
                        "not-applicable",
                        f,
                        span,
                        format!("the lab takes no `{key}`"),
                        "the lab runs in-process on loopback; remove the key".into(),
                    );
                }
            }
        }
        if !remote || r.lab_vms.is_none() {
        } else if let Some(n) = &r.lab_vms {
            self.err(
                "not-applicable",
                f,
                n.span(),
                "`lab_vms` applies to `kind = \"lab\"` only".into(),
                "remove the key".into(),
            );
        }
        if let Some(m) = r.lab_mode.as_ref().filter(|_| remote) {
            self.err(
                "not-applicable",
                f,
                m.span(),
                "`lab_mode` applies to `kind = \"lab\"` only".into(),
                "remove the key".into(),
            );
        }
        let password = self.secret(&r.password, f, "password");
        let tls = match (&r.thumbprint, &r.ca_file) {
            (Some(t), Some(c)) => {
                self.err(
                    "conflict",
                    f,
                    c.span(),
                    "give either `thumbprint` or `ca_file`, not both".into(),
                    "a pinned thumbprint already names the one certificate to trust".into(),
                );
                let _ = t;
                TlsTrust::SystemRoots
            }
            (Some(t), None) => match parse_thumbprint(t.get()) {
                Ok(d) => TlsTrust::Thumbprint(d),
                Err(h) => {
                    self.err(
                        "bad-thumbprint",
                        f,
                        t.span(),
                        format!("`{}` is not a SHA-256 thumbprint", t.get()),
                        h,
                    );
                    TlsTrust::SystemRoots
                }
            },
            // Relative to the policy directory, like every path in it.
            (None, Some(c)) => TlsTrust::CaFile(dir.join(c.get())),
            (None, None) => TlsTrust::SystemRoots,
        };
        let source = Source {
            name: name.to_string(),
            kind,
            url: r
                .url
                .as_ref()
                .map(|u| u.get().trim_end_matches('/').to_string()),
            user: self.text(&r.user, f, "user"),
            password,
            tls,
            site: self.text(&r.site, f, "site"),
            datacenter: self.text(&r.datacenter, f, "datacenter"),
            max_per_host: self.positive(&r.max_per_host, 2, f, "max_per_host"),
            max_per_datastore: self.positive(&r.max_per_datastore, 4, f, "max_per_datastore"),
            lab_vms: self.positive(&r.lab_vms, 3, f, "lab_vms"),
            lab_mode: r.lab_mode.as_ref().map(|m| *m.get()).unwrap_or_default(),
            max_requests: self.positive(&r.max_requests, 4, f, "max_requests"),
            read_request: self.size_within(
                &r.read_request,
                16 << 20,
                (256 << 10)..=(64 << 20),
                f,
                "read_request",
            ),
            read_gap: self.size_within(&r.read_gap, 64 << 10, 0..=(4 << 20), f, "read_gap"),
        };
        (count_errors(self.diags) == before).then_some(source)
    }

    fn tier(&mut self, dir: &Path, name: &str, e: &Entry<RawTier>) -> Option<Tier> {
        let (f, r) = (e.file.as_path(), &e.value);
        let before = count_errors(self.diags);
        let backend_kind = *r.backend.get();
        let kind_name = match backend_kind {
            BackendKind::Local => "a local",
            BackendKind::S3 => "an s3",
            BackendKind::Azure => "an azure",
            BackendKind::Tape => "a tape",
        };
        let misplaced = |key: &str| format!("`{key}` does not apply to {kind_name} tier");
        // Each object-storage key, where it is, and the backends that take
        // it (the first is named in the hint).
        use BackendKind::{Azure, S3};
        type Span = Option<std::ops::Range<usize>>;
        let keys: [(&str, Span, &[BackendKind]); 10] = [
            (
                "storage_class",
                r.storage_class.as_ref().map(Sp::span),
                &[S3, Azure],
            ),
            ("bucket", r.bucket.as_ref().map(Sp::span), &[S3]),
            ("region", r.region.as_ref().map(Sp::span), &[S3]),
            ("account", r.account.as_ref().map(Sp::span), &[Azure]),
            ("container", r.container.as_ref().map(Sp::span), &[Azure]),
            ("prefix", r.prefix.as_ref().map(Sp::span), &[S3, Azure]),
            ("endpoint", r.endpoint.as_ref().map(Sp::span), &[S3, Azure]),
            (
                "access_key",
                r.access_key.as_ref().map(Sp::span),
                &[S3, Azure],
            ),
            ("secret_key", r.secret_key.as_ref().map(Sp::span), &[S3]),
            ("sas", r.sas.as_ref().map(Sp::span), &[Azure]),
        ];
        for (key, span, takers) in keys {
            if let Some(span) = span.filter(|_| !takers.contains(&backend_kind)) {
                let owner = if takers[0] == S3 { "s3" } else { "azure" };
                self.err(
                    "not-applicable",
                    f,
                    span,
                    misplaced(key),
                    format!("remove the key, or set `backend = \"{owner}\"`"),
                );
            }
        }
        let tape_keys: [(&str, Span); 6] = [
            ("device", r.device.as_ref().map(Sp::span)),
            ("changer", r.changer.as_ref().map(Sp::span)),
            ("changer_drive", r.changer_drive.as_ref().map(Sp::span)),
            ("library", r.library.as_ref().map(Sp::span)),
            ("pool", r.pool.as_ref().map(Sp::span)),
            ("catalog", r.catalog.as_ref().map(Sp::span)),
        ];
        if backend_kind != BackendKind::Tape {
            for (key, span) in tape_keys {
                if let Some(span) = span {
                    self.err(
                        "not-applicable",
                        f,
                        span,
                        misplaced(key),
                        "remove the key, or set `backend = \"tape\"`".into(),
                    );
                }
            }
        }
        if let Some(ep) = &r.endpoint
            && matches!(backend_kind, S3 | Azure)
            && !(ep.get().starts_with("https://") || ep.get().starts_with("http://"))
        {
            let hint = if backend_kind == BackendKind::S3 {
                "write `https://s3.example.com` (or `http://127.0.0.1:9000` for a server on this host)"
            } else {
                "write `https://ACCOUNT.blob.core.windows.net` (or `http://127.0.0.1:10000/devstoreaccount1` for Azurite)"
            };
            self.err(
                "bad-url",
                f,
                ep.span(),
                format!("`{}` is not an endpoint URL", ep.get()),
                hint.into(),
            );
        }
        let prefix = || {
            r.prefix
                .as_ref()
                .map(|p| p.get().trim_matches('/').to_string())
                .unwrap_or_default()
        };
        if let Some(v) = r
            .immutable_for
            .as_ref()
            .filter(|_| matches!(backend_kind, BackendKind::Local | BackendKind::Tape))
        {
            self.err(
                "not-applicable",
                f,
                v.span(),
                "`immutable_for` needs object storage with Object Lock or immutability policies".into(),
                if backend_kind == BackendKind::Tape {
                    "set it on an s3 or azure tier; a tape tier's media are kept by its retention, and `offline = true` counts media that leave the library".into()
                } else {
                    "set it on an s3 or azure tier; a local directory cannot refuse deletes".into()
                },
            );
        }
        let backend = match backend_kind {
            BackendKind::Local => match &r.path {
                Some(p) if !p.get().is_empty() => Some(TierBackend::Local {
                    path: dir.join(p.get()),
                }),
                _ => {
                    self.err(
                        "missing-key",
                        f,
                        e.name_span.clone(),
                        format!("local tier `{name}` has no `path`"),
                        "add `path = \"/srv/coffer/fast\"`".into(),
                    );
                    None
                }
            },
            BackendKind::S3 => {
                if let Some(p) = &r.path {
                    self.err(
                        "not-applicable",
                        f,
                        p.span(),
                        misplaced("path"),
                        "an s3 tier uses `bucket` and `prefix`".into(),
                    );
                }
                match &r.bucket {
                    Some(b) if valid_bucket(b.get()) => Some(TierBackend::S3 {
                        bucket: b.get().clone(),
                        prefix: prefix(),
                        endpoint: r.endpoint.as_ref().map(|e| e.get().clone()),
                        region: r
                            .region
                            .as_ref()
                            .map_or_else(|| "us-east-1".into(), |r| r.get().clone()),
                        access_key: self.secret(&r.access_key, f, "access_key"),
                        secret_key: self.secret(&r.secret_key, f, "secret_key"),
                        storage_class: self.storage_class(
                            &r.storage_class,
                            S3_CLASSES,
                            "an S3 storage class",
                            f,
                        ),
                    }),
                    Some(b) => {
                        self.err(
                            "bad-value",
                            f,
                            b.span(),
                            format!("`{}` is not a valid bucket name", b.get()),
                            "3 to 63 characters: lower-case letters, digits, `.` and `-`".into(),
                        );
                        None
                    }
                    None => {
                        self.err(
                            "missing-key",
                            f,
                            e.name_span.clone(),
                            format!("s3 tier `{name}` has no `bucket`"),
                            "add `bucket = \"coffer-offsite\"`".into(),
                        );
                        None
                    }
                }
            }
            BackendKind::Azure => {
                if let Some(p) = &r.path {
                    self.err(
                        "not-applicable",
                        f,
                        p.span(),
                        misplaced("path"),
                        "an azure tier uses `account`, `container` and `prefix`".into(),
                    );
                }
                if let (Some(k), Some(_)) = (&r.access_key, &r.sas) {
                    self.err(
                        "conflict",
                        f,
                        k.span(),
                        "an azure tier takes the account key (`access_key`) or a shared access signature (`sas`), not both".into(),
                        "keep one of them".into(),
                    );
                }
                let account = match &r.account {
                    Some(a) if valid_account(a.get()) => Some(a.get().clone()),
                    Some(a) => {
                        self.err(
                            "bad-value",
                            f,
                            a.span(),
                            format!("`{}` is not a valid storage account name", a.get()),
                            "3 to 24 characters: lower-case letters and digits".into(),
                        );
                        None
                    }
                    None => {
                        self.err(
                            "missing-key",
                            f,
                            e.name_span.clone(),
                            format!("azure tier `{name}` has no `account`"),
                            "add `account = \"contosobackup\"`".into(),
                        );
                        None
                    }
                };
                let container = match &r.container {
                    Some(c) if crate::repo::azure::valid_container(c.get()) => {
                        Some(c.get().clone())
                    }
                    Some(c) => {
                        self.err(
                            "bad-value",
                            f,
                            c.span(),
                            format!("`{}` is not a valid container name", c.get()),
                            "3 to 63 characters: lower-case letters, digits and single `-`, starting and ending with a letter or digit".into(),
                        );
                        None
                    }
                    None => {
                        self.err(
                            "missing-key",
                            f,
                            e.name_span.clone(),
                            format!("azure tier `{name}` has no `container`"),
                            "add `container = \"coffer-offsite\"`".into(),
                        );
                        None
                    }
                };
                match (account, container) {
                    (Some(account), Some(container)) => Some(TierBackend::Azure {
                        account,
                        container,
                        prefix: prefix(),
                        endpoint: r.endpoint.as_ref().map(|e| e.get().clone()),
                        access_key: self.secret(&r.access_key, f, "access_key"),
                        sas: self.secret(&r.sas, f, "sas"),
                        storage_class: self.storage_class(
                            &r.storage_class,
                            AZURE_TIERS,
                            "an Azure access tier",
                            f,
                        ),
                    }),
                    _ => None,
                }
            }
            BackendKind::Tape => {
                if let Some(p) = &r.path {
                    self.err(
                        "not-applicable",
                        f,
                        p.span(),
                        misplaced("path"),
                        "a tape tier uses `device` (and `changer`), or `library` for an emulated one".into(),
                    );
                }
                let changer_drive = r.changer_drive.as_ref().map_or(0, |v| *v.get() as usize);
                let hardware = match (&r.device, &r.library) {
                    (Some(d), None) => {
                        let path = PathBuf::from(d.get());
                        let rewinding = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| n.strip_prefix("st"))
                            .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
                        if rewinding || d.get().is_empty() {
                            self.err(
                                "bad-value",
                                f,
                                d.span(),
                                format!("`{}` is not a non-rewinding tape device", d.get()),
                                "name the st driver's non-rewinding device, e.g. `/dev/nst0`: the rewinding one rewinds on every close, and coffer finds its files by number".into(),
                            );
                        }
                        Some(crate::tape::tier::Hardware::St {
                            device: path,
                            changer: r.changer.as_ref().map(|c| PathBuf::from(c.get())),
                            changer_drive,
                        })
                    }
                    (None, Some(l)) => {
                        if let Some(c) = &r.changer {
                            self.err(
                                "conflict",
                                f,
                                c.span(),
                                "an emulated `library` has its own changer".into(),
                                "remove `changer`, or use `device` for a real drive".into(),
                            );
                        }
                        Some(crate::tape::tier::Hardware::Emulated {
                            library: dir.join(l.get()),
                        })
                    }
                    (Some(d), Some(_)) => {
                        self.err(
                            "conflict",
                            f,
                            d.span(),
                            "a tape tier takes a `device` or an emulated `library`, not both"
                                .into(),
                            "keep one of them".into(),
                        );
                        None
                    }
                    (None, None) => {
                        self.err(
                            "missing-key",
                            f,
                            e.name_span.clone(),
                            format!("tape tier `{name}` has no `device`"),
                            "add `device = \"/dev/nst0\"` (and `changer = \"/dev/sg4\"` for a library), or `library = \"/srv/coffer/vtl\"` for an emulated one".into(),
                        );
                        None
                    }
                };
                let pool = match &r.pool {
                    Some(p)
                        if (1..=24).contains(&p.get().len())
                            && p.get()
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                    {
                        p.get().clone()
                    }
                    Some(p) => {
                        self.err(
                            "bad-value",
                            f,
                            p.span(),
                            format!("`{}` is not a media pool name", p.get()),
                            "1 to 24 letters, digits, `-` and `_`, e.g. `ARCHIVE`".into(),
                        );
                        String::new()
                    }
                    None => name
                        .to_uppercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
                };
                hardware.map(|hardware| TierBackend::Tape {
                    hardware,
                    pool,
                    catalog: r.catalog.as_ref().map(|c| dir.join(c.get())),
                })
            }
        };
        let media = r.media.as_ref().map_or(
            match backend_kind {
                BackendKind::Local => Media::Disk,
                BackendKind::Tape => Media::Tape,
                BackendKind::S3 | BackendKind::Azure => Media::Object,
            },
            |m| *m.get(),
        );
        let tier = Tier {
            name: name.to_string(),
            media,
            site: self.text(&r.site, f, "site"),
            encryption_key: self.secret(&r.encryption_key, f, "encryption_key"),
            immutable_for: self.duration(&r.immutable_for, f, "immutable_for"),
            bandwidth: self.rate(&r.bandwidth, f, "bandwidth"),
            max_parallel: self.positive(&r.max_parallel, 4, f, "max_parallel"),
            pack_size: self.pack_size(&r.pack_size, backend_kind, f),
            repack_waste: self.percent(&r.repack_waste, 25, f, "repack_waste") as f64 / 100.0,
            thaw_speed: r
                .thaw_speed
                .as_ref()
                .map_or(crate::repo::store::ThawSpeed::Standard, |s| *s.get()),
            thaw_days: self.positive(&r.thaw_days, 7, f, "thaw_days"),
            offline: r.offline.as_ref().is_some_and(|o| *o.get()),
            backend: backend?,
        };
        (count_errors(self.diags) == before).then_some(tier)
    }

    fn compliance(&mut self, e: Option<&Entry<RawCompliance>>) -> Compliance {
        let d = Compliance::default();
        let Some(e) = e else { return d };
        let (f, r) = (e.file.as_path(), &e.value);
        let get = |v: &Option<Sp<u32>>, default| v.as_ref().map_or(default, |v| *v.get());
        Compliance {
            copies: self.positive(&r.copies, d.copies, f, "copies"),
            media: self.positive(&r.media, d.media, f, "media"),
            offsite: get(&r.offsite, d.offsite),
            immutable: get(&r.immutable, d.immutable),
            verify_errors: get(&r.verify_errors, d.verify_errors),
            snapshot_max_age: self
                .duration(&r.snapshot_max_age, f, "snapshot_max_age")
                .unwrap_or(d.snapshot_max_age),
            drill_max_age: self
                .duration(&r.drill_max_age, f, "drill_max_age")
                .unwrap_or(d.drill_max_age),
        }
    }

    fn notifier(
        &mut self,
        dir: &Path,
        name: &str,
        e: &Entry<RawNotify>,
        default_tz: Tz,
    ) -> Option<Notifier> {
        let (f, r) = (e.file.as_path(), &e.value);
        let before = count_errors(self.diags);
        let security = r
            .security
            .as_ref()
            .map_or(SmtpSecurity::Starttls, |s| *s.get());
        if security == SmtpSecurity::None
            && let Some(p) = &r.password
        {
            self.err("insecure-auth", f, p.span(), "SMTP authentication without TLS would send the password in clear".into(),
                "use `security = \"starttls\"` (or \"tls\"), or drop the password for an unauthenticated local relay".into());
        }
        for addr in std::iter::once(&r.from).chain(r.to.get().iter()) {
            if !looks_like_address(addr.get()) {
                self.err(
                    "bad-address",
                    f,
                    addr.span(),
                    format!("`{}` is not a mail address", addr.get()),
                    "write `name@example.com` or `Backup Team <backup@example.com>`".into(),
                );
            }
        }
        if r.to.get().is_empty() {
            self.err(
                "missing-key",
                f,
                r.to.span(),
                "`to` names no recipient".into(),
                "add at least one address".into(),
            );
        }
        let tz = r
            .timezone
            .as_ref()
            .map_or(Some(default_tz), |t| self.timezone(t, f));
        let compliance_schedule = match (&r.compliance_schedule, tz) {
            (Some(s), Some(tz)) => self.schedule(s, tz, f),
            _ => None,
        };
        let notifier = Notifier {
            name: name.to_string(),
            smtp_host: r.smtp_host.get().clone(),
            smtp_port: r.smtp_port.as_ref().map_or(
                match security {
                    SmtpSecurity::Starttls => 587,
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::None => 25,
                },
                |p| *p.get(),
            ),
            security,
            user: r.user.as_ref().map(|u| u.get().clone()),
            password: self.secret(&r.password, f, "password"),
            from: r.from.get().clone(),
            to: r.to.get().iter().map(|t| t.get().clone()).collect(),
            send: r
                .send
                .as_ref()
                .map_or(vec![SendWhen::OnFailure, SendWhen::OnBreach], |s| {
                    s.get().iter().map(|w| *w.get()).collect()
                }),
            compliance_schedule,
            ca_file: r.ca_file.as_ref().map(|c| dir.join(c.get())),
        };
        (count_errors(self.diags) == before).then_some(notifier)
    }

    fn unique_drill_names(&mut self, merged: &Merged) {
        let mut seen: BTreeMap<String, (PathBuf, std::ops::Range<usize>)> = BTreeMap::new();
        for (policy, e) in &merged.policies {
            for d in &e.value.drills {
                let r = d.get();
                let kind = format!("{:?}", r.kind.get()).to_lowercase();
                let name = r
                    .name
                    .as_ref()
                    .map_or_else(|| format!("{policy}-{kind}"), |n| n.get().clone());
                let span = r.name.as_ref().map_or(d.span(), Sp::span);
                if let Some((file, first)) = seen.get(&name) {
                    self.diags.push(
                        Diagnostic::error("duplicate", format!("drill `{name}` is defined twice"))
                            .at(&e.file, span)
                            .related(file, first.clone(), "first defined here")
                            .hint("give each drill a unique `name`"),
                    );
                } else {
                    seen.insert(name, (e.file.clone(), span));
                }
            }
        }
    }

    /// Without the inventory, two policies provably claim the same VM when
    /// one names it literally and the other's selection matches that name (on
    /// a common source). Tag and folder overlaps need the inventory and are
    /// reported by `plan`.
    fn overlapping_selections(&mut self, merged: &Merged, policies: &BTreeMap<String, Policy>) {
        let mut reported = std::collections::BTreeSet::new();
        for (a_name, a) in policies {
            for (b_name, b) in policies {
                if a_name == b_name {
                    continue;
                }
                let share_source = match (&a.selector.sources, &b.selector.sources) {
                    (Some(x), Some(y)) => x.iter().any(|s| y.contains(s)),
                    _ => true,
                };
                if !share_source {
                    continue;
                }
                let claims = |sel: &Selector, vm: &str| {
                    sel.vms.iter().any(|p| p.is_match(vm))
                        && !sel.exclude.iter().any(|p| p.is_match(vm))
                        // A datastore filter depends on where the VM lives.
                        && sel.datastores.is_empty()
                };
                for vm in a.selector.vms.iter().filter(|p| p.is_literal()) {
                    let key = (
                        a_name.min(b_name).clone(),
                        a_name.max(b_name).clone(),
                        vm.text.clone(),
                    );
                    if claims(&a.selector, &vm.text)
                        && claims(&b.selector, &vm.text)
                        && reported.insert(key)
                    {
                        let (ea, eb) = (&merged.policies[a_name], &merged.policies[b_name]);
                        let span = vms_span(&ea.value, &vm.text).unwrap_or(ea.name_span.clone());
                        self.diags.push(
                            Diagnostic::error("overlapping-selection", format!("VM `{}` is selected by policies `{a_name}` and `{b_name}`", vm.text))
                                .at(&ea.file, span)
                                .related(&eb.file, eb.name_span.clone(), format!("policy `{b_name}` also matches it"))
                                .hint(format!("a VM belongs to one policy: add `exclude = [\"{}\"]` to `{b_name}`, or remove it here", vm.text)),
                        );
                    }
                }
            }
        }
    }

    fn unused_tiers(&mut self, merged: &Merged) {
        for (name, e) in &merged.tiers {
            let used = merged.policies.values().any(|p| {
                p.value.retain.get().contains_key(name) || p.value.backup_to.get() == name
            });
            if !used {
                self.diags.push(
                    Diagnostic::warning(
                        "unused-tier",
                        format!("tier `{name}` is used by no policy"),
                    )
                    .at(&e.file, e.name_span.clone())
                    .hint("name it in a policy's `retain` to keep copies there, or remove it"),
                );
            }
        }
    }
}

fn vms_span(p: &RawPolicy, name: &str) -> Option<std::ops::Range<usize>> {
    p.vms
        .as_ref()?
        .get()
        .iter()
        .find(|v| v.get() == name)
        .map(Sp::span)
}

pub(crate) fn parse_thumbprint(text: &str) -> Result<[u8; 32], String> {
    let hint = "write `sha256:` and the certificate's SHA-256 fingerprint (64 hex digits, colons allowed); \
        `openssl s_client -connect HOST:443 </dev/null | openssl x509 -noout -fingerprint -sha256` prints it";
    let Some(hex) = text.strip_prefix("sha256:") else {
        return Err(hint.into());
    };
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(hint.into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| hint.to_string())?;
    }
    Ok(out)
}

/// The access tiers of Azure Blob Storage ("Access tiers for blob data").
const AZURE_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

/// The S3 storage classes a tier may write chunks in ("Using Amazon S3
/// storage classes" in the Amazon S3 user guide).
const S3_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

impl Resolver<'_> {
    /// A tier's `pack_size`: a size, or "off"; object storage packs by
    /// default, a local directory keeps a file per chunk (measured in
    /// `docs/benchmarks.md`).
    fn pack_size(
        &mut self,
        v: &Option<Sp<super::raw::PackSizeText>>,
        kind: BackendKind,
        f: &Path,
    ) -> Option<u64> {
        let default = matches!(kind, BackendKind::S3 | BackendKind::Azure)
            .then_some(crate::repo::pack::DEFAULT_TARGET_BYTES);
        match v {
            None => default,
            // Tape writes each chunk as a record of the session's file:
            // packs would only add a layer to read through.
            Some(t) if kind == BackendKind::Tape => {
                self.err(
                    "not-applicable",
                    f,
                    t.span(),
                    "`pack_size` does not apply to a tape tier".into(),
                    "remove the key: a copy session writes its chunks as one tape file".into(),
                );
                None
            }
            Some(t) => match super::units::parse_pack_size(&t.get().0) {
                Ok(size) => size,
                Err(err) => {
                    self.err(
                        "bad-value",
                        f,
                        t.span(),
                        format!("`pack_size`: {err}"),
                        format!("{}, or \"off\"", super::units::SIZE_FORMS),
                    );
                    default
                }
            },
        }
    }

    /// A percentage from 1 to 100.
    fn percent(&mut self, v: &Option<Sp<u32>>, default: u32, f: &Path, key: &str) -> u32 {
        match v {
            None => default,
            Some(n) if (1..=100).contains(n.get()) => *n.get(),
            Some(n) => {
                self.err(
                    "bad-value",
                    f,
                    n.span(),
                    format!("`{key}` = {} is not a percentage from 1 to 100", n.get()),
                    format!("remove the key to use the default ({default})"),
                );
                default
            }
        }
    }

    fn storage_class(
        &mut self,
        v: &Option<Sp<String>>,
        known: &[&str],
        what: &str,
        f: &Path,
    ) -> Option<String> {
        let v = v.as_ref()?;
        if known.contains(&v.get().as_str()) {
            return Some(v.get().clone());
        }
        self.err(
            "bad-value",
            f,
            v.span(),
            format!("`{}` is not {what}", v.get()),
            format!("one of {}", known.join(", ")),
        );
        None
    }
}

/// A storage account name: 3 to 24 lower-case letters and digits ("Storage
/// account name" in the Azure Storage docs).
fn valid_account(a: &str) -> bool {
    (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn looks_like_address(a: &str) -> bool {
    let addr = match (a.find('<'), a.rfind('>')) {
        (Some(i), Some(j)) if i < j => &a[i + 1..j],
        _ => a,
    };
    let mut parts = addr.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None)
        if !l.is_empty() && d.contains('.') && !addr.contains(char::is_whitespace))
}
