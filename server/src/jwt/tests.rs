//! Token checks with real keys: ES256 and EdDSA from PEM and JWKS, HS256, leeway, nbf, iss, aud.

use super::*;
use crate::config::JwtPublicKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::path::PathBuf;

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
        temp_file(&self.key.public_key_pem())
    }

    /// This issuer's public key, as `jwt_public_keys` takes it.
    fn as_public_key(&self) -> Vec<JwtPublicKey> {
        let alg = if self.alg == Algorithm::ES256 {
            "ES256"
        } else {
            "EdDSA"
        };
        vec![JwtPublicKey {
            alg: alg.into(),
            pem_file: self.pem_file(),
            kid: None,
        }]
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

/// A file holding `contents` in the system temp dir (kept: the verifier reads it by path).
fn temp_file(contents: &str) -> PathBuf {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
    f.into_temp_path().keep().unwrap()
}

#[test]
fn es256_from_a_pem_file_and_no_hs256_without_a_secret() {
    let es = Issuer::new(Algorithm::ES256);
    let v = TokenVerifier::from_config(&Config {
        jwt_public_keys: es.as_public_key(),
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
        jwt_public_keys: es.as_public_key(),
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
    let path = temp_file(&jwks.to_string());
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
        jwt_public_keys: es.as_public_key(),
        jwt_leeway_sec: 30,
        jwt_issuer: Some("https://auth.example".into()),
        jwt_audience: Some("push".into()),
        ..config()
    })
    .unwrap();
    let token = |extra: serde_json::Value| {
        let mut c =
            json!({"sub": "bob", "exp": NOW + 60, "iss": "https://auth.example", "aud": "push"});
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
