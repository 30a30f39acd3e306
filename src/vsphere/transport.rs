//! One blocking HTTPS connection to an endpoint's `/sdk`: POSTs an envelope
//! with its SOAPAction, keeps the `vmware_soap_session` cookie, and turns
//! whatever is not SOAP (a login page, a proxy's error) into an error that
//! names what came back. It knows nothing of vim25 beyond that.
//!
//! TLS verification is always on, in one of three forms the policy chose
//! (`TlsTrust`): the system roots, a CA file, or a pinned SHA-256 thumbprint
//! of the host's certificate. Pinning replaces the chain and name checks (the
//! pin *is* the identity, as self-signed ESXi hosts need) but the handshake
//! signature is still verified, so only the holder of that certificate's key
//! can answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::Error;
use super::soap::Request;
use crate::policy::model::TlsTrust;

const SESSION_COOKIE: &str = "vmware_soap_session";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A property collection of a large vCenter can take a while.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an upload may go without the server taking a byte or
/// answering before coffer gives it up. An upload has no deadline as a
/// whole: a 2 TiB disk takes as long as it takes.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(120);

/// Bytes an upload reads from its file per piece of the request body.
const UPLOAD_PIECE: usize = 1 << 20;

/// `sha256:AB:CD:…`, the form the policy and the error messages use.
pub fn format_thumbprint(digest: &[u8; 32]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// The thumbprint of a DER certificate.
pub fn thumbprint_of(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Accepts exactly the certificate whose SHA-256 is `expected`, and records
/// any other it is shown so the error can name it.
/// What a pin names: the SHA-256 of the certificate (the policy's
/// `thumbprint`), or its SHA-1, which is what vSphere itself gives for a
/// host (`HttpNfcLeaseDeviceUrl.sslThumbprint`).
#[derive(Debug, Clone, Copy)]
enum Pin {
    Sha256([u8; 32]),
    Sha1([u8; 20]),
}

impl Pin {
    fn matches(&self, der: &[u8]) -> bool {
        match self {
            Pin::Sha256(d) => thumbprint_of(der) == *d,
            Pin::Sha1(d) => {
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()
                    == d.as_slice()
            }
        }
    }
}

/// `69:44:03:…` (20 bytes in hex, colons optional), as vSphere writes a
/// host's SHA-1 thumbprint.
pub fn parse_sha1_thumbprint(text: &str) -> Option<[u8; 20]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex.trim()).ok()?;
    bytes.try_into().ok()
}

#[derive(Debug)]
struct PinnedCertificate {
    expected: Pin,
    presented: Arc<Mutex<Option<[u8; 32]>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.expected.matches(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            let digest = thumbprint_of(end_entity.as_ref());
            *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An HTTP client for plain requests to other services (a healthcheck
/// ping): the system's roots for https, `timeout` for the whole request.
pub fn plain_client(timeout: Duration) -> Result<Client, Error> {
    let tls = tls_config(&TlsTrust::SystemRoots, Arc::new(Mutex::new(None)))?;
    Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Tls(e.to_string()))
}

/// A TLS configuration that accepts exactly the certificate `pin` names;
/// `presented` receives the thumbprint of the one the endpoint showed.
fn pinned_config(
    pin: Pin,
    presented: Arc<Mutex<Option<[u8; 32]>>>,
) -> Result<rustls::ClientConfig, Error> {
    let (builder, provider) = crate::tls::builder().map_err(Error::Tls)?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            expected: pin,
            presented,
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_no_client_auth())
}

/// The TLS configuration that trusts what `trust` names; `presented`
/// receives the thumbprint of the certificate a pinned endpoint showed.
fn tls_config(
    trust: &TlsTrust,
    presented: Arc<Mutex<Option<[u8; 32]>>>,
) -> Result<rustls::ClientConfig, Error> {
    match trust {
        TlsTrust::Thumbprint(expected) => pinned_config(Pin::Sha256(*expected), presented),
        TlsTrust::CaFile(path) => crate::tls::trusting(Some(path)).map_err(Error::Tls),
        TlsTrust::SystemRoots => crate::tls::trusting(None).map_err(Error::Tls),
    }
}

/// The base URL of an endpoint: `https://host[:port]`, whatever path the
/// user wrote after it (`/`, `/sdk`).
pub fn base_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/sdk").unwrap_or(trimmed).to_string()
}

