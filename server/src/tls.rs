//! TLS settings: certificate chain and key from PEM files, rustls with the ring provider.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use serde::Deserialize;

/// `[tls]`: serve every listener (binary protocol, HTTP API, WebSocket) over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Session resumption with stateless tickets (default on): a client that reconnects
    /// with a ticket skips the certificate and its signature. The ticket keys are random per
    /// process and rotate every 6 hours, so tickets do not survive a restart or move between
    /// cluster nodes; resumption then falls back to a full handshake.
    #[serde(default = "on")]
    pub resumption: bool,
}

fn on() -> bool {
    true
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    File {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("certificate and key rejected: {0}")]
    Rejected(String),
}

impl TlsConfig {
    /// Loads the files into a rustls server configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let file_err = |what, path: &PathBuf, reason: String| TlsError::File {
            what,
            path: path.clone(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_err("certificate", &self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err("certificate", &self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_err(
                "certificate",
                &self.cert,
                "no CERTIFICATE block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| file_err("private key", &self.key, e.to_string()))?;
        let mut provider = rustls::crypto::ring::default_provider();
        // SHA-256 suites first, and the server's order wins: x86 CPUs with SHA-NI hash SHA-256
        // in hardware but SHA-384 (AES-256-GCM's suite) in software, which was 12% of the
        // server's CPU in a storm of TLS connects (BENCHMARKS.md, TLS round 2).
        provider
            .cipher_suites
            .sort_by_key(|s| s.suite().as_str().is_some_and(|n| n.ends_with("SHA384")));
        let provider = Arc::new(provider);
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rejected(e.to_string()))?;
        let mut config = config;
        config.ignore_client_order = true;
        // Binary-protocol connections hand their traffic secrets from rustls to their own
        // record layer after the handshake (session/records.rs).
        config.enable_secret_extraction = true;
        if self.resumption {
            // Stateless tickets: nothing is stored per client, unlike rustls' default
            // 256-entry session cache, which 10,000 reconnecting clients would churn through.
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsError::Rejected(format!("session tickets: {e}")))?;
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}
