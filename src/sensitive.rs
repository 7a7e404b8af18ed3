//! A string that must never reach a log line, an Event, a status field or a Debug print.
//!
//! Client secrets and access tokens travel through the operator as [`SecretString`]:
//! its `Debug` and `Display` print a fixed placeholder, and the value is only reachable
//! through [`SecretString::expose`], which makes every use greppable. Its buffer is
//! overwritten with zeros when it is dropped ([`ZeroizeOnDrop`]), so a freed secret does not
//! linger in heap memory a later allocation or a core dump could show. (Copies made outside
//! the type, such as an HTTP body or a Secret's data, are not covered.)

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret value (client secret, access token, assertion). Redacted in `Debug`/`Display`,
/// zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl Zeroize for SecretString {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretString {}

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where the value is sent to its one destination
    /// (an HTTP form field, an Authorization header, a Secret's data).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    fn zeroized_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn the_buffer_is_zeroed_before_it_is_freed() {
        zeroized_on_drop::<SecretString>();
        let mut s = SecretString::new(String::from("hunter2-very-secret"));
        let (ptr, capacity) = (s.0.as_ptr(), s.0.capacity());
        // What Drop does, while the buffer is still ours to look at.
        s.zeroize();
        assert!(s.is_empty());
        assert_eq!(s.0.as_ptr(), ptr, "wiped in place, not reallocated");
        #[allow(unsafe_code)]
        // SAFETY: the String still owns this allocation of `capacity` bytes, and zeroize
        // wrote every one of them.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, capacity) };
        assert!(bytes.iter().all(|b| *b == 0), "{bytes:?}");
    }
}
