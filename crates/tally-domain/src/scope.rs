//! What an API key may do.

use crate::ids::{OrganizationId, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read and manage one organization.
    Organization(OrganizationId),
    /// One user's own data, read only.
    User(UserId),
    /// Write events, read nothing.
    Ingest,
    /// A self-hosted server's pushes.
    Server(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; expected admin, ingest, org:<id>, user:<id> or server:<uuid>")]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let err = || ScopeError(text.to_owned());
        match text.split_once(':') {
            None if text == "admin" => Ok(Scope::Admin),
            None if text == "ingest" => Ok(Scope::Ingest),
            Some(("org", id)) => OrganizationId::parse(id).map(Scope::Organization).map_err(|_| err()),
            Some(("user", id)) => UserId::parse(id).map(Scope::User).map_err(|_| err()),
            Some(("server", id)) if !id.is_empty() => Ok(Scope::Server(id.to_owned())),
            _ => Err(err()),
        }
    }

    pub fn can_ingest(&self) -> bool {
        matches!(self, Scope::Admin | Scope::Ingest)
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Scope::Admin)
    }

    /// Whether this key may read (and, for org keys, manage) the given organization's data.
    pub fn can_read_organization(&self, org: &OrganizationId) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Organization(own) => own == org,
            _ => false,
        }
    }

    /// Whether this key may read the given user's data; `org` is the organization the user belongs to.
    pub fn can_read_user(&self, org: &OrganizationId, user: &UserId) -> bool {
        match self {
            Scope::User(own) => own == user,
            other => other.can_read_organization(org),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Scope::parse(&value)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Ingest => f.write_str("ingest"),
            Scope::Organization(id) => write!(f, "org:{id}"),
            Scope::User(id) => write!(f, "user:{id}"),
            Scope::Server(id) => write!(f, "server:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for text in ["admin", "ingest", "org:acme", "user:u1", "server:7f1c"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "root", "org:", "user:", "server:", "org"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rights() {
        let acme = OrganizationId::parse("acme").unwrap();
        let other = OrganizationId::parse("other").unwrap();
        let u1 = UserId::parse("u1").unwrap();
        let u2 = UserId::parse("u2").unwrap();
        let org = Scope::Organization(acme.clone());
        assert!(org.can_read_organization(&acme) && !org.can_read_organization(&other));
        assert!(org.can_read_user(&acme, &u2) && !org.can_read_user(&other, &u1));
        let user = Scope::User(u1.clone());
        assert!(user.can_read_user(&acme, &u1) && !user.can_read_user(&acme, &u2));
        assert!(!user.can_read_organization(&acme));
        assert!(!Scope::Ingest.can_read_organization(&acme) && Scope::Ingest.can_ingest());
        assert!(!org.can_ingest());
    }
}
