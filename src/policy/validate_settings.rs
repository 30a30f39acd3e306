//! Checks of `[settings]` and of a notifier's server that need more than
//! one value: a catalog path the loader would read as a policy file, a
//! state directory at the file system root, a report directory or catalog
//! inside a tier's repository, a PostgreSQL catalog URL with a password in
//! it, an SMTP host that could inject commands.
//! Split from `validate` to keep that file about the shared checks.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::load::Entry;
use super::model::{CatalogLocation, SecretRef, Settings, Tier, TierBackend};
use super::raw::{RawNotify, RawSettings, Sp};
use super::validate::Resolver;

/// `path` with `.` and `..` resolved by text alone (no file system access:
/// the directories need not exist yet).
pub(super) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

impl Resolver<'_> {
    /// A `catalog = "postgres://…"` setting: a URL the PostgreSQL client
    /// reads, and no password in it (policy files are kept in git).
    pub(super) fn postgres_catalog(
        &mut self,
        c: &Sp<String>,
        password: Option<SecretRef>,
        file: &Path,
    ) -> CatalogLocation {
        let url = c.get();
        let authority = url
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let user_password = authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'));
        if user_password || url.contains("password=") {
            self.err(
                "literal-secret",
                file,
                c.span(),
                "`catalog` holds a password; policy files are kept in git and must not hold secrets"
                    .into(),
                "remove it from the URL and write `catalog_password = { env = \"COFFER_CATALOG_PASSWORD\" }` or `catalog_password = { file = \"/etc/coffer/catalog_password\" }`"
                    .into(),
            );
        } else if let Err(e) = crate::catalog::parse_postgres_url(url) {
            self.err(
                "bad-url",
                file,
                c.span(),
                format!("`catalog = \"{url}\"`: {e}"),
                "write `postgres://USER@HOST:PORT/DATABASE`, e.g. `postgres://coffer@db.example.com:5432/coffer`"
                    .into(),
            );
        }
        CatalogLocation::Postgres {
            url: url.clone(),
            password,
        }
    }

    /// The path settings against each other and against the tiers.
    pub(super) fn settings_paths(
        &mut self,
        e: Option<&Entry<RawSettings>>,
        settings: &Settings,
        tiers: &BTreeMap<String, Tier>,
    ) {
        let Some(e) = e else { return };
        let (f, raw) = (e.file.as_path(), &e.value);
        if let Some(c) = &raw.catalog
            && matches!(settings.catalog, CatalogLocation::File(_))
        {
            let is_toml = Path::new(c.get())
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("toml"));
            if is_toml {
                self.err(
                    "bad-path",
                    f,
                    c.span(),
                    format!(
                        "`catalog = \"{}\"` ends in .toml: coffer would load the database as a policy file",
                        c.get()
                    ),
                    "name the catalog file `catalog.db` (the default is `<state_dir>/catalog.db`)"
                        .into(),
                );
            }
        }
        if let Some(s) = &raw.state_dir
            && lexical(&settings.state_dir).parent().is_none()
        {
            self.err(
                "bad-path",
                f,
                s.span(),
                format!(
                    "`state_dir = \"{}\"` is the root of the file system",
                    s.get()
                ),
                "give coffer a directory of its own, e.g. `/var/lib/coffer` (the default is `.coffer`)"
                    .into(),
            );
        }
        let catalog_file = match &settings.catalog {
            CatalogLocation::File(p) => Some(p),
            CatalogLocation::Postgres { .. } => None,
        };
        if let (Some(v), CatalogLocation::File(_)) = (&raw.catalog_password, &settings.catalog) {
            self.err(
                "not-applicable",
                f,
                v.span(),
                "`catalog_password` is for a PostgreSQL catalog; this catalog is a file".into(),
                "remove the key, or set `catalog = \"postgres://USER@HOST:PORT/DATABASE\"`".into(),
            );
        }
        for (key, value, path) in [
            ("report_dir", &raw.report_dir, Some(&settings.report_dir)),
            ("catalog", &raw.catalog, catalog_file),
        ] {
            let (Some(v), Some(path)) = (value, path) else {
                continue;
            };
            let path = lexical(path);
            for (name, tier) in tiers {
                let TierBackend::Local { path: tier_path } = &tier.backend else {
                    continue;
                };
                if path.starts_with(lexical(tier_path)) {
                    self.err(
                        "bad-path",
                        f,
                        v.span(),
                        format!(
                            "`{key} = \"{}\"` is inside the repository of tier `{name}`",
                            v.get()
                        ),
                        "keep it outside every tier: a repository holds only what coffer writes to it"
                            .into(),
                    );
                }
            }
        }
    }

    /// A notifier's SMTP host and port.
    pub(super) fn smtp_server(&mut self, e: &Entry<RawNotify>) {
        let (f, r) = (e.file.as_path(), &e.value);
        let host = r.smtp_host.get();
        if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            self.err(
                "invalid-value",
                f,
                r.smtp_host.span(),
                format!("`smtp_host = {host:?}` is not a host name"),
                "write a host name or address alone, e.g. `smtp.example.com`, with no spaces or line breaks"
                    .into(),
            );
        }
        if let Some(p) = &r.smtp_port
            && *p.get() == 0
        {
            self.err(
                "invalid-value",
                f,
                p.span(),
                "`smtp_port = 0` is not a port".into(),
                "use 587 (starttls), 465 (tls) or 25, or leave it out for the default of `security`"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_resolve_dots_without_the_file_system() {
        assert_eq!(lexical(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(lexical(Path::new("/../")), PathBuf::from("/"));
        assert_eq!(lexical(Path::new("p/../../x")), PathBuf::from("../x"));
    }
}