/// An HTTPS connection to one endpoint.
pub struct Transport {
    http: Client,
    /// The TLS settings `http` was built with, for the uploads' own client.
    tls: rustls::ClientConfig,
    base: String,
    host: String,
    expected: Option<[u8; 32]>,
    presented: Arc<Mutex<Option<[u8; 32]>>>,
    soap_action: Mutex<String>,
    cookie: Mutex<Option<String>>,
    /// What a fresh Login needs, once the session has logged in.
    login: Mutex<Option<LoginDetails>>,
    /// For a host read with generic service tickets (`for_host`): makes
    /// the ticket for one GET of a URL; used instead of the session cookie.
    tickets: Option<TicketSource>,
}

/// Makes a one-time ticket (its id) for a GET of the URL it is given.
pub type TicketSource = Box<dyn Fn(&str) -> Result<String, Error> + Send + Sync>;

/// The SessionManager and credentials of the session, for logging in again.
struct LoginDetails {
    session_manager: super::types::MoRef,
    user: String,
    password: String,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the session cookie.
        f.debug_struct("Transport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(url: &str, trust: &TlsTrust) -> Result<Transport, Error> {
        let base = base_url(url);
        if !base.to_ascii_lowercase().starts_with("https://") {
            // The session cookie and the password must never cross in clear.
            return Err(Error::Tls(format!(
                "`{url}` is not an https URL: vSphere is only spoken over TLS"
            )));
        }
        let host = base
            .split_once("://")
            .map_or(base.as_str(), |(_, rest)| rest)
            .to_string();
        let presented = Arc::new(Mutex::new(None));
        let tls = tls_config(trust, presented.clone())?;
        let http = Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::http(&base, &e))?;
        Ok(Transport {
            http,
            tls,
            base,
            host,
            expected: match trust {
                TlsTrust::Thumbprint(d) => Some(*d),
                _ => None,
            },
            presented,
            soap_action: Mutex::new(super::soap::soap_action("6.0")),
            cookie: Mutex::new(None),
            login: Mutex::new(None),
            tickets: None,
        })
    }

    /// A transport to an ESXi host's datastore file service whose every
    /// request carries a generic service ticket `tickets` makes for it
    /// (the cookie `vmware_cgi_ticket`, as govmomi's
    /// `object.Datastore.ServiceTicket` sends it); no session of its own.
    pub fn for_host(
        url: &str,
        trust: &TlsTrust,
        tickets: TicketSource,
    ) -> Result<Transport, Error> {
        let mut t = Transport::new(url, trust)?;
        t.tickets = Some(tickets);
        Ok(t)
    }

    /// `name:port` of the endpoint, as the URL gives it.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn sdk_url(&self) -> String {
        format!("{}/sdk", self.base)
    }

    /// Speak this vim25 version from now on (`urn:vim25/<version>`).
    pub fn set_version(&self, version: &str) {
        *lock(&self.soap_action) = super::soap::soap_action(version);
    }

    pub fn soap_action(&self) -> String {
        lock(&self.soap_action).clone()
    }

    /// Forgets the session cookie (before a fresh Login).
    pub fn clear_session(&self) {
        *lock(&self.cookie) = None;
    }

    /// Logs in with `user` and `password` at `session_manager`, and keeps
    /// them to log in again when the server forgets the session.
    pub fn login(
        &self,
        session_manager: &super::types::MoRef,
        user: &str,
        password: &str,
    ) -> Result<String, Error> {
        *lock(&self.login) = Some(LoginDetails {
            session_manager: session_manager.clone(),
            user: user.to_string(),
            password: password.to_string(),
        });
        self.login_again(None)
    }

    /// Logs in again with the kept credentials, unless the session cookie
    /// is no longer `stale` (another request has logged in meanwhile).
    fn login_again(&self, stale: Option<Option<String>>) -> Result<String, Error> {
        let details = lock(&self.login);
        let Some(d) = details.as_ref() else {
            return Err(Error::Protocol {
                method: "Login".into(),
                detail: "the session expired before it had logged in".into(),
            });
        };
        if let Some(stale) = stale
            && *lock(&self.cookie) != stale
        {
            return Ok(d.user.clone());
        }
        *lock(&self.cookie) = None;
        let req = super::soap::login(&d.session_manager, &d.user, &d.password);
        super::soap::parse_login(&self.post(&req)?)
    }

    /// A send failure, or a pinned thumbprint the host did not match.
    fn send_error(&self, url: &str, e: reqwest::Error) -> Error {
        if let (Some(expected), Some(presented)) = (self.expected, *lock(&self.presented)) {
            return Error::ThumbprintMismatch {
                host: self.host.clone(),
                expected: format_thumbprint(&expected),
                presented: format_thumbprint(&presented),
            };
        }
        Error::http(url, &e)
    }

    /// GETs `/sdk/vimServiceVersions.xml`. `Ok(None)` when the endpoint has
    /// none (HTTP 404): old or unusual endpoints.
    pub fn service_versions(&self) -> Result<Option<String>, Error> {
        let url = format!("{}/sdk/vimServiceVersions.xml", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .map_err(|e| self.send_error(&url, e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let (status, content_type, body) = read(resp, &url)?;
        if status != 200 || !looks_like_xml(&body) {
            return Err(not_soap(&url, status, &content_type, &body));
        }
        Ok(Some(body))
    }

    /// POSTs one envelope; answers the body of a 200 or of a 500 (SOAP
    /// faults come with 500), anything else is an error.
    pub fn post(&self, request: &Request) -> Result<String, Error> {
        let started = std::time::Instant::now();
        let answer = self.post_once(request);
        let ms = started.elapsed().as_millis() as u64;
        match &answer {
            Ok(_) => tracing::debug!(host = %self.host, method = request.method, ms, "SOAP call"),
            Err(e) => {
                tracing::debug!(host = %self.host, method = request.method, ms, error = %e, "SOAP call failed")
            }
        }
        answer
    }

    fn post_once(&self, request: &Request) -> Result<String, Error> {
        let url = self.sdk_url();
        let mut req = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", self.soap_action())
            .body(request.envelope.clone());
        if let Some(cookie) = lock(&self.cookie).clone() {
            req = req.header(COOKIE, cookie);
        }
        let resp = req.send().map_err(|e| self.send_error(&url, e))?;
        for value in resp.headers().get_all(SET_COOKIE) {
            if let Some(cookie) = session_cookie(value) {
                *lock(&self.cookie) = Some(cookie);
            }
        }
        let (status, content_type, body) = read(resp, &url)?;
        if !(status == 200 || status == 500) || !looks_like_xml(&body) {
            return Err(not_soap(&url, status, &content_type, &body));
        }
        Ok(body)
    }
}

/// The parts of a datastore HTTP answer a reader checks.
#[derive(Debug)]
/// One file sent as a request body (`Transport::upload`).
pub struct Upload {
    pub method: reqwest::Method,
    pub url: String,
    pub content_type: &'static str,
    pub file: std::fs::File,
    pub len: u64,
    /// Longest silence allowed: no byte taken, no answer.
    pub idle: Duration,
    pub progress: Option<Arc<crate::progress::ReadProgress>>,
    /// Counts the bytes sent, for a caller that reports progress itself.
    pub sent: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Gives the upload up when set (Ctrl-C).
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
    /// For a URL on another host than this transport's endpoint: the SHA-1
    /// of that host's certificate as the endpoint vouched for it (an import
    /// lease's `sslThumbprint`), pinned instead of the source's own trust.
    pub host_sha1: Option<[u8; 20]>,
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_range: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Transport {
    /// GETs `path_and_query` (`/folder/…?dcPath=…&dsName=…`) with the session
    /// cookie, for bytes `range` when given. The caller checks the status.
    pub fn datastore_get(
        &self,
        path_and_query: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<RawResponse, Error> {
        let url = format!("{}{path_and_query}", self.base);
        let mut req = self.http.get(&url);
        if let Some(r) = range {
            req = req.header("Range", format!("bytes={}-{}", r.start, r.end - 1));
        }
        self.raw(req, &url)
    }

    /// PUTs a whole file to `path_and_query` with the session cookie.
    pub fn datastore_put(&self, path_and_query: &str, body: Vec<u8>) -> Result<RawResponse, Error> {
        let url = format!("{}{path_and_query}", self.base);
        let req = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.raw(req, &url)
    }

    /// PUTs a local file to `path_and_query` (see `upload`).
    pub fn datastore_put_file(
        &self,
        path_and_query: &str,
        file: std::fs::File,
        len: u64,
        progress: Option<std::sync::Arc<crate::progress::ReadProgress>>,
    ) -> Result<RawResponse, Error> {
        self.upload(Upload {
            method: reqwest::Method::PUT,
            url: format!("{}{path_and_query}", self.base),
            content_type: "application/octet-stream",
            file,
            len,
            idle: UPLOAD_IDLE,
            progress,
            sent: None,
            stop: None,
            host_sha1: None,
        })
    }

    /// Sends a local file as the body of one request, streamed from disk
    /// with its length announced. The request has no deadline as a whole;
    /// it fails when the server takes no byte and gives no answer for
    /// `idle`, or as soon as `stop` is set. The session cookie goes only
    /// to this transport's own endpoint (an import lease's URL on another
    /// host is its own authorisation).
    pub fn upload(&self, u: Upload) -> Result<RawResponse, Error> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let url = u.url.clone();
        let http_err = |detail: String| Error::Http {
            url: url.clone(),
            detail,
        };
        let own_endpoint = url.starts_with(&format!("{}/", self.base));
        let tls = match u.host_sha1 {
            Some(sha1) if !own_endpoint => pinned_config(Pin::Sha1(sha1), Default::default())?,
            _ => self.tls.clone(),
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::http(&url, &e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| http_err(format!("starting the upload: {e}")))?;
        let started = std::time::Instant::now();
        // Milliseconds after `started` of the last byte the server took.
        let touched = Arc::new(AtomicU64::new(0));
        let body = {
            let touched = touched.clone();
            let (progress, sent) = (u.progress.clone(), u.sent.clone());
            futures_util::stream::unfold(u.file, move |mut file| {
                let touched = touched.clone();
                let (progress, sent) = (progress.clone(), sent.clone());
                async move {
                    let mut piece = vec![0u8; UPLOAD_PIECE];
                    let n = match std::io::Read::read(&mut file, &mut piece) {
                        Ok(0) => return None,
                        Ok(n) => n,
                        Err(e) => return Some((Err(e), file)),
                    };
                    piece.truncate(n);
                    touched.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if let Some(p) = &progress {
                        p.add(n as u64);
                    }
                    if let Some(s) = &sent {
                        s.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Some((Ok(piece), file))
                }
            })
        };
        let mut req = client
            .request(u.method, &url)
            .header(CONTENT_TYPE, u.content_type)
            .header(reqwest::header::CONTENT_LENGTH, u.len)
            .body(reqwest::Body::wrap_stream(body));
        if own_endpoint && let Some(cookie) = lock(&self.cookie).clone() {
            req = req.header(COOKIE, cookie);
        }
        let (idle, stop) = (u.idle, u.stop);
        runtime.block_on(async {
            let exchange = async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let (content_range, content_type) = head_of(resp.headers());
                let body = resp.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>(RawResponse {
                    status,
                    content_range,
                    content_type,
                    body,
                })
            };
            let watch = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                        return "the upload was stopped".to_string();
                    }
                    let quiet =
                        started.elapsed().as_millis() as u64 - touched.load(Ordering::Relaxed);
                    if quiet > idle.as_millis() as u64 {
                        return format!(
                            "the server took no data and gave no answer for {}s",
                            idle.as_secs()
                        );
                    }
                }
            };
            tokio::select! {
                r = exchange => r.map_err(|e| self.send_error(&url, e)),
                why = watch => Err(http_err(why)),
            }
        })
    }

    /// Sends a datastore request with the session cookie. A 401 means the
    /// server forgot the session (an idle timeout, a restart of its
    /// management agents): coffer logs in again and sends the request once
    /// more, as for SOAP calls (`Session::call`); a streamed upload cannot
    /// be sent again and answers its 401.
    fn raw(&self, req: reqwest::blocking::RequestBuilder, url: &str) -> Result<RawResponse, Error> {
        let used = lock(&self.cookie).clone();
        let again = req.try_clone();
        let resp = self.raw_once(req, url)?;
        if self.tickets.is_some() {
            // A ticket refused (expired before use): one more, once.
            return match again {
                Some(again) if resp.status == 401 => self.raw_once(again, url),
                _ => Ok(resp),
            };
        }
        match again {
            Some(again) if resp.status == 401 && lock(&self.login).is_some() => {
                self.login_again(Some(used))?;
                self.raw_once(again, url)
            }
            _ => Ok(resp),
        }
    }

    fn raw_once(
        &self,
        mut req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<RawResponse, Error> {
        if let Some(tickets) = &self.tickets {
            req = req.header(COOKIE, format!("vmware_cgi_ticket={}", tickets(url)?));
        } else if let Some(cookie) = lock(&self.cookie).clone() {
            req = req.header(COOKIE, cookie);
        }
        let resp = req.send().map_err(|e| self.send_error(url, e))?;
        let (content_range, content_type) = head_of(resp.headers());
        let status = resp.status().as_u16();
        let body = resp.bytes().map_err(|e| Error::http(url, &e))?.to_vec();
        Ok(RawResponse {
            status,
            content_range,
            content_type,
            body,
        })
    }
}

/// The Content-Range and Content-Type of an answer.
fn head_of(headers: &reqwest::header::HeaderMap) -> (Option<String>, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    (
        header("content-range"),
        header("content-type").unwrap_or_default(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read(resp: reqwest::blocking::Response, url: &str) -> Result<(u16, String, String), Error> {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let bytes = resp.bytes().map_err(|e| Error::http(url, &e))?;
    Ok((
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// `name=value` of the session cookie in one Set-Cookie header.
pub fn session_cookie(header: &HeaderValue) -> Option<String> {
    let text = header.to_str().ok()?;
    let pair = text.split(';').next()?.trim();
    let (name, _value) = pair.split_once('=')?;
    (name.trim() == SESSION_COOKIE).then(|| pair.to_string())
}

/// XML, not HTML: a web UI or a proxy page is HTML even when labelled XML.
pub fn looks_like_xml(body: &str) -> bool {
    let start = body.trim_start_matches('\u{feff}').trim_start();
    let lower: String = start
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    start.starts_with('<') && !lower.starts_with("<!doctype html") && !lower.starts_with("<html")
}

fn not_soap(url: &str, status: u16, content_type: &str, body: &str) -> Error {
    Error::NotSoap {
        url: url.to_string(),
        status,
        content_type: content_type.to_string(),
        first_bytes: body.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts the connection and then reads nothing: the
    /// upload ends after `idle`, not after a deadline for the whole body.
    #[test]
    fn an_upload_the_server_stops_taking_ends_after_the_idle_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // Holds the connection open, reading nothing, until the test
            // is over (at most a minute).
            let _ = wait.recv_timeout(Duration::from_secs(60));
            drop(conn);
        });
        let file = tempfile::tempfile().unwrap();
        file.set_len(256 << 20).unwrap();
        let t = Transport::new("https://127.0.0.1:9", &TlsTrust::Thumbprint([0; 32])).unwrap();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let err = t
            .upload(Upload {
                method: reqwest::Method::PUT,
                url: format!("http://{addr}/folder/x"),
                content_type: "application/octet-stream",
                file,
                len: 256 << 20,
                idle: Duration::from_secs(1),
                progress: None,
                sent: Some(sent.clone()),
                stop: None,
                host_sha1: None,
            })
            .unwrap_err();
        // The idle watch ended it, not the server closing the connection.
        assert!(err.to_string().contains("took no data"), "{err}");
        done.send(()).unwrap();
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent > 0 && sent < 256 << 20, "{sent}");
        server.join().unwrap();
    }

    #[test]
    fn a_host_sha1_thumbprint_reads_with_or_without_colons() {
        let t =
            parse_sha1_thumbprint("69:44:03:56:F3:F2:28:F5:3F:A3:72:1A:AD:C8:35:56:A0:E7:B7:7B")
                .unwrap();
        assert_eq!(t[0], 0x69);
        assert_eq!(t[19], 0x7b);
        assert_eq!(
            parse_sha1_thumbprint("69440356f3f228f53fa3721aadc83556a0e7b77b"),
            Some(t)
        );
        assert_eq!(parse_sha1_thumbprint("69:44"), None);
        let der = b"not a certificate, but bytes to hash";
        let sha1: [u8; 20] = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
            .as_ref()
            .try_into()
            .unwrap();
        assert!(Pin::Sha1(sha1).matches(der));
        assert!(!Pin::Sha1([0; 20]).matches(der));
    }

    #[test]
    fn base_url_drops_sdk_and_slashes() {
        assert_eq!(base_url("https://esx1/sdk"), "https://esx1");
        assert_eq!(base_url("https://esx1:8443/"), "https://esx1:8443");
        assert_eq!(base_url(" https://vc.example/sdk/ "), "https://vc.example");
    }

    #[test]
    fn plain_http_is_refused() {
        let err = Transport::new("http://esx1/sdk", &TlsTrust::Thumbprint([0; 32])).unwrap_err();
        assert!(err.to_string().contains("not an https URL"), "{err}");
    }

    #[test]
    fn thumbprint_is_uppercase_hex_with_colons() {
        let t = format_thumbprint(&thumbprint_of(b"abc"));
        assert!(t.starts_with("sha256:BA:78:16:BF:"), "{t}");
        assert_eq!(t.len(), "sha256:".len() + 32 * 3 - 1);
    }

    #[test]
    fn only_the_session_cookie_is_kept() {
        let h = HeaderValue::from_static("vmware_soap_session=\"52a1\"; Path=/; HttpOnly; Secure");
        assert_eq!(
            session_cookie(&h).as_deref(),
            Some("vmware_soap_session=\"52a1\"")
        );
        let other = HeaderValue::from_static("vmware_cgi_ticket=abc; Path=/");
        assert_eq!(session_cookie(&other), None);
    }

    #[test]
    fn html_is_not_soap() {
        assert!(looks_like_xml("<?xml version=\"1.0\"?><soapenv:Envelope/>"));
        assert!(looks_like_xml("\u{feff}  <soapenv:Envelope/>"));
        assert!(!looks_like_xml(
            "<!DOCTYPE html><html><body>login</body></html>"
        ));
        assert!(!looks_like_xml("<HTML><body>502 Bad Gateway</body></HTML>"));
        assert!(!looks_like_xml("Service Unavailable"));
        let e = not_soap("https://h/sdk", 200, "text/html", "<html>x</html>");
        let msg = e.to_string();
        assert!(
            msg.contains("text/html") && msg.contains("<html>x"),
            "{msg}"
        );
    }

    #[test]
    fn a_pinned_verifier_records_what_it_was_shown() {
        let presented = Arc::new(Mutex::new(None));
        let verifier = PinnedCertificate {
            expected: Pin::Sha256([0; 32]),
            presented: presented.clone(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let cert = CertificateDer::from(b"not really a certificate".to_vec());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(
            verifier
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_err()
        );
        assert_eq!(
            *presented.lock().unwrap(),
            Some(thumbprint_of(cert.as_ref()))
        );
        let pinned = PinnedCertificate {
            expected: Pin::Sha256(thumbprint_of(cert.as_ref())),
            ..verifier
        };
        assert!(
            pinned
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
    }
}
