//! A real PostgreSQL server for the tests, from Debian's packages
//! (`scripts/test-deps.sh` installs them): a new cluster is made in a
//! temporary directory and started once per test binary on a free loopback
//! port. PostgreSQL refuses to run as root, so as root the cluster belongs
//! to `nobody`. The user `coffer` logs in with a password
//! (scram-sha-256), as a production catalog would; each test gets a
//! database of its own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The password of the `coffer` user of every test cluster.
pub const PASSWORD: &str = "coffer-test-password";

pub struct Postgres {
    pub port: u16,
    /// The cluster's directory; removed by the next test binary that
    /// starts a cluster once this one's process is gone.
    pub dir: PathBuf,
}

impl Postgres {
    /// A URL for `database` as user `coffer`, with no password in it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://coffer@127.0.0.1:{}/{database}", self.port)
    }

    /// The CA (PEM) that signed the server's certificate, which names
    /// 127.0.0.1 only: the server also speaks TLS to a client that asks.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A superuser connection to the `postgres` database.
    pub fn admin(&self) -> postgres::Client {
        connect(&self.url("postgres")).expect("the test cluster accepts connections")
    }
}

/// The PostgreSQL server of this test binary; starts it on first use.
pub fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A new, empty database on the test server; answers its URL.
pub fn database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let s = server();
    s.admin()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("creating a test database");
    s.url(&name)
}

/// Connects to `url` with the test password.
pub fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.password(PASSWORD);
    config.connect(postgres::NoTls)
}

/// A file holding the test password, for a policy's
/// `catalog_password = { file = "…" }`.
pub fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("catalog_password");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    p
}

/// The catalog at `url`, its password in a file in `dir`.
pub fn location_at(url: &str, dir: &Path) -> coffer::policy::model::CatalogLocation {
    coffer::policy::model::CatalogLocation::Postgres {
        url: url.to_string(),
        password: Some(coffer::policy::model::SecretRef::File(password_file(dir))),
    }
}

/// A catalog in a new database, its password in a file in `dir`.
pub fn location(dir: &Path) -> coffer::policy::model::CatalogLocation {
    location_at(&database(), dir)
}

/// The `[settings]` lines that name the catalog `at`.
pub fn settings(at: &coffer::policy::model::CatalogLocation) -> String {
    match at {
        coffer::policy::model::CatalogLocation::Postgres {
            url,
            password: Some(coffer::policy::model::SecretRef::File(pw)),
        } => format!(
            "catalog = \"{url}\"\ncatalog_password = {{ file = \"{}\" }}\n",
            pw.display()
        ),
        other => panic!("not a test PostgreSQL catalog: {other:?}"),
    }
}

/// The directory of PostgreSQL's server programs: on the PATH, or where
/// Debian puts them (`/usr/lib/postgresql/VERSION/bin`), newest first.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("initdb"))
            .collect::<Vec<_>>()
    });
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/initdb"))
        .collect();
    debian.sort_by_key(|p| {
        let version = p.iter().rev().nth(2).and_then(|v| v.to_str());
        std::cmp::Reverse(version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0))
    });
    on_path
        .chain(debian)
        .find(|p| p.exists())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `nobody` when running as root (PostgreSQL refuses root), else nobody
/// to switch to.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the result is read at once, before
    // any other call into the password database.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(
        !pw.is_null(),
        "there is no user `nobody` to run PostgreSQL as"
    );
    // SAFETY: not null, checked above.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
        // SAFETY: setgroups with an empty list touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::setgroups(0, std::ptr::null());
                Ok(())
            });
        }
    }
}

fn start() -> Postgres {
    let bin = bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, postgres) are not installed; \
             run scripts/test-deps.sh, which installs Debian's postgresql"
        )
    });
    let user = unprivileged();
    // In /tmp: every user may enter it, so `nobody` can reach its cluster.
    let dir = super::binary_workspace("pg");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
    }
    // TLS: a CA of the test, and a server certificate it signed for
    // 127.0.0.1 (no other name), its key readable by the server only.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coffer test catalog CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&cert_file, Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&key_file, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    // Its own directory as the working one: the test's may be closed to
    // `nobody`.
    initdb
        .current_dir(&dir)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "coffer",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            // A collation that is not byte order (ICU's en-US sorts "alpha"
            // before "Zeta"): the catalog must order text as SQLite does
            // whatever the server's collation.
            "--locale-provider=icu",
            "--icu-locale=en-US",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    as_server_user(&mut initdb, user);
    let out = initdb.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Command::new(bin.join("postgres"));
    server
        .current_dir(&dir)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            // A test cluster: nothing to keep after a crash.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "ssl=on",
            "-c",
            &format!("ssl_cert_file={}", cert_file.display()),
            "-c",
            &format!("ssl_key_file={}", key_file.display()),
        ]);
    as_server_user(&mut server, user);
    if let Err(e) = super::spawn_for_binary(server) {
        panic!("cannot start {}: {e}", bin.join("postgres").display());
    }
    let s = Postgres { port, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(&s.url("postgres")) {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections on 127.0.0.1:{port} within 60s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}
