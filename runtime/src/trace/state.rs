//! W3C `tracestate`: vendor-specific trace data that travels with a `traceparent`.
//!
//! Implements <https://www.w3.org/TR/trace-context/#tracestate-header> (Level 1):
//!
//! | rule | here |
//! |---|---|
//! | `list = list-member 0*31( OWS "," OWS list-member )` | at most [`MAX_MEMBERS`] members; spaces and tabs around commas are ignored; empty members are skipped |
//! | several header lines | combined in order, as if joined with `,` (RFC 7230 §3.2.2): [`TraceState::from_lines`] |
//! | simple key: `lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")` | 1–256 characters, first `a-z` |
//! | multi-tenant key: `tenant@system` | tenant 1–241 (first `a-z` or `0-9`), system 1–14 (first `a-z`), one `@` |
//! | value: `0*255(chr) nblk-chr`, `chr` = `%x20-2B / %x2D-3C / %x3E-7E` | 1–256 printable ASCII characters but `,` and `=`, not ending in a space (a trailing space is OWS; a leading one is part of the value) |
//! | a key once | a repeated key makes the header invalid |
//! | cannot be parsed | the whole header is discarded (the `traceparent` is not affected) |
//! | a vendor's own entry | goes to the left, replacing an older one of the same key: [`TraceState::with_member`] |
//!
//! A combined header longer than [`MAX_HEADER_LEN`] bytes is refused as invalid (a bound on what
//! a hop will parse; the spec asks to propagate at least 512 characters).
//!
//! ```
//! use cloudlysis_runtime::trace::TraceState;
//!
//! let ts = TraceState::from_lines(["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).unwrap();
//! assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
//! assert!(TraceState::parse("foo=1,foo=2").is_err());          // a key twice
//! let mine = ts.with_member("cloudlysis", "x").unwrap();
//! assert_eq!(mine.to_string(), "cloudlysis=x,rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
//! ```

use std::fmt;

/// Most list-members a `tracestate` may hold.
pub const MAX_MEMBERS: usize = 32;
/// Longest combined `tracestate` a hop parses, in bytes.
pub const MAX_HEADER_LEN: usize = 8192;
/// Longest simple key, and longest multi-tenant key's tenant and system parts.
const MAX_SIMPLE_KEY: usize = 256;
const MAX_TENANT: usize = 241;
const MAX_SYSTEM: usize = 14;
/// Longest value.
const MAX_VALUE: usize = 256;

/// Why a `tracestate` is invalid (the whole header is then discarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("tracestate is {len} bytes long; at most {MAX_HEADER_LEN} are parsed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_MEMBERS`] list-members.
    #[error("tracestate has {count} list-members; at most {MAX_MEMBERS} are allowed")]
    TooManyMembers {
        /// How many.
        count: usize,
    },
    /// A list-member is not `key=value` with a valid key and value.
    #[error("tracestate list-member {member:?} is invalid: {reason}")]
    InvalidMember {
        /// The member (truncated to 64 bytes).
        member: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key appears twice.
    #[error("tracestate key {key:?} appears more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
}

/// A valid `tracestate`: its list-members in order, every key once.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

fn is_key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// Checks a key against the simple and multi-tenant key grammars.
pub fn validate_key(key: &str) -> Result<(), &'static str> {
    let bytes = key.as_bytes();
    match key.split_once('@') {
        None => {
            if bytes.is_empty() || bytes.len() > MAX_SIMPLE_KEY {
                return Err("a key must be 1 to 256 characters");
            }
            if !bytes[0].is_ascii_lowercase() {
                return Err("a key must start with a lowercase letter");
            }
            if !bytes.iter().all(|b| is_key_char(*b)) {
                return Err("a key may hold only a-z, 0-9, '_', '-', '*' and '/'");
            }
            Ok(())
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            if t.is_empty() || t.len() > MAX_TENANT {
                return Err("a multi-tenant key's tenant must be 1 to 241 characters");
            }
            if s.is_empty() || s.len() > MAX_SYSTEM {
                return Err("a multi-tenant key's system must be 1 to 14 characters");
            }
            if !(t[0].is_ascii_lowercase() || t[0].is_ascii_digit()) {
                return Err("a multi-tenant key's tenant must start with a-z or 0-9");
            }
            if !s[0].is_ascii_lowercase() {
                return Err("a multi-tenant key's system must start with a lowercase letter");
            }
            if !t.iter().chain(s).all(|b| is_key_char(*b)) {
                return Err("a key may hold only a-z, 0-9, '_', '-', '*', '/' and one '@'");
            }
            Ok(())
        }
    }
}

