//! A minimal keep-alive HTTP/1.1 client for the push API (publishing, the operator commands).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection to the HTTP API.
pub struct Http {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    /// A client for `addr`; connects lazily.
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// POSTs JSON with a bearer token; returns (status, body).
    pub async fn post(
        &mut self,
        path: &str,
        token: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        self.request("POST", path, token, body).await
    }

    /// GETs `path` with a bearer token; returns (status, body).
    pub async fn get(&mut self, path: &str, token: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path, token, "").await
    }

    /// DELETEs `path` with a bearer token; returns (status, body).
    pub async fn delete(&mut self, path: &str, token: &str) -> std::io::Result<(u16, String)> {
        self.request("DELETE", path, token, "").await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        match self.try_request(method, path, token, body).await {
            Ok(r) => Ok(r),
            Err(_) => {
                // The server may close idle keep-alive connections: reconnect once.
                self.stream = None;
                self.try_request(method, path, token, body).await
            }
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("just connected");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| std::io::Error::other("bad status line"))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + len;
                while self.buf.len() < total {
                    read_more(stream, &mut self.buf).await?;
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..total]).to_string();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            read_more(stream, &mut self.buf).await?;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
