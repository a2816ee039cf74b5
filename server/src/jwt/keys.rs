//! The keys client tokens are checked with: the HS256 secret, public keys from PEM files, a
//! JWKS file; each pinned to one algorithm and checked when loaded.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{Config, JwtPublicKey};

/// Why the token keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A key is unusable.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which key.
        what: String,
        /// Why.
        reason: String,
    },
}

/// How a key checks signatures.
pub(super) enum Material {
    /// HS256 with the shared secret, checked by `push_protocol::token`.
    Hs256(Vec<u8>),
    /// A public key, checked by `jsonwebtoken`.
    Public(DecodingKey),
}

pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: Material,
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: impl Into<String>, reason: impl ToString) -> KeyError {
    KeyError::Invalid {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn pem_key(k: &JwtPublicKey) -> Result<Key, KeyError> {
    let what = format!("jwt_public_keys {}", k.pem_file.display());
    let alg = Algorithm::from_str(&k.alg).map_err(|_| invalid(&what, "unknown alg"))?;
    let pem = read(&k.pem_file)?;
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err(invalid(
                &what,
                "HMAC keys are not public keys; use jwt_secret",
            ))
        }
    }
    .map_err(|e| invalid(&what, e))?;
    Ok(Key {
        kid: k.kid.clone(),
        alg,
        key: Material::Public(key),
    })
}

fn jwks_keys(path: &Path) -> Result<Vec<Key>, KeyError> {
    let what = format!("jwt_jwks_file {}", path.display());
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| invalid(&what, e))?;
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let what = format!("{what}, key {i}");
            // Pinning: a JWK without `alg` could be used with any algorithm of its type.
            let alg = jwk
                .common
                .key_algorithm
                .ok_or_else(|| invalid(&what, "every key needs an \"alg\""))?;
            let alg = Algorithm::from_str(&alg.to_string()).map_err(|e| invalid(&what, e))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(invalid(&what, "symmetric keys are not accepted from JWKS"));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(&what, e))?;
            Ok(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: Material::Public(key),
            })
        })
        .collect()
}

/// Every configured key: `jwt_secret` (HS256, unless empty, or the development secret while
/// public keys are configured), `jwt_public_keys`, `jwt_jwks_file`.
pub(super) fn load(c: &Config) -> Result<Vec<Key>, KeyError> {
    let mut keys = Vec::new();
    let public = !c.jwt_public_keys.is_empty() || c.jwt_jwks_file.is_some();
    // The built-in development secret is public knowledge: once real keys are configured
    // it must not keep accepting tokens anyone can mint.
    let dev_secret = c.jwt_secret == crate::config::DEV_JWT_SECRET;
    if public && dev_secret {
        tracing::info!("public token keys configured: HS256 with the development secret is off");
    }
    let dev_secret_off = public && dev_secret;
    let hs256 = !c.jwt_secret.is_empty() && !dev_secret_off;
    if hs256 {
        keys.push(Key {
            kid: None,
            alg: Algorithm::HS256,
            key: Material::Hs256(c.jwt_secret.as_bytes().to_vec()),
        });
    }
    for k in &c.jwt_public_keys {
        keys.push(pem_key(k)?);
    }
    if let Some(path) = &c.jwt_jwks_file {
        keys.extend(jwks_keys(path)?);
    }
    if keys.is_empty() {
        return Err(invalid(
            "client tokens",
            "no key: set jwt_secret, jwt_public_keys or jwt_jwks_file",
        ));
    }
    Ok(keys)
}
