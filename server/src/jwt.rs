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
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use push_protocol::token::{check_claims, Claims, TokenError};
use serde::Deserialize;

use crate::config::Config;

/// A public key for verifying client tokens (`[[jwt_public_keys]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPublicKey {
    /// The one algorithm this key verifies: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384 or EdDSA.
    pub alg: String,
    /// PEM file with the public key (RSA, EC or Ed25519; SubjectPublicKeyInfo or PKCS#1).
    pub pem_file: PathBuf,
    /// Key id: when set, only tokens whose header names this `kid` (or none) use the key.
    #[serde(default)]
    pub kid: Option<String>,
}

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
enum Material {
    /// HS256 with the shared secret, checked by `push_protocol::token`.
    Hs256(Vec<u8>),
    /// A public key, checked by `jsonwebtoken`.
    Public(DecodingKey),
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: Material,
}

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

impl TokenVerifier {
    /// Loads every configured key: `jwt_secret` (HS256, unless empty), `jwt_public_keys`,
    /// `jwt_jwks_file`.
    pub fn from_config(c: &Config) -> Result<TokenVerifier, KeyError> {
        let mut keys = Vec::new();
        let public = !c.jwt_public_keys.is_empty() || c.jwt_jwks_file.is_some();
        // The built-in development secret is public knowledge: once real keys are configured
        // it must not keep accepting tokens anyone can mint.
        let dev_secret = c.jwt_secret == crate::config::DEV_JWT_SECRET;
        if public && dev_secret {
            tracing::info!(
                "public token keys configured: HS256 with the development secret is off"
            );
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
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    struct Issuer {
        alg: Algorithm,
        key: rcgen::KeyPair,
    }

    impl Issuer {
        fn new(alg: Algorithm) -> Issuer {
            let which = match alg {
                Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                _ => &rcgen::PKCS_ED25519,
            };
            Issuer {
                alg,
                key: rcgen::KeyPair::generate_for(which).unwrap(),
            }
        }

        fn sign(&self, kid: Option<&str>, claims: serde_json::Value) -> String {
            let pem = self.key.serialize_pem();
            let key = match self.alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
                _ => EncodingKey::from_ed_pem(pem.as_bytes()),
            }
            .unwrap();
            let header = Header {
                kid: kid.map(str::to_string),
                ..Header::new(self.alg)
            };
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }

        fn pem_file(&self) -> PathBuf {
            let path = std::env::temp_dir().join(format!(
                "push-jwt-{}.pem",
                crate::delivery::ids::random_u64()
            ));
            std::fs::write(&path, self.key.public_key_pem()).unwrap();
            path
        }

        fn jwk(&self, kid: &str, with_alg: bool) -> serde_json::Value {
            let raw = self.key.public_key_raw();
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            let mut jwk = match self.alg {
                // Uncompressed point: 0x04 || x || y.
                Algorithm::ES256 => json!({"kty": "EC", "crv": "P-256",
                    "x": b64(&raw[1..33]), "y": b64(&raw[33..65]), "alg": "ES256"}),
                _ => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "alg": "EdDSA"}),
            };
            jwk["kid"] = json!(kid);
            if !with_alg {
                jwk.as_object_mut().unwrap().remove("alg");
            }
            jwk
        }
    }

    fn config() -> Config {
        Config {
            jwt_secret: String::new(),
            ..Config::default()
        }
    }

    fn claims(exp: u64) -> serde_json::Value {
        json!({"sub": "alice", "exp": exp})
    }

    #[test]
    fn es256_from_a_pem_file_and_no_hs256_without_a_secret() {
        let es = Issuer::new(Algorithm::ES256);
        let v = TokenVerifier::from_config(&Config {
            jwt_public_keys: vec![JwtPublicKey {
                alg: "ES256".into(),
                pem_file: es.pem_file(),
                kid: None,
            }],
            ..config()
        })
        .unwrap();
        let c = v.verify(&es.sign(None, claims(NOW + 60)), NOW).unwrap();
        assert_eq!(c.sub, "alice");
        // HS256 is off without a secret, whatever the token's signature.
        let hs = push_protocol::token::mint(
            b"any-secret-at-all-0123",
            &Claims {
                sub: "alice".into(),
                exp: NOW + 60,
                device: None,
                rooms: vec![],
            },
        );
        assert!(matches!(v.verify(&hs, NOW), Err(TokenError::Algorithm(_))));
        // With public keys, the built-in development secret does not stay on by default.
        let with_dev_secret = TokenVerifier::from_config(&Config {
            jwt_public_keys: vec![JwtPublicKey {
                alg: "ES256".into(),
                pem_file: es.pem_file(),
                kid: None,
            }],
            ..Config::default()
        })
        .unwrap();
        let dev = push_protocol::token::mint(
            crate::config::DEV_JWT_SECRET.as_bytes(),
            &Claims {
                sub: "mallory".into(),
                exp: NOW + 60,
                device: None,
                rooms: vec![],
            },
        );
        assert!(matches!(
            with_dev_secret.verify(&dev, NOW),
            Err(TokenError::Algorithm(_))
        ));
        // Another ES256 key's token does not verify.
        let other = Issuer::new(Algorithm::ES256);
        assert_eq!(
            v.verify(&other.sign(None, claims(NOW + 60)), NOW),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn eddsa_from_a_jwks_file_by_kid() {
        let ed = Issuer::new(Algorithm::EdDSA);
        let es = Issuer::new(Algorithm::ES256);
        let jwks = json!({"keys": [ed.jwk("ed-1", true), es.jwk("es-1", true)]});
        let path = std::env::temp_dir().join(format!(
            "push-jwks-{}.json",
            crate::delivery::ids::random_u64()
        ));
        std::fs::write(&path, jwks.to_string()).unwrap();
        let v = TokenVerifier::from_config(&Config {
            jwt_jwks_file: Some(path.clone()),
            ..config()
        })
        .unwrap();
        assert!(v
            .verify(&ed.sign(Some("ed-1"), claims(NOW + 5)), NOW)
            .is_ok());
        assert!(v
            .verify(&es.sign(Some("es-1"), claims(NOW + 5)), NOW)
            .is_ok());
        // A kid the set does not hold: no key for it.
        assert!(matches!(
            v.verify(&ed.sign(Some("ed-2"), claims(NOW + 5)), NOW),
            Err(TokenError::Algorithm(_))
        ));
        // A key without "alg" is refused at startup (alg is pinned per key).
        std::fs::write(&path, json!({"keys": [ed.jwk("ed-1", false)]}).to_string()).unwrap();
        let e = TokenVerifier::from_config(&Config {
            jwt_jwks_file: Some(path),
            ..config()
        })
        .err()
        .expect("refused")
        .to_string();
        assert!(e.contains("alg"), "{e}");
    }

    #[test]
    fn leeway_nbf_issuer_and_audience() {
        let es = Issuer::new(Algorithm::ES256);
        let v = TokenVerifier::from_config(&Config {
            jwt_public_keys: vec![JwtPublicKey {
                alg: "ES256".into(),
                pem_file: es.pem_file(),
                kid: None,
            }],
            jwt_leeway_sec: 30,
            jwt_issuer: Some("https://auth.example".into()),
            jwt_audience: Some("push".into()),
            ..config()
        })
        .unwrap();
        let token = |extra: serde_json::Value| {
            let mut c = json!({"sub": "bob", "exp": NOW + 60, "iss": "https://auth.example", "aud": "push"});
            for (k, val) in extra.as_object().unwrap() {
                c[k] = val.clone();
            }
            es.sign(None, c)
        };
        assert!(v.verify(&token(json!({})), NOW).is_ok());
        // Expired 10 s ago: within the leeway. 100 s ago: expired.
        assert!(v.verify(&token(json!({"exp": NOW - 10})), NOW).is_ok());
        assert!(matches!(
            v.verify(&token(json!({"exp": NOW - 100})), NOW),
            Err(TokenError::Expired { .. })
        ));
        assert!(v.verify(&token(json!({"nbf": NOW + 10})), NOW).is_ok());
        assert!(matches!(
            v.verify(&token(json!({"nbf": NOW + 100})), NOW),
            Err(TokenError::NotYetValid { .. })
        ));
        assert!(matches!(
            v.verify(&token(json!({"aud": "someone-else"})), NOW),
            Err(TokenError::Claim(_))
        ));
        assert!(matches!(
            v.verify(&token(json!({"iss": "https://evil.example"})), NOW),
            Err(TokenError::Claim(_))
        ));
        let no_iss = es.sign(None, json!({"sub": "bob", "exp": NOW + 60, "aud": "push"}));
        assert!(matches!(v.verify(&no_iss, NOW), Err(TokenError::Claim(_))));
    }

    #[test]
    fn hs256_honours_leeway_nbf_issuer_and_audience_too() {
        let v = TokenVerifier::from_config(&Config {
            jwt_issuer: Some("auth".into()),
            jwt_audience: Some("push".into()),
            ..Config::default()
        })
        .unwrap();
        let sign = |claims: serde_json::Value| {
            let key = EncodingKey::from_secret(crate::config::DEV_JWT_SECRET.as_bytes());
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let ok = json!({"sub": "dan", "exp": NOW - 10, "iss": "auth", "aud": ["x", "push"]});
        assert_eq!(v.verify(&sign(ok), NOW).unwrap().sub, "dan");
        let wrong_aud = json!({"sub": "dan", "exp": NOW + 60, "iss": "auth", "aud": "x"});
        assert!(matches!(
            v.verify(&sign(wrong_aud), NOW),
            Err(TokenError::Claim(_))
        ));
        let no_iss = json!({"sub": "dan", "exp": NOW + 60, "aud": "push"});
        assert!(matches!(
            v.verify(&sign(no_iss), NOW),
            Err(TokenError::Claim(_))
        ));
        let early =
            json!({"sub": "dan", "exp": NOW + 600, "nbf": NOW + 100, "iss": "auth", "aud": "push"});
        assert!(matches!(
            v.verify(&sign(early), NOW),
            Err(TokenError::NotYetValid { .. })
        ));
    }

    #[test]
    fn hs256_with_the_secret_keeps_working_and_sizes_are_checked() {
        let v = TokenVerifier::from_config(&Config::default()).unwrap();
        let mint = |sub: &str| {
            push_protocol::token::mint(
                crate::config::DEV_JWT_SECRET.as_bytes(),
                &Claims {
                    sub: sub.into(),
                    exp: NOW + 60,
                    device: None,
                    rooms: vec![],
                },
            )
        };
        assert_eq!(v.verify(&mint("carol"), NOW).unwrap().sub, "carol");
        assert!(matches!(
            v.verify(&mint(""), NOW),
            Err(TokenError::Claim(_))
        ));
        assert!(matches!(
            v.verify("not.a.jwt", NOW),
            Err(TokenError::Malformed(_))
        ));
    }
}
