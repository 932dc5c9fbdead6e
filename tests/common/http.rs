//! A small HTTP/1.1 client over real TCP for the lab's backends
//! (scripts/lab_http.py): which backend answered (`X-Backend`), how many
//! body bytes arrived, with the source address chosen when a test needs
//! the same flow twice.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub backend: String,
    /// Body bytes received (all of Content-Length, or the call failed).
    pub body_len: u64,
    /// The body when it is small (≤ 4 KiB).
    pub body: String,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Conn {
    /// Connects to `dst` (from `src` when given: address reuse on, so the
    /// same flow can be made again after `abort`).
    pub fn open(dst: SocketAddr, src: Option<SocketAddr>) -> io::Result<Conn> {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(src) = src {
            s.set_reuse_address(true)?;
            s.bind(&src.into())?;
        }
        s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_tcp_nodelay(true)?;
        Ok(Conn {
            stream: s.into(),
            buf: Vec::new(),
        })
    }

    /// One request: `upload` bytes of body (POST when > 0), the reply read
    /// whole; `on_chunk` sees each body chunk's size (to pace a download).
    pub fn request(
        &mut self,
        path: &str,
        upload: usize,
        close: bool,
        mut on_chunk: impl FnMut(usize),
    ) -> io::Result<Reply> {
        let method = if upload > 0 { "POST" } else { "GET" };
        let conn = if close { "close" } else { "keep-alive" };
        // One write: the request head in one segment.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: lethe\r\nConnection: {conn}\r\nContent-Length: {upload}\r\n\r\n"
        );
        self.stream.write_all(head.as_bytes())?;
        let chunk = vec![b'u'; 64 * 1024];
        let mut left = upload;
        while left > 0 {
            let n = left.min(chunk.len());
            self.stream.write_all(&chunk[..n])?;
            left -= n;
        }
        // Headers.
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill()? == 0 {
                return Err(err(format!(
                    "connection closed before the reply ({} bytes)",
                    self.buf.len()
                )));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| err(format!("bad status line in {head:?}")))?;
        let mut length = 0u64;
        let mut backend = String::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => {
                        length = v
                            .trim()
                            .parse()
                            .map_err(|_| err(format!("bad length {v}")))?
                    }
                    "x-backend" => backend = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        let mut got = 0u64;
        while got < length {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(err(format!(
                    "body cut short: {got} of {length} bytes from {backend}"
                )));
            }
            let n = (self.buf.len() as u64).min(length - got) as usize;
            if length <= 4096 {
                body.extend_from_slice(&self.buf[..n]);
            }
            self.buf.drain(..n);
            got += n as u64;
            on_chunk(n);
        }
        Ok(Reply {
            status,
            backend,
            body_len: got,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Closes with a reset (SO_LINGER 0): no TIME_WAIT, so the same source
    /// port can make the same flow again at once.
    pub fn abort(self) {
        let s = Socket::from(self.stream);
        let _ = s.set_linger(Some(Duration::ZERO));
    }
}

/// One connection, one `GET path`, closed by the server.
pub fn get(dst: SocketAddr, path: &str) -> io::Result<Reply> {
    let reply = Conn::open(dst, None)?.request(path, 0, true, |_| {})?;
    if reply.status != 200 {
        return Err(err(format!(
            "status {} from {}",
            reply.status, reply.backend
        )));
    }
    Ok(reply)
}
