//! A small HTTP/1.1 client: one request per connection, JSON bodies, and
//! streamed chunked answers. It serves the CLI (the management API) and
//! the cluster's etcd client (etcd's v3 JSON gateway), which need no more
//! than this; it carries no data.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// No connection to the address (nothing listening, unreachable,
    /// or the name does not resolve).
    Connect(String),
    /// The connection broke or timed out mid-request.
    Io(std::io::Error),
    /// The peer's answer is not HTTP/1.1 as this client reads it.
    Malformed(&'static str),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "{e}"),
            HttpError::Io(e) => write!(f, "connection failed: {e}"),
            HttpError::Malformed(what) => write!(f, "malformed HTTP answer: {what}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// A request: where, what, and how long to wait.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `host:port`.
    pub addr: &'a str,
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path and query.
    pub path: &'a str,
    /// A bearer token for `Authorization`, if any.
    pub token: Option<&'a str>,
    /// The JSON body (empty for none).
    pub body: &'a [u8],
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Limit on each read of the answer.
    pub read_timeout: Duration,
}

/// An answer whose body has been read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

fn resolve(addr: &str) -> Result<SocketAddr, HttpError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            HttpError::Connect(format!("`{addr}` is not an address like 127.0.0.1:2379"))
        })
}

/// An answer being read: its status, then its body piece by piece.
pub struct Streaming {
    status: u16,
    conn: BufReader<TcpStream>,
    framing: Framing,
}

enum Framing {
    Length(u64),
    Chunked { done: bool },
    UntilClose { done: bool },
}

/// Sends `req` and reads the status line and headers of the answer.
pub fn send(req: &Request<'_>) -> Result<Streaming, HttpError> {
    let addr = resolve(req.addr)?;
    let mut conn = TcpStream::connect_timeout(&addr, req.connect_timeout)
        .map_err(|e| HttpError::Connect(format!("cannot connect to {addr}: {e}")))?;
    conn.set_read_timeout(Some(req.read_timeout))?;
    conn.set_nodelay(true)?;
    let auth = req
        .token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.method,
        req.path,
        req.body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body);
    conn.write_all(&out)?;
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::Malformed("no status line"))?;
    let mut framing = Framing::UntilClose { done: false };
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(HttpError::Malformed("the headers end early"));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(HttpError::Malformed("a header without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| HttpError::Malformed("a bad Content-Length"))?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked { done: false };
        }
    }
    Ok(Streaming {
        status,
        conn,
        framing,
    })
}

impl Streaming {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Another handle on the connection (to shut it down from another
    /// thread, which ends a read that waits on it).
    pub fn socket(&self) -> std::io::Result<TcpStream> {
        self.conn.get_ref().try_clone()
    }

    /// The next piece of the body, or `None` at its end. A chunked body
    /// gives one chunk per call (a streaming answer's messages arrive as
    /// they are sent); a read that times out is an error.
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        match &mut self.framing {
            Framing::Length(left) => {
                if *left == 0 {
                    return Ok(None);
                }
                let mut buf = vec![0u8; (*left).min(1 << 20) as usize];
                self.conn.read_exact(&mut buf)?;
                *left -= buf.len() as u64;
                Ok(Some(buf))
            }
            Framing::Chunked { done } => {
                if *done {
                    return Ok(None);
                }
                let mut line = String::new();
                if self.conn.read_line(&mut line)? == 0 {
                    return Err(HttpError::Malformed("the chunked body ends early"));
                }
                let size = line.trim_end().split(';').next().unwrap_or("");
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| HttpError::Malformed("a bad chunk size"))?;
                if n == 0 {
                    // The last chunk, then trailers up to an empty line.
                    loop {
                        line.clear();
                        if self.conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    *done = true;
                    return Ok(None);
                }
                let mut buf = vec![0u8; n + 2];
                self.conn.read_exact(&mut buf)?;
                if &buf[n..] != b"\r\n" {
                    return Err(HttpError::Malformed("a chunk without its CRLF"));
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::UntilClose { done } => {
                if *done {
                    return Ok(None);
                }
                let mut buf = Vec::new();
                self.conn.read_to_end(&mut buf)?;
                *done = true;
                Ok(Some(buf))
            }
        }
    }

    /// The rest of the body, whole.
    pub fn read_all(mut self) -> Result<Response, HttpError> {
        let mut body = Vec::new();
        while let Some(p) = self.next_piece()? {
            body.extend_from_slice(&p);
        }
        Ok(Response {
            status: self.status,
            body,
        })
    }
}

/// Sends `req` and reads its whole answer.
pub fn call(req: &Request<'_>) -> Result<Response, HttpError> {
    send(req)?.read_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            c.write_all(answer).unwrap();
        });
        addr
    }

    fn req(addr: &str) -> Request<'_> {
        Request {
            addr,
            method: "POST",
            path: "/x",
            token: None,
            body: b"{}",
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn reads_length_chunked_and_close_framed_bodies() {
        let a = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = call(&req(&a)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

        let a = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{a}\r\n4;x=1\r\n{bc}\r\n0\r\nGrpc-Trailer-X: y\r\n\r\n",
        );
        let mut s = send(&req(&a)).unwrap();
        assert_eq!(s.next_piece().unwrap().unwrap(), b"{a}");
        assert_eq!(s.next_piece().unwrap().unwrap(), b"{bc}");
        assert!(s.next_piece().unwrap().is_none());

        let a = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\nnope");
        let r = call(&req(&a)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));

        let a = serve_once(b"garbage\r\n\r\n");
        assert!(matches!(call(&req(&a)), Err(HttpError::Malformed(_))));
        assert!(matches!(
            call(&req("not an address")),
            Err(HttpError::Connect(_))
        ));
    }
}
