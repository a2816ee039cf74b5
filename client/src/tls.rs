//! TLS for the SDK: certificates are always verified, against the public web roots
//! (webpki-roots) plus any CA the application adds (a private or self-signed one).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig as RustlsConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::ClientError;

/// How to reach a TLS server. There is no switch to skip verification: to trust a private
/// CA, add it with [`TlsOptions::with_ca_pem`].
///
/// The rustls configuration is built at the first connection and kept, with its session
/// ticket store, by these options and every clone of them: a reconnect through the same
/// options (what [`crate::Client`] does) resumes the TLS session instead of verifying the
/// certificate again, when the server issues tickets. Change the fields before the first
/// connection, or call [`TlsOptions::reset`] after.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Name the certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// Extra trusted CA certificates (DER).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Also trust the public web roots (default true).
    pub web_roots: bool,
    /// The built configuration, shared by clones (None until the first connection).
    built: Arc<Mutex<Option<Arc<RustlsConfig>>>>,
}

impl TlsOptions {
    /// Verify `server_name` against the public web roots.
    pub fn new(server_name: impl Into<String>) -> Self {
        TlsOptions {
            server_name: server_name.into(),
            extra_roots: Vec::new(),
            web_roots: true,
            built: Arc::default(),
        }
    }

    /// Forgets the built configuration and the session tickets (for these options and their
    /// clones): the next connection reads the fields again and makes a full handshake.
    pub fn reset(&self) {
        *self.built.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Also trust the CA certificates in this PEM text (e.g. a self-signed server's own).
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("CA PEM: {e}")))?;
            self.extra_roots.push(cert);
        }
        if self.extra_roots.is_empty() {
            return Err(ClientError::Tls("CA PEM holds no certificate".into()));
        }
        Ok(self)
    }

    fn config(&self) -> Result<Arc<RustlsConfig>, ClientError> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = built.as_ref() {
            return Ok(c.clone());
        }
        let config = self.build()?;
        *built = Some(config.clone());
        Ok(config)
    }

    /// A rustls configuration with rustls' in-memory session store (tickets of up to 256
    /// servers).
    fn build(&self) -> Result<Arc<RustlsConfig>, ClientError> {
        let mut roots = RootCertStore::empty();
        if self.web_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for c in &self.extra_roots {
            roots
                .add(c.clone())
                .map_err(|e| ClientError::Tls(format!("CA certificate rejected: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = RustlsConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Runs the TLS handshake over `tcp`, verifying the server's certificate (or resuming a
    /// session these options hold a ticket for).
    pub async fn connect(&self, tcp: TcpStream) -> Result<Stream, ClientError> {
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| ClientError::Tls(format!("server name {}: {e}", self.server_name)))?;
        let tls = tokio_rustls::TlsConnector::from(self.config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// The connection's byte stream: plain TCP or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
