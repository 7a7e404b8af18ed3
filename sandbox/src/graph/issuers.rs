//! Workload-identity issuers the emulator trusts, and the signature check of the client
//! assertions they sign (contract §1.3).
//!
//! Entra fetches `{issuer}/.well-known/openid-configuration` and its `jwks_uri` to verify a
//! federated assertion (azure-workload-identity "OpenID Connect Issuer" docs). The local
//! control plane serves those documents over TLS with its own per-start CA, so the emulator
//! does not fetch them: a test registers the issuer's JWKS through
//! `PUT /_emulator/issuers` ([`super::control`]) after reading it from the apiserver's
//! `/openid/v1/jwks`. Everything else about the check is Entra's: RS256 or ES256 only,
//! the key chosen by `kid`, and no signature means no token.
//!
//! [`TestIssuer`] signs assertions for tests that have no cluster.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey},
};
use serde_json::{json, Value};

/// At most this many issuers, keys per issuer, and bytes in an assertion.
pub(crate) const MAX_ISSUERS: usize = 64;
pub(crate) const MAX_KEYS: usize = 16;
pub(crate) const MAX_ASSERTION_BYTES: usize = 16 * 1024;
const MAX_ISSUER_CHARS: usize = 600;

/// One verification key of an issuer.
#[derive(Debug, Clone)]
pub(crate) struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum PublicKey {
    /// RS256: modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the uncompressed P-256 point `04 || x || y`.
    P256(Vec<u8>),
}

/// The registered issuers: issuer URL (compared exactly, as Entra compares a FIC's
/// `issuer`) → its keys.
pub(crate) type Issuers = BTreeMap<String, Vec<Jwk>>;

/// Why an assertion's signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No keys are registered for the issuer (Entra: its discovery document could not be read).
    UnknownIssuer,
    /// Unsupported `alg` (`none`, HS256, ...), or no key matches `kid`/`alg`, or the
    /// signature does not verify.
    Invalid(&'static str),
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Parse a JWKS document (`{"keys": [...]}`). Keys of other types or uses are skipped, as
/// a relying party does; an issuer with no usable key is an error.
pub(crate) fn parse_jwks(doc: &Value) -> Result<Vec<Jwk>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no \"keys\" array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("at most {MAX_KEYS} keys per issuer"));
    }
    let parsed: Vec<Jwk> = keys.iter().filter_map(parse_jwk).collect();
    if parsed.is_empty() {
        return Err("the JWKS has no RSA or P-256 signing key".into());
    }
    Ok(parsed)
}

fn parse_jwk(k: &Value) -> Option<Jwk> {
    let s = |name: &str| k.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let key = match s("kty")? {
        "RSA" => PublicKey::Rsa {
            n: b64(s("n")?)?,
            e: b64(s("e")?)?,
        },
        "EC" if s("crv")? == "P-256" => {
            let (x, y) = (b64(s("x")?)?, b64(s("y")?)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            PublicKey::P256(point)
        }
        _ => return None,
    };
    Some(Jwk {
        kid: s("kid").map(str::to_string),
        key,
    })
}

/// Whether `issuer` may be registered.
pub(crate) fn valid_issuer(issuer: &str) -> Result<(), String> {
    if issuer.is_empty() || issuer.chars().count() > MAX_ISSUER_CHARS {
        return Err(format!("issuer must be 1 to {MAX_ISSUER_CHARS} characters"));
    }
    if !issuer.starts_with("https://") {
        return Err("issuer must be an https URL".into());
    }
    Ok(())
}

/// Verify `jwt`'s signature with the keys registered for its issuer `iss`.
pub(crate) fn verify(issuers: &Issuers, iss: &str, jwt: &str) -> Result<(), SignatureError> {
    let keys = issuers.get(iss).ok_or(SignatureError::UnknownIssuer)?;
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::Invalid("not a compact JWS"));
    };
    let header: Value = b64(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(SignatureError::Invalid("unreadable header"))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let kid = header.get("kid").and_then(Value::as_str);
    let sig = b64(sig).ok_or(SignatureError::Invalid("unreadable signature"))?;
    let message = format!("{h}.{p}");
    let candidates = keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .filter(|k| {
            matches!(
                (&k.key, alg),
                (PublicKey::Rsa { .. }, "RS256") | (PublicKey::P256(_), "ES256")
            )
        });
    if !matches!(alg, "RS256" | "ES256") {
        return Err(SignatureError::Invalid("unsupported signing algorithm"));
    }
    let mut any = false;
    for k in candidates {
        any = true;
        let ok = match &k.key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message.as_bytes(), &sig)
                .is_ok(),
            PublicKey::P256(point) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &sig)
                .is_ok(),
        };
        if ok {
            return Ok(());
        }
    }
    Err(SignatureError::Invalid(if any {
        "signature verification failed"
    } else {
        "no key of the issuer matches the token's kid"
    }))
}

