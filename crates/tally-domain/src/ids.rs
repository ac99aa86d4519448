//! Identifiers that come from the platform: validated once at the edge, then trusted.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier we accept; long enough for UUIDs, URNs and composite keys.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} bytes, got {0}")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Checks a platform identifier's form (non-empty, bounded, no control characters).
pub fn check(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        $crate::schema_from!(
            $name,
            $crate::schema::string(concat!(stringify!($name), ": ", "1 to 128 bytes, no control characters"), Some(r"^[^\u0000-\u001f\u007f-\u009f]+$"), Some(128))
        );

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A customer account: a realm, an academy, a workspace.
    OrganizationId
);
string_id!(
    /// A person or bot; unique across a deployment.
    UserId
);
string_id!(
    /// A group inside an organization.
    TeamId
);
string_id!(
    /// An event's own id, unique within its organization (the deduplication key).
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(UserId::parse("u-1").unwrap().as_str(), "u-1");
        assert!(OrganizationId::parse("550e8400-e29b-41d4-a716-446655440000").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse("x".repeat(129)), Err(IdError::TooLong(129)));
        assert_eq!(UserId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert!(UserId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<TeamId>("\"\"").is_err());
        assert_eq!(serde_json::from_str::<TeamId>("\"t\"").unwrap().as_str(), "t");
    }
}
