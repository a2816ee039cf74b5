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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rejected(e.to_string()))?;
        Ok(Arc::new(config))
    }
}
