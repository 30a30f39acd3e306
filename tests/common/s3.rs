//! A real S3-compatible server for the tests: moto's server mode (from
//! PyPI; `scripts/test.sh` installs it), started once per test binary on a
//! free loopback port, and a proxy in front of it that injects faults (503,
//! 500, answers that never come) on request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use coffer::repo::s3::S3Location;

pub struct Moto {
    pub addr: SocketAddr,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The moto server of this test binary; starts it on first use.
pub fn moto() -> &'static Moto {
    static SERVER: OnceLock<Moto> = OnceLock::new();
    SERVER.get_or_init(start_moto)
}

fn start_moto() -> Moto {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-m",
        "moto.server",
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    if let Err(e) = super::spawn_for_binary(cmd) {
        panic!(
            "cannot start python3 -m moto.server ({e}); run scripts/test.sh, which installs moto"
        );
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = raw_request(addr, "GET", "/", &[], b"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto did not answer on {addr} within 60s; is it installed (pip install 'moto[server]')?"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { addr }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body_at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    Ok((status, out[body_at..].to_vec()))
}

static BUCKETS: AtomicU64 = AtomicU64::new(0);

/// A new, empty bucket; with Object Lock enabled when `locked`.
pub fn bucket(locked: bool) -> String {
    let name = format!(
        "coffer-test-{}-{}",
        std::process::id(),
        BUCKETS.fetch_add(1, Ordering::Relaxed)
    );
    let headers: &[(&str, &str)] = if locked {
        &[("x-amz-bucket-object-lock-enabled", "true")]
    } else {
        &[]
    };
    let (status, body) =
        raw_request(moto().addr, "PUT", &format!("/{name}"), headers, b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    name
}

/// Where a bucket is, with quick retries so fault tests stay short.
pub fn location(bucket: &str, endpoint: &str) -> S3Location {
    let mut loc = S3Location::new(bucket);
    loc.endpoint = Some(endpoint.to_string());
    loc.access_key = Some("coffer-test".into());
    loc.secret_key = Some("coffer-test-secret".into());
    loc.max_retries = 4;
    loc.retry_timeout = Duration::from_secs(20);
    loc.request_timeout = Duration::from_secs(3);
    loc
}

/// What the proxy does to the requests it sees.
#[derive(Default)]
pub struct Faults {
    /// Answer this many requests with 503 SlowDown.
    pub fail_503: AtomicU32,
    /// Answer this many requests with 500.
    pub fail_500: AtomicU32,
    /// Swallow this many requests without answering.
    pub stall: AtomicU32,
    /// Hold every request this many milliseconds before forwarding it:
    /// the round trip to a server far away.
    pub delay_ms: AtomicU64,
    /// Requests seen (forwarded or not).
    pub seen: AtomicU64,
    /// Of which PUTs and GETs (the requests object storage bills).
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    /// While set, every HEAD answer that says a thaw is done
    /// (`x-amz-restore: ongoing-request="false"`) says it is under way, as
    /// S3 does for hours (moto finishes a RestoreObject at once).
    pub thaw_under_way: std::sync::atomic::AtomicBool,
}

fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A proxy that injects faults; one request per connection.
pub struct FaultyProxy {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
}

impl FaultyProxy {
    /// A proxy to this binary's moto.
    pub fn start() -> FaultyProxy {
        FaultyProxy::to(moto().addr)
    }

    /// A proxy to the server at `upstream`.
    pub fn to(upstream: SocketAddr) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &f);
                });
            }
        });
        FaultyProxy { addr, faults }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, faults: &Faults) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    faults.seen.fetch_add(1, Ordering::SeqCst);
    if head.starts_with(b"PUT ") {
        faults.puts.fetch_add(1, Ordering::SeqCst);
    } else if head.starts_with(b"GET ") {
        faults.gets.fetch_add(1, Ordering::SeqCst);
    }
    let mut client = client;
    let canned = |status: &str, code: &str| {
        let body = format!(
            "<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
        );
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if take(&faults.stall) {
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }
    if take(&faults.fail_503) {
        return client.write_all(canned("503 Service Unavailable", "SlowDown").as_bytes());
    }
    if take(&faults.fail_500) {
        return client.write_all(canned("500 Internal Server Error", "InternalError").as_bytes());
    }
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    if head.starts_with(b"HEAD ") && faults.thaw_under_way.load(Ordering::SeqCst) {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer)
            .replace("ongoing-request=\"false\"", "ongoing-request=\"true\"");
        return client.write_all(text.as_bytes());
    }
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}

/// `coffer ARGS -p .` in `dir` with the test server's keys in the variables
/// the test policies name (TEST_S3_KEY, TEST_S3_SECRET) and an offsite
/// encryption passphrase (TEST_OFFSITE_KEY).
pub fn coffer_with_keys(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    super::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env("TEST_S3_KEY", "coffer-test")
        .env("TEST_S3_SECRET", "coffer-test-secret")
        .env("TEST_OFFSITE_KEY", "offsite passphrase")
        .output()
        .unwrap()
}
