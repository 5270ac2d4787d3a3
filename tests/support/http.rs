//! A tiny HTTP/1.1 GET and HEAD, enough to follow download links as a
//! browser would (without following redirects), and to check them as a link
//! previewer does.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What came back.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `url` (`http://HOST:PORT/PATH`).
pub async fn get(url: &str) -> Answer {
    request("GET", url).await
}

/// Sends HEAD to `url`, as a mail scanner or link previewer would.
pub async fn head(url: &str) -> Answer {
    request("HEAD", url).await
}

/// GETs `url` with extra request headers (`Range: bytes=0-99`, ...).
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    request_with("GET", url, headers).await
}

/// Sends `method` to `url` and reads the whole answer.
async fn request(method: &str, url: &str) -> Answer {
    request_with(method, url, &[]).await
}

/// Sends `method` to `url` with `headers` and reads the whole answer.
async fn request_with(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .unwrap_or_else(|_| panic!("not HOST:PORT: {authority}"));
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: csp-tests/1.0\r\n{extra}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("cannot send to {addr}: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("cannot read from {addr}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}
