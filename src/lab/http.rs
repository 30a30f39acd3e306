//! A small threaded HTTPS/1.1 server: one thread accepts, one thread per
//! connection serves requests one after the other (keep-alive), bodies
//! framed by Content-Length or chunked. It knows nothing of SOAP or
//! datastores: a `Handler` turns each request into a `Response`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The request line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target as sent: path and query, still percent-encoded.
    pub target: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

/// The request body, read on demand as a `Read` (framed by Content-Length
/// or chunked); whatever the handler leaves unread is drained before the
/// next request.
pub struct Body<'a> {
    reader: &'a mut dyn BufRead,
    /// Content-Length framing: the bytes still to come.
    remaining: Option<u64>,
    chunked: bool,
    /// Chunked framing: what is left of the current chunk, and whether a
    /// chunk was begun (its CRLF is read before the next size line).
    chunk_left: u64,
    in_chunk: bool,
    done: bool,
}

impl Body<'_> {
    /// Copies the rest of the body into `sink`; answers how much.
    pub fn copy_to(&mut self, sink: &mut dyn Write) -> io::Result<u64> {
        io::copy(self, sink)
    }

    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Starts the next chunk: its CRLF after the last one, its size line
    /// and, for the last (empty) chunk, the trailers. `false` at the end.
    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.in_chunk {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        self.in_chunk = true;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                line.clear();
                if self.reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(false);
                }
            }
        }
        self.chunk_left = size;
        Ok(true)
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let left = if self.chunked {
            if self.chunk_left == 0 && !self.next_chunk()? {
                self.done = true;
                return Ok(0);
            }
            self.chunk_left
        } else {
            match self.remaining {
                Some(n) if n > 0 => n,
                _ => {
                    self.done = true;
                    return Ok(0);
                }
            }
        };
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if self.chunked {
            self.chunk_left -= n as u64;
        } else {
            self.remaining = Some(left - n as u64);
        }
        Ok(n)
    }
}

/// Where a file body's served bytes are counted, and when to cut it.
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub len: u64,
    /// Called with each piece of the body as it is handed to the
    /// connection, before it is written: a client that has read the whole
    /// body finds it counted already. (A piece whose write fails, because
    /// the client went away, is counted too.)
    pub on_sent: Box<dyn Fn(u64) + Send>,
    /// Cut the connection after this many body bytes (a fault).
    pub drop_after: Option<u64>,
}

pub enum Payload {
    Bytes(Vec<u8>),
    File(FileBody),
    /// No answer: the connection is dropped at once, the rest of the
    /// request body unread (a fault that cuts an upload).
    Cut,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub payload: Payload,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            payload: Payload::Bytes(body.into()),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// An answer after which the connection closes without the rest of
    /// the request body being read: for a body refused part-way, whose
    /// remainder may be large.
    pub fn closing(self) -> Response {
        self.header("Connection", "close")
    }

    /// Drops the connection without an answer.
    pub fn cut() -> Response {
        Response {
            status: 0,
            headers: Vec::new(),
            payload: Payload::Cut,
        }
    }

    fn closes(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"))
    }
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, head: &Head, body: &mut Body<'_>) -> Response;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("lab-accept".into())
            .spawn(move || {
                let ids = AtomicU64::new(0);
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = ids.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        lock(&conns2).insert(id, clone);
                    }
                    let (tls, handler, conns3) = (tls.clone(), handler.clone(), conns2.clone());
                    let _ = std::thread::Builder::new()
                        .name("lab-conn".into())
                        .spawn(move || {
                            let _ = serve_connection(stream, tls, handler.as_ref());
                            lock(&conns3).remove(&id);
                        });
                }
            })?;
        Ok(Server {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, s) in lock(&self.conns).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve_connection(
    stream: TcpStream,
    tls: Arc<ServerConfig>,
    handler: &dyn Handler,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let conn = ServerConnection::new(tls).map_err(io::Error::other)?;
    let mut reader = BufReader::with_capacity(64 * 1024, StreamOwned::new(conn, stream));
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let remaining = head
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            let out = reader.get_mut();
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            out.flush()?;
        }
        let response = {
            let mut body = Body {
                reader: &mut reader,
                remaining,
                chunked,
                chunk_left: 0,
                in_chunk: false,
                done: false,
            };
            let response = handler.handle(&head, &mut body);
            if matches!(response.payload, Payload::Cut) {
                // Cut without close_notify: the client sees a dropped connection.
                let _ = reader.get_mut().sock.shutdown(Shutdown::Both);
                return Ok(());
            }
            if !response.closes() {
                body.copy_to(&mut io::sink())?;
            }
            response
        };
        let close = close || response.closes();
        let head_only = head.method == "HEAD";
        if !write_response(reader.get_mut(), response, close, head_only)? || close {
            let s = reader.get_mut();
            s.conn.send_close_notify();
            let _ = s.flush();
            return Ok(());
        }
    }
}

fn read_head(reader: &mut BufReader<Tls>) -> io::Result<Option<Head>> {
    let mut line = String::new();
    // Tolerate blank lines between requests.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) if line.trim().is_empty() => continue,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        headers: Vec::new(),
    };
    let mut size = line.len();
    loop {
        line.clear();
        size += reader.read_line(&mut line)?;
        if size > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(Some(head));
        }
        if let Some((n, v)) = l.split_once(':') {
            head.headers
                .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

/// Writes one response; `Ok(false)` when the connection must close now
/// (a body cut short on purpose).
fn write_response(
    out: &mut Tls,
    response: Response,
    close: bool,
    head_only: bool,
) -> io::Result<bool> {
    let len = match &response.payload {
        Payload::Bytes(b) => b.len() as u64,
        Payload::File(f) => f.len,
        Payload::Cut => 0,
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (n, v) in response
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("connection"))
    {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {len}\r\n"));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if head_only {
        out.flush()?;
        return Ok(true);
    }
    match response.payload {
        Payload::Cut => return Ok(false),
        Payload::Bytes(b) => out.write_all(&b)?,
        Payload::File(f) => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            let limit = f.drop_after.map_or(f.len, |d| d.min(f.len));
            while sent < limit {
                let n = ((limit - sent) as usize).min(buf.len());
                let got = f.file.read_at(&mut buf[..n], f.offset + sent)?;
                let chunk = if got == 0 {
                    // Past the end of a sparse file: zeros.
                    buf[..n].fill(0);
                    n
                } else {
                    got
                };
                (f.on_sent)(chunk as u64);
                out.write_all(&buf[..chunk])?;
                sent += chunk as u64;
            }
            if f.drop_after.is_some_and(|d| d < f.len) {
                out.flush()?;
                // Cut without close_notify: the client sees a dropped connection.
                let _ = out.sock.shutdown(Shutdown::Both);
                return Ok(false);
            }
        }
    }
    out.flush()?;
    Ok(true)
}
