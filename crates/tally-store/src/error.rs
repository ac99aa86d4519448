//! Neutral storage errors: each backend maps its driver's errors to these.

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request clashes with the state of things (a lease held by someone else).
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached or is overloaded: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Out of disk: nothing was stored.
    #[error("database storage is full: {0}")]
    Full(String),
    #[error("bad configuration: {0}")]
    Config(String),
    /// A value the database cannot hold (PostgreSQL refuses the NUL character in text and JSON).
    #[error("cannot store this value: {0}")]
    Unstorable(String),
    /// Stored data that does not parse back: a bug or a hand edit.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(what.to_string())
    }
}
