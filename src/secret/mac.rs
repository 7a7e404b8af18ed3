//! The credential record's MAC: HMAC-SHA256, under a key only the operator holds, over the
//! record, the digests of the delivered and the staged secret, and the Secret it belongs to
//! (namespace, name, owning Application's UID). Anyone who can write Secrets in a namespace
//! can edit the record, but cannot make one the operator accepts: so no edit can make the
//! operator revoke a key, or keep (adopt) a key it did not issue.

use ring::hmac;

/// Prefix of the annotation value, naming the scheme (a later one can be told apart).
const SCHEME: &str = "v1:";
/// Domain separation: this key signs nothing else.
const DOMAIN: &[u8] = b"dcr-operator.io/credential-record/v1";
/// Key sizes accepted: at least the hash's output, at most one SHA-256 block's worth of
/// reasons to doubt the value (anything longer is not a key we made).
pub const MIN_KEY_BYTES: usize = 32;
pub const MAX_KEY_BYTES: usize = 1024;

/// The operator's record key. Its value never leaves this type (no Debug of it).
pub struct RecordKey(hmac::Key);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(redacted)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the record key has {0} bytes; {MIN_KEY_BYTES} to {MAX_KEY_BYTES} are accepted")]
    Size(usize),
    #[error("no random bytes for a new record key")]
    Random,
}

/// Which Secret a record belongs to: a record copied to another Secret does not verify.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub namespace: &'a str,
    pub secret_name: &'a str,
    pub owner_uid: &'a str,
}

/// What the MAC covers besides the binding: the record as stored (its exact JSON) and the
/// SHA-256 digests of the secret values.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub record_json: &'a str,
    pub secret_digest: &'a str,
    pub pending_digest: Option<&'a str>,
}

impl RecordKey {
    pub fn new(bytes: &[u8]) -> Result<RecordKey, KeyError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(KeyError::Size(bytes.len()));
        }
        Ok(RecordKey(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// Fresh key material from the system's CSPRNG.
    pub fn generate() -> Result<Vec<u8>, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = vec![0u8; MIN_KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(bytes)
    }

    /// The annotation value for `signed` in the Secret `binding`.
    pub fn sign(&self, binding: Binding<'_>, signed: Signed<'_>) -> String {
        let tag = hmac::sign(&self.0, &message(binding, signed));
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{SCHEME}{hex}")
    }

    /// Whether `mac` (an annotation value) is this key's MAC of `signed` in `binding`;
    /// compared in constant time.
    pub fn verify(&self, binding: Binding<'_>, signed: Signed<'_>, mac: &str) -> bool {
        let Some(tag) = mac.strip_prefix(SCHEME).and_then(decode_hex) else {
            return false;
        };
        hmac::verify(&self.0, &message(binding, signed), &tag).is_ok()
    }
}

/// Every field length-prefixed, so that no two different inputs make the same message.
fn message(b: Binding<'_>, s: Signed<'_>) -> Vec<u8> {
    let fields: [&[u8]; 8] = [
        DOMAIN,
        b.namespace.as_bytes(),
        b.secret_name.as_bytes(),
        b.owner_uid.as_bytes(),
        s.record_json.as_bytes(),
        s.secret_digest.as_bytes(),
        if s.pending_digest.is_some() { b"1" } else { b"0" },
        s.pending_digest.unwrap_or_default().as_bytes(),
    ];
    let mut m = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for f in fields {
        m.extend_from_slice(&(f.len() as u64).to_be_bytes());
        m.extend_from_slice(f);
    }
    m
}

/// Lowercase or uppercase hex of exactly one SHA-256 output; None for anything else.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> RecordKey {
        RecordKey::new(&[fill; 32]).unwrap()
    }

    const B: Binding<'static> = Binding {
        namespace: "team-a",
        secret_name: "web-credentials",
        owner_uid: "uid-1",
    };
    const S: Signed<'static> = Signed {
        record_json: r#"{"keyId":"k1"}"#,
        secret_digest: "d1",
        pending_digest: None,
    };

    #[test]
    fn a_mac_verifies_under_its_key_only() {
        let mac = key(1).sign(B, S);
        assert!(mac.starts_with("v1:") && mac.len() == 3 + 64, "{mac}");
        assert!(key(1).verify(B, S, &mac));
        assert!(!key(2).verify(B, S, &mac), "another key");
    }

    #[test]
    fn any_change_to_the_record_values_or_binding_breaks_it() {
        let k = key(1);
        let mac = k.sign(B, S);
        let edits = [
            (
                B,
                Signed {
                    record_json: r#"{"keyId":"k2"}"#,
                    ..S
                },
            ),
            (
                B,
                Signed {
                    secret_digest: "d2",
                    ..S
                },
            ),
            (
                B,
                Signed {
                    pending_digest: Some("p"),
                    ..S
                },
            ),
            (
                B,
                Signed {
                    pending_digest: Some(""),
                    ..S
                },
            ),
            (
                Binding {
                    namespace: "team-b",
                    ..B
                },
                S,
            ),
            (
                Binding {
                    secret_name: "other",
                    ..B
                },
                S,
            ),
            (
                Binding {
                    owner_uid: "uid-2",
                    ..B
                },
                S,
            ),
        ];
        for (b, s) in edits {
            assert!(!k.verify(b, s, &mac), "{b:?} {s:?}");
        }
        // Moving bytes between adjacent fields changes the message too.
        let shifted = Binding {
            namespace: "team-aweb-credentials",
            secret_name: "",
            ..B
        };
        assert!(!k.verify(shifted, S, &mac));
    }

    #[test]
    fn malformed_macs_are_refused_without_panicking() {
        let k = key(1);
        let good = k.sign(B, S);
        let upper = format!("v1:{}", good[3..].to_uppercase());
        assert!(k.verify(B, S, &upper), "hex case does not matter");
        let (longer, not_hex, not_ascii) = (
            format!("{good}00"),
            format!("v1:{}", "zz".repeat(32)),
            format!("v1:{}", "é".repeat(32)),
        );
        let bads: [&str; 8] = [
            "",
            "v1:",
            "v2:",
            &good[3..],
            &good[..good.len() - 2],
            &longer,
            &not_hex,
            &not_ascii,
        ];
        for bad in bads {
            assert!(!k.verify(B, S, bad), "{bad:?}");
        }
    }

    #[test]
    fn key_sizes_are_bounded_and_generated_keys_differ() {
        assert_eq!(RecordKey::new(&[0; 31]).unwrap_err(), KeyError::Size(31));
        assert!(RecordKey::new(&[0; MAX_KEY_BYTES + 1]).is_err());
        let (a, b) = (RecordKey::generate().unwrap(), RecordKey::generate().unwrap());
        assert_eq!(a.len(), MIN_KEY_BYTES);
        assert_ne!(a, b);
        assert_eq!(format!("{:?}", key(7)), "RecordKey(redacted)");
    }
}