/// Checks a value: 1–256 printable ASCII characters but `,` and `=`, not ending in a space.
pub fn validate_value(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_VALUE {
        return Err("a value must be 1 to 256 characters");
    }
    if !bytes
        .iter()
        .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
    {
        return Err("a value may hold only printable ASCII characters other than ',' and '='");
    }
    if bytes[bytes.len() - 1] == b' ' {
        return Err("a value must not end with a space");
    }
    Ok(())
}

fn ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn invalid(member: &str, reason: &'static str) -> TraceStateError {
    let mut shown = member.to_string();
    if shown.len() > 64 {
        let mut end = 64;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
    }
    TraceStateError::InvalidMember {
        member: shown,
        reason,
    }
}

impl TraceState {
    /// Parses one (combined) header value. An empty value (or one of only commas and spaces)
    /// is a valid, empty `tracestate`.
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        Self::from_lines([value])
    }

    /// Parses the header lines of one message, combined in order.
    pub fn from_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut len = 0usize;
        for line in lines {
            len += line.len() + 1;
            if len > MAX_HEADER_LEN + 1 {
                return Err(TraceStateError::TooLong { len: len - 1 });
            }
            for raw in line.split(',') {
                let member = raw.trim_matches(ows);
                if member.is_empty() {
                    continue;
                }
                let Some((key, value)) = member.split_once('=') else {
                    return Err(invalid(member, "a list-member must be key=value"));
                };
                validate_key(key).map_err(|r| invalid(member, r))?;
                validate_value(value).map_err(|r| invalid(member, r))?;
                if members.iter().any(|(k, _)| k == key) {
                    return Err(TraceStateError::DuplicateKey {
                        key: key.to_string(),
                    });
                }
                members.push((key.to_string(), value.to_string()));
                if members.len() > MAX_MEMBERS {
                    return Err(TraceStateError::TooManyMembers {
                        count: members.len(),
                    });
                }
            }
        }
        Ok(Self { members })
    }

    /// True when it holds no list-member (it is then not propagated).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The number of list-members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The list-members in order.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// This state with `key=value` at the left, replacing an older entry of the same key; the
    /// right-most member goes when the list would exceed [`MAX_MEMBERS`].
    pub fn with_member(&self, key: &str, value: &str) -> Result<Self, TraceStateError> {
        validate_key(key).map_err(|r| invalid(key, r))?;
        validate_value(value).map_err(|r| invalid(value, r))?;
        let mut members = Vec::with_capacity(self.members.len() + 1);
        members.push((key.to_string(), value.to_string()));
        members.extend(self.members.iter().filter(|(k, _)| k != key).cloned());
        members.truncate(MAX_MEMBERS);
        Ok(Self { members })
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({self})")
    }
}

impl std::str::FromStr for TraceState {
    type Err = TraceStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_member_goes_to_the_left_and_replaces_an_older_one() {
        let ts = TraceState::parse("a=1,me=old,b=2").unwrap();
        let next = ts.with_member("me", "new").unwrap();
        assert_eq!(next.to_string(), "me=new,a=1,b=2");
        let full = TraceState::parse(
            &(0..32)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .unwrap();
        let next = full.with_member("me", "x").unwrap();
        assert_eq!(next.len(), MAX_MEMBERS);
        assert_eq!(next.members().next(), Some(("me", "x")));
        assert!(next.get("k31").is_none(), "the right-most member made room");
        assert!(ts.with_member("Me", "x").is_err());
        assert!(ts.with_member("me", "a,b").is_err());
    }

    #[test]
    fn keys_and_values_follow_the_level_1_grammar() {
        for ok in ["a", "a1_-*/", "0t@s", "t@s-1", &"a".repeat(256)] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "a.b",
            "a@",
            "@a",
            "a@1",
            "a@b@c",
            &"a".repeat(257),
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        for ok in ["1", " leading", "in side", "~!", &"v".repeat(256)] {
            assert!(validate_value(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "trailing ", "a=b", "a,b", "tab\there", &"v".repeat(257)] {
            assert!(validate_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = TraceState::parse("foo=1,foo=2").unwrap_err();
        assert_eq!(e, TraceStateError::DuplicateKey { key: "foo".into() });
        let e = TraceState::parse("good=1, BAD=2").unwrap_err();
        assert!(e.to_string().contains("\"BAD=2\""), "{e}");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            TraceState::parse(&many.join(",")).unwrap_err(),
            TraceStateError::TooManyMembers { count: 33 }
        );
        assert!(TraceState::parse("").unwrap().is_empty());
        assert!(TraceState::parse(" , ,").unwrap().is_empty());
    }
}
