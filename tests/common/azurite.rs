//! A real Azure Blob Storage endpoint for the tests: Azurite, the Azure
//! Storage emulator (from npm; `scripts/test-deps.sh` installs it), started
//! once per test binary on a free loopback port with its well-known
//! development account, and a container per test.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coffer::repo::azure::{AzureLocation, AzureStore};

/// Azurite's development account and its published key ("Use the Azurite
/// emulator for local Azure Storage development": devstoreaccount1).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    port: u16,
}

impl Azurite {
    /// The account's endpoint, path-style as Azurite serves it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The Azurite server of this test binary; starts it on first use.
pub fn azurite() -> &'static Azurite {
    static SERVER: OnceLock<Azurite> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Azurite {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let workspace = super::binary_workspace("azurite");
    let mut cmd = std::process::Command::new("azurite-blob");
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(&workspace)
        .args(["--silent", "--skipApiVersionCheck"]);
    if let Err(e) = super::spawn_for_binary(cmd) {
        panic!("cannot start azurite-blob ({e}); run scripts/test-deps.sh, which installs Azurite");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not listen on 127.0.0.1:{port} within 60s; is it installed (npm install -g azurite)?"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Azurite { port }
}

static CONTAINERS: AtomicU64 = AtomicU64::new(0);

/// Where container `name` of the development account is, with quick
/// retries so fault tests stay short.
pub fn location(container: &str, endpoint: &str) -> AzureLocation {
    let mut loc = AzureLocation::new(ACCOUNT, container);
    loc.endpoint = Some(endpoint.to_string());
    loc.access_key = Some(KEY.into());
    loc.max_retries = 4;
    loc.retry_timeout = Duration::from_secs(20);
    loc.request_timeout = Duration::from_secs(5);
    loc
}

/// A new, empty container on this binary's Azurite.
pub fn container() -> String {
    let name = format!(
        "coffer-test-{}-{}",
        std::process::id(),
        CONTAINERS.fetch_add(1, Ordering::Relaxed)
    );
    AzureStore::new(location(&name, &azurite().endpoint()))
        .unwrap()
        .create_container()
        .unwrap();
    name
}