/// A local ES256 issuer for tests without a cluster: its JWKS and tokens it signs.
pub struct TestIssuer {
    issuer: String,
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TestIssuer {
    /// A new P-256 key for `issuer` (an https URL).
    ///
    /// # Panics
    /// When the system has no randomness.
    pub fn new(issuer: &str) -> TestIssuer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("the key just made");
        TestIssuer {
            issuer: issuer.to_string(),
            kid: uuid::Uuid::new_v4().to_string(),
            key,
            rng,
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS document of this issuer.
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
    }

    /// A token with these claims (`iss` is set to the issuer), signed ES256.
    pub fn sign(&self, mut claims: Value) -> String {
        claims["iss"] = self.issuer.clone().into();
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).expect("signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// A Kubernetes-style projected token for `system:serviceaccount:<ns>:<sa>` with audience
    /// `api://AzureADTokenExchange`, valid from now for `lifetime_secs` (negative: expired).
    pub fn service_account_token(&self, ns: &str, sa: &str, lifetime_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(json!({
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "aud": ["api://AzureADTokenExchange"],
            "iat": now, "nbf": now.min(now + lifetime_secs), "exp": now + lifetime_secs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(i: &TestIssuer) -> Issuers {
        let mut m = Issuers::new();
        m.insert(i.issuer().to_string(), parse_jwks(&i.jwks()).unwrap());
        m
    }

    #[test]
    fn es256_tokens_verify_with_their_issuers_key_only() {
        let a = TestIssuer::new("https://a.example");
        let b = TestIssuer::new("https://a.example");
        let t = a.service_account_token("ns", "sa", 600);
        assert_eq!(verify(&registered(&a), "https://a.example", &t), Ok(()));
        assert!(matches!(
            verify(&registered(&b), "https://a.example", &t),
            Err(SignatureError::Invalid(_))
        ));
        assert_eq!(
            verify(&registered(&a), "https://other.example", &t),
            Err(SignatureError::UnknownIssuer)
        );
    }

    #[test]
    fn a_changed_payload_or_alg_none_is_refused() {
        let a = TestIssuer::new("https://a.example");
        let t = a.service_account_token("ns", "sa", 600);
        let parts: Vec<&str> = t.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD
            .encode(json!({"iss": "https://a.example", "sub": "system:serviceaccount:ns:admin"}).to_string());
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert!(verify(&registered(&a), "https://a.example", &forged).is_err());
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
        assert!(verify(&registered(&a), "https://a.example", &none).is_err());
    }

    #[test]
    fn jwks_without_usable_keys_or_too_many_keys_is_refused() {
        assert!(parse_jwks(&json!({"keys": [{"kty": "oct", "k": "AA"}]})).is_err());
        assert!(parse_jwks(&json!({})).is_err());
        let many: Vec<Value> = (0..=MAX_KEYS).map(|_| json!({"kty": "EC"})).collect();
        assert!(parse_jwks(&json!({ "keys": many })).is_err());
    }
}
