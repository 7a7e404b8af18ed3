//! The federated token file (workload identity, contract §1.3): read afresh for every token
//! request, because the kubelet rewrites it as it rotates the projected token.
//!
//! The read is bounded (a projected ServiceAccount token is about 1 KiB) and the token's
//! `exp` is checked before sending it: an expired token means the kubelet stopped refreshing
//! the file, which the provider's condition says in those words rather than as Entra's
//! AADSTS700024. The token itself never leaves this module except as a [`SecretString`].

use std::io::Read;
use std::path::Path;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::TokenError;
use crate::sensitive::SecretString;

/// Larger files are refused unread: no JWT a kubelet writes is this big.
pub(crate) const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// The token in `path`, trimmed; refused when missing, empty, oversized, not text, or
/// expired by its own `exp`.
pub(super) fn read(path: &Path) -> Result<SecretString, TokenError> {
    let unreadable = |message: String| TokenError::AssertionUnreadable {
        path: path.display().to_string(),
        message,
    };
    // A small local file: a blocking read is fine here.
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.kind().to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.kind().to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_BYTES {
        return Err(unreadable(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?;
    let jwt = SecretString::new(text.trim().to_string());
    if jwt.expose().is_empty() {
        return Err(unreadable("the file is empty".into()));
    }
    if let Some(exp) = expiry(jwt.expose()) {
        if exp <= chrono::Utc::now().timestamp() {
            return Err(TokenError::AssertionExpired {
                path: path.display().to_string(),
                expired_at: chrono::DateTime::from_timestamp(exp, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| exp.to_string()),
            });
        }
    }
    Ok(jwt)
}

/// The `exp` claim of a compact JWT, if it has a readable one. Anything else is left to
/// the provider to judge.
fn expiry(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt_with_exp(exp: i64) -> String {
        let enc = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            enc(serde_json::json!({"alg": "ES256"})),
            enc(serde_json::json!({"sub": "system:serviceaccount:a:b", "exp": exp}))
        )
    }

    #[test]
    fn a_current_token_is_read_trimmed() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let jwt = jwt_with_exp(chrono::Utc::now().timestamp() + 600);
        std::fs::write(f.path(), format!("{jwt}\n")).unwrap();
        assert_eq!(read(f.path()).unwrap().expose(), jwt);
    }

    #[test]
    fn missing_empty_oversized_and_expired_files_are_refused_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("azure-identity-token");
        let e = read(&missing).unwrap_err();
        assert_eq!(e.reason(), "FederatedTokenNotFound");
        assert!(e.to_string().contains("azure-identity-token"), "{e}");

        std::fs::write(&missing, "\n").unwrap();
        assert_eq!(read(&missing).unwrap_err().reason(), "FederatedTokenNotFound");

        std::fs::write(&missing, "a".repeat(MAX_TOKEN_BYTES as usize + 1)).unwrap();
        let e = read(&missing).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");

        let expired = jwt_with_exp(chrono::Utc::now().timestamp() - 60);
        std::fs::write(&missing, &expired).unwrap();
        let e = read(&missing).unwrap_err();
        assert_eq!(e.reason(), "FederatedTokenExpired");
        assert!(!e.to_string().contains(&expired), "{e}");
        assert!(!format!("{e:?}").contains(&expired));
    }

    #[test]
    fn a_token_without_a_readable_exp_is_left_to_the_provider() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not-a-jwt").unwrap();
        assert!(read(f.path()).is_ok());
    }
}
