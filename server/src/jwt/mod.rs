//! Client tokens (JWT) as the server checks them: HS256 with the shared `jwt_secret`, and
//! RS256/RS384/RS512, PS256/PS384/PS512, ES256/ES384 and EdDSA with public keys from PEM files
//! or a JWKS file, so the service that issues tokens need not share a secret with the push
//! server. Each key accepts exactly one algorithm (no algorithm confusion); `exp` and `nbf` are
//! checked against the time passed in, with leeway for clock skew; `iss` and `aud` when
//! configured. Public-key signatures are checked by the `jsonwebtoken` crate; HS256 by the
//! protocol crate's own check (fuzzed), because through the crate every handshake cost 3.2 us
//! instead of 1.4 us and its short-lived allocations left about 30 B more RSS per idle
//! connection (BENCHMARKS.md, idle 18,000).

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use push_protocol::token::{check_claims, Claims, TokenError};
use serde::Deserialize;

use crate::config::Config;

mod keys;

pub(crate) use keys::KeyError;
use keys::{Key, Material};

/// `aud`: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims this server reads (one struct, no flattening: fewer allocations per handshake).
#[derive(Deserialize)]
struct Checked {
    sub: String,
    exp: u64,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
}

/// Verifies client tokens with every configured key.
pub struct TokenVerifier {
    keys: Vec<Key>,
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenVerifier {
    /// Loads every configured key: `jwt_secret` (HS256, unless empty), `jwt_public_keys`,
    /// `jwt_jwks_file`.
    pub fn from_config(c: &Config) -> Result<TokenVerifier, KeyError> {
        let keys = keys::load(c)?;
        Ok(TokenVerifier {
            keys,
            leeway: c.jwt_leeway_sec,
            issuer: c.jwt_issuer.clone(),
            audience: c.jwt_audience.clone(),
        })
    }

    /// Verifies `token` at `now_secs` and returns its claims.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        if let [Key {
            key: Material::Hs256(secret),
            ..
        }] = self.keys.as_slice()
        {
            // The common setup: no header parse beyond the one the HS256 check makes.
            return self.verify_hs256(secret, token, now_secs);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("header is not base64url JSON with alg"))?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut last = TokenError::Signature;
        for key in candidates {
            let verified = match &key.key {
                Material::Hs256(secret) => self.verify_hs256(secret, token, now_secs),
                Material::Public(public) => self.verify_with(key.alg, public, token, now_secs),
            };
            match verified {
                Err(TokenError::Signature) => last = TokenError::Signature,
                other => return other,
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // Time is checked below against the time passed in, not the system clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims = HashSet::new();
        v.validate_aud = self.audience.is_some();
        if let Some(a) = &self.audience {
            v.set_audience(&[a]);
            v.required_spec_claims.insert("aud".into());
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
            v.required_spec_claims.insert("iss".into());
        }
        v
    }

    fn verify_hs256(&self, secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
        let body = push_protocol::token::verify_signature(secret, token)?;
        let checked: Checked =
            serde_json::from_slice(&body).map_err(|e| TokenError::Claim(e.to_string()))?;
        if let Some(want) = &self.issuer {
            match &checked.iss {
                Some(iss) if iss == want => {}
                Some(_) => return Err(TokenError::Claim("iss is not the expected issuer".into())),
                None => return Err(TokenError::Claim("iss is missing".into())),
            }
        }
        if let Some(want) = &self.audience {
            let ok = match &checked.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(list)) => list.iter().any(|a| a == want),
                None => return Err(TokenError::Claim("aud is missing".into())),
            };
            if !ok {
                return Err(TokenError::Claim("aud is not the expected audience".into()));
            }
        }
        self.finish(checked, now)
    }

    fn verify_with(
        &self,
        alg: Algorithm,
        key: &DecodingKey,
        token: &str,
        now: u64,
    ) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Checked>(token, key, &self.validation(alg)).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidIssuer => {
                    TokenError::Claim("iss is not the expected issuer".into())
                }
                ErrorKind::InvalidAudience => {
                    TokenError::Claim("aud is not the expected audience".into())
                }
                ErrorKind::MissingRequiredClaim(c) => TokenError::Claim(format!("{c} is missing")),
                ErrorKind::Json(e) => TokenError::Claim(e.to_string()),
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{alg:?}")),
                _ => TokenError::Malformed("not a well-formed JWT"),
            },
        )?;
        self.finish(data.claims, now)
    }

    /// `nbf`, `exp` (with leeway) and the claims' sizes, once the signature is good.
    fn finish(&self, c: Checked, now: u64) -> Result<Claims, TokenError> {
        if let Some(nbf) = c.nbf {
            if nbf > now.saturating_add(self.leeway) {
                return Err(TokenError::NotYetValid { nbf, now });
            }
        }
        let claims = Claims {
            sub: c.sub,
            exp: c.exp,
            device: c.device,
            rooms: c.rooms,
        };
        check_claims(&claims, now, self.leeway)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests;
