//! The agent's HTTP server: a minimal HTTP/1.1 server for GET on tokio,
//! written here rather than taken from hyper. The agent answers three GET
//! routes with one response per connection (`Connection: close`), no
//! request bodies, no keep-alive, no TLS; the bounds that keep a flood from
//! taking it down (connections, request size, time per connection) are
//! explicit below, and nothing here parses more than a request line and
//! the end of the headers. hyper would bring its own stack of crates for
//! none of what it adds (keep-alive, pipelining, bodies, HTTP/2).
//!
//! Routes: `/metrics` (Prometheus), `/debug/pprof/goroutine?process=NAME`
//! or `?pid=PID` (Go's goroutine profile), `/report.json?pid=PID` (the
//! latest sample, grouped as `gotrace snapshot --json` prints it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::host::{Shared, lock};
use super::metrics::{self, HttpStats};
use super::watch::Sample;

/// The `reason` label of `gotrace_agent_http_rejected_total`.
pub const REJECT_REASONS: [&str; 4] = ["busy", "too_large", "timeout", "bad_request"];

/// The server's bounds.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more are answered 503 at once and
    /// closed.
    pub max_connections: usize,
    /// Bytes of request line and headers; a longer request gets 431.
    pub max_request_bytes: usize,
    /// Time to read the request and write the response.
    pub timeout: Duration,
}

/// What the handlers read.
pub struct Server {
    pub shared: Shared,
    pub stats: Arc<Mutex<HttpStats>>,
    pub limits: HttpLimits,
    pub pid_label: bool,
}

impl Server {
    fn reject(&self, reason: &'static str) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *s.rejected.entry(reason).or_insert(0) += 1;
    }

    fn answered(&self) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests += 1;
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(_) => {
                // Out of file descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let limit = server.limits.timeout;
                    if tokio::time::timeout(limit, handle(sock, &server))
                        .await
                        .is_err()
                    {
                        server.reject("timeout");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                server.reject("busy");
                // One non-blocking write, no task: a flood costs no memory.
                let _ = sock.try_write(&response(503, "text/plain", b"busy\n"));
            }
        }
    }
}

/// Reads one request and answers it.
async fn handle(mut sock: TcpStream, server: &Server) {
    let head = match read_head(&mut sock, server.limits.max_request_bytes).await {
        Ok(h) => h,
        Err(status) => {
            server.reject(if status == 431 {
                "too_large"
            } else {
                "bad_request"
            });
            let _ = sock
                .write_all(&response(status, "text/plain", b"bad request\n"))
                .await;
            return;
        }
    };
    let resp = route(&head, server);
    server.answered();
    let _ = sock.write_all(&resp).await;
    let _ = sock.shutdown().await;
}

/// The request line, once the headers ended; an error status otherwise.
async fn read_head(sock: &mut TcpStream, max: usize) -> Result<String, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > max {
            return Err(431);
        }
    }
    if buf.len() > max {
        return Err(431);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// The response to request line `line`.
fn route(line: &str, server: &Server) -> Vec<u8> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return response(400, "text/plain", b"bad request\n");
    };
    if method != "GET" {
        return response(405, "text/plain", b"only GET\n");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => {
            let stats = server
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let text = metrics::render(&lock(&server.shared), &stats, server.pid_label);
            response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
            )
        }
        "/debug/pprof/goroutine" => match pick(server, query) {
            Ok(s) => response(
                200,
                "application/octet-stream",
                &super::profile::goroutines(&s),
            ),
            Err(resp) => resp,
        },
        "/report.json" => match pick(server, query) {
            Ok(s) => match serde_json::to_vec_pretty(&s.report) {
                Ok(body) => response(200, "application/json", &body),
                Err(_) => response(500, "text/plain", b"cannot encode\n"),
            },
            Err(resp) => resp,
        },
        "/" => response(200, "text/plain", INDEX.as_bytes()),
        _ => response(404, "text/plain", b"not found\n"),
    }
}

const INDEX: &str = "gotrace agent\n\
/metrics                                  Prometheus metrics\n\
/debug/pprof/goroutine?process=NAME|pid=PID  goroutine profile (go tool pprof)\n\
/report.json?pid=PID                      the latest sample, grouped\n";

/// The latest sample of the process `query` names (`pid=PID`, or
/// `process=NAME`: the lowest PID running it); an error response otherwise.
fn pick(server: &Server, query: &str) -> Result<Arc<Sample>, Vec<u8>> {
    let mut pid = None;
    let mut name = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("pid", v)) => {
                pid = Some(
                    v.parse::<u32>()
                        .map_err(|_| response(400, "text/plain", b"pid must be a number\n"))?,
                )
            }
            Some(("process", v)) => name = Some(percent_decode(v)),
            _ => {}
        }
    }
    if pid.is_none() && name.is_none() {
        return Err(response(
            400,
            "text/plain",
            b"say pid=PID or process=NAME\n",
        ));
    }
    let p = lock(&server.shared);
    p.samples
        .values()
        .find(|s| pid.is_none_or(|p| s.pid == p) && name.as_ref().is_none_or(|n| &s.name == n))
        .cloned()
        .ok_or_else(|| response(404, "text/plain", b"no such watched process\n"))
}

/// `%XX` and `+` of a query value decoded (bad escapes kept as they are).
pub fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let hex = |i: usize| {
        let h = b.get(i..i + 2)?;
        u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(i + 1)) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(c)) => {
                out.push(c);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("my%20app+x"), "my app x");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn responses_say_their_length() {
        let r = String::from_utf8(response(404, "text/plain", b"x\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.contains("Content-Length: 2\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nx\n"), "{r}");
    }
}
