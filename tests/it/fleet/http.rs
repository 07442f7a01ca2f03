//! A minimal HTTP/1.1 client over `TcpStream` with a cookie jar: what a
//! browser does that matters here (keep-alive, cookies, retrying a request
//! whose reused connection the server had closed), and nothing else.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The `name=value` pairs of every Set-Cookie header.
    pub fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| {
                let pair = v.split(';').next()?;
                let (n, v) = pair.split_once('=')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }
    /// The node that served it (X-Node of the test web server).
    pub fn node(&self) -> &str {
        self.header("x-node").unwrap_or("-")
    }
    pub fn release(&self) -> &str {
        self.header("x-release").unwrap_or("-")
    }
}

/// One user agent: a connection kept alive between requests and a cookie jar.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    pub jar: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Requests re-sent because a kept-alive connection was closed under them.
    pub retries: u64,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None, jar: BTreeMap::new(), timeout: Duration::from_secs(10), retries: 0 }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    /// Forgets the connection (the next request opens a new one).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// GET `path`, sending the jar's cookies and storing the ones set.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            // A server may close an idle kept-alive connection just as we
            // send; a browser re-sends an idempotent request once then.
            Err(e) if reused && is_stale_connection(&e) => {
                self.conn = None;
                self.retries += 1;
                self.try_get(path)
            }
            r => r,
        }
    }

    fn try_get(&mut self, path: &str) -> io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let result = self.exchange(path);
        match &result {
            Ok(r) if !r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) => {}
            _ => self.conn = None,
        }
        let r = result?;
        for (name, value) in r.set_cookies() {
            self.jar.insert(name, value);
        }
        Ok(r)
    }

    fn exchange(&mut self, path: &str) -> io::Result<Response> {
        let conn = self.conn.as_mut().expect("connected");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: drover-test\r\n", self.addr);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        req.push_str("\r\n");
        match conn.get_mut().write_all(req.as_bytes()) {
            Err(e) if is_reset(&e) => return Err(stale()),
            r => r?,
        }
        read_response(conn)
    }
}

const STALE: &str = "connection closed before the response";

fn stale() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, STALE)
}

/// Closed or reset before the first byte of the response.
fn is_stale_connection(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof && e.to_string() == STALE
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted)
}

fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<Response> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Err(stale()),
        Err(e) if is_reset(&e) => return Err(stale()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad(format!("bad header {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find =
        |n: &str| headers.iter().find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One GET on a fresh connection, no cookies.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Client::new(addr);
    c.timeout = Duration::from_secs(5);
    let r = c.get(path);
    c.disconnect();
    r
}
