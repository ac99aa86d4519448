//! Usage types (meters): a named measure and how its quantities aggregate.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UsageTypeKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 64 characters of a-z, 0-9 and _, starting with a letter")]
pub struct UsageTypeKeyError;

impl UsageTypeKey {
    pub fn parse(value: impl Into<String>) -> Result<Self, UsageTypeKeyError> {
        let value = value.into();
        let ok = (1..=64).contains(&value.len())
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok { Ok(Self(value)) } else { Err(UsageTypeKeyError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn llm_request() -> Self {
        Self("llm_request".to_owned())
    }
}

impl TryFrom<String> for UsageTypeKey {
    type Error = UsageTypeKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<UsageTypeKey> for String {
    fn from(key: UsageTypeKey) -> String {
        key.0
    }
}

crate::schema_from!(
    UsageTypeKey,
    crate::schema::string("A usage type's key: a-z, 0-9 and _, starting with a letter", Some("^[a-z][a-z0-9_]{0,63}$"), Some(64))
);

impl fmt::Display for UsageTypeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a usage type's quantities combine into one figure for a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Count,
    Max,
    /// The most recent value (storage in use, seats): a gauge, not a counter.
    Latest,
    UniqueCount,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Max => "max",
            Aggregation::Latest => "latest",
            Aggregation::UniqueCount => "unique_count",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Sum, Self::Count, Self::Max, Self::Latest, Self::UniqueCount].into_iter().find(|a| a.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageType {
    pub key: UsageTypeKey,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub unit: String,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub description: String,
}

impl UsageType {
    fn builtin(key: &str, name: &str, unit: &str, aggregation: Aggregation, description: &str) -> Self {
        UsageType {
            key: UsageTypeKey(key.to_owned()),
            name: name.to_owned(),
            unit: unit.to_owned(),
            aggregation,
            description: description.to_owned(),
        }
    }

    /// The usage types every fresh store knows.
    pub fn builtins() -> Vec<UsageType> {
        use Aggregation::*;
        vec![
            Self::builtin("api_call", "API calls", "calls", Sum, "Requests made to the platform's API."),
            Self::builtin("submission", "Submissions", "submissions", Sum, "Form or data submissions."),
            Self::builtin("storage_bytes", "Storage", "bytes", Latest, "Bytes stored; each event reports the current total."),
            Self::builtin("asr_seconds", "Speech recognition", "seconds", Sum, "Seconds of audio transcribed."),
            Self::builtin("mt_characters", "Machine translation", "characters", Sum, "Characters machine-translated."),
            Self::builtin(
                "llm_request",
                "LLM requests",
                "requests",
                Count,
                "Requests to a large language model, with tokens, cost and latency.",
            ),
            Self::builtin("login", "Logins", "logins", Count, "Successful sign-ins."),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_snake_case() {
        assert!(UsageTypeKey::parse("api_call").is_ok());
        assert!(UsageTypeKey::parse("a1").is_ok());
        for bad in ["", "Api", "1abc", "a-b", "a b", &"a".repeat(65)] {
            assert!(UsageTypeKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builtins_include_the_common_meters() {
        let keys: Vec<_> = UsageType::builtins().into_iter().map(|t| t.key.0).collect();
        for k in ["api_call", "submission", "storage_bytes", "asr_seconds", "mt_characters", "llm_request", "login"] {
            assert!(keys.iter().any(|x| x == k), "{k}");
        }
        assert_eq!(Aggregation::parse("unique_count"), Some(Aggregation::UniqueCount));
        assert_eq!(Aggregation::parse("avg"), None);
    }
}
