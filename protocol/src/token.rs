//! HS256 JSON Web Tokens as carried in HELLO (SPEC.md §5.1): verification and minting.
//!
//! Only HS256 is accepted; the header's `alg` is checked before the signature so `none` and
//! algorithm-confusion tokens fail early with a precise reason.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ErrorCode;

type HmacSha256 = Hmac<Sha256>;

/// Longest user id accepted in `sub`.
pub const MAX_USER_LEN: usize = 128;
/// Longest device id accepted in `device`.
pub const MAX_DEVICE_LEN: usize = 64;

/// Claims this server reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Optional device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Restricted rooms this user may join: exact names, or prefixes ending in `*`
    /// (`"team:42:*"`). Rooms outside the server's restricted prefixes need no grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
}

/// Most room grants in one token.
pub const MAX_ROOM_GRANTS: usize = 64;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a part is not JSON.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not one this server has a key for.
    #[error("token algorithm {0:?} is not accepted by this server")]
    Algorithm(String),
    /// `nbf` is in the future.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// Server time.
        now: u64,
    },
    /// Signature does not verify with the configured secret.
    #[error("token signature does not verify")]
    Signature,
    /// A claim is missing or has the wrong type or value.
    #[error("token claim invalid: {0}")]
    Claim(String),
    /// `exp` is in the past.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// Server time.
        now: u64,
    },
}

impl TokenError {
    /// The wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired { .. } => ErrorCode::TOKEN_EXPIRED,
            _ => ErrorCode::TOKEN_INVALID,
        }
    }

    /// The reason to tell the client: as `Display`, but without the server's clock.
    pub fn public_reason(&self) -> String {
        match self {
            TokenError::Expired { .. } => "token expired".to_string(),
            TokenError::NotYetValid { .. } => "token not valid yet (nbf)".to_string(),
            other => other.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Signs `claims` as an HS256 JWT.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{body}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies an HS256 JWT against `secret` at time `now_secs` and returns its claims.
pub fn verify(secret: &[u8], token: &str, now_secs: u64) -> Result<Claims, TokenError> {
    let body = verify_signature(secret, token)?;
    let claims: Claims =
        serde_json::from_slice(&body).map_err(|e| TokenError::Claim(e.to_string()))?;
    check_claims(&claims, now_secs, 0)?;
    Ok(claims)
}

/// Checks an HS256 JWT's header and signature against `secret` and returns the claims part,
/// decoded (JSON), for the caller to read.
pub fn verify_signature(secret: &[u8], token: &str) -> Result<Vec<u8>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: JwtHeader = serde_json::from_slice(&header_json)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(b.as_bytes());
    // verify_slice compares in constant time.
    m.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    URL_SAFE_NO_PAD
        .decode(b)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))
}

/// Checks the claims' sizes and `exp` (with `leeway_secs` for clock skew) at `now_secs`:
/// what every verifier checks once the signature is good.
pub fn check_claims(claims: &Claims, now_secs: u64, leeway_secs: u64) -> Result<(), TokenError> {
    if claims.sub.is_empty() || claims.sub.len() > MAX_USER_LEN {
        return Err(TokenError::Claim(format!(
            "sub must be 1..={MAX_USER_LEN} bytes"
        )));
    }
    if claims
        .device
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DEVICE_LEN)
    {
        return Err(TokenError::Claim(format!(
            "device must be at most {MAX_DEVICE_LEN} bytes"
        )));
    }
    if claims.rooms.len() > MAX_ROOM_GRANTS || claims.rooms.iter().any(|r| r.len() > 255) {
        return Err(TokenError::Claim(format!(
            "rooms must list at most {MAX_ROOM_GRANTS} names of at most 255 bytes"
        )));
    }
    if claims.exp.saturating_add(leeway_secs) <= now_secs {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            device: Some("phone".into()),
            rooms: vec!["team:1:*".into()],
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let t = mint(SECRET, &claims(2000));
        assert_eq!(verify(SECRET, &t, 1000).unwrap(), claims(2000));
    }

    #[test]
    fn refusals_have_precise_reasons() {
        let t = mint(SECRET, &claims(2000));
        assert_eq!(
            verify(b"other-secret-xxxxx", &t, 1000),
            Err(TokenError::Signature)
        );
        assert!(matches!(
            verify(SECRET, &t, 2000),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(
            verify(SECRET, &t, 2000).unwrap_err().code(),
            ErrorCode::TOKEN_EXPIRED
        );
        assert!(matches!(
            verify(SECRET, "a.b", 0),
            Err(TokenError::Malformed(_))
        ));
        // alg none with an empty signature.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let body = t.split('.').nth(1).unwrap();
        let forged = format!("{none_header}.{body}.");
        assert_eq!(
            verify(SECRET, &forged, 0),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn exp_of_the_wrong_type_is_a_claim_error() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":"9999999999"}"#);
        let input = format!("{header}.{body}");
        let mut m = mac(SECRET);
        m.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        let t = format!("{input}.{sig}");
        assert!(matches!(verify(SECRET, &t, 0), Err(TokenError::Claim(_))));
    }
}
