//! User roles and their stable numeric codes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub enum Role {
    Owner,
    Admin,
    Moderator,
    Member,
    Guest,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Owner, Role::Admin, Role::Moderator, Role::Member, Role::Guest];

    pub fn code(self) -> i64 {
        match self {
            Role::Owner => 100,
            Role::Admin => 200,
            Role::Moderator => 300,
            Role::Member => 400,
            Role::Guest => 600,
        }
    }

    pub fn from_code(code: i64) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }
}

crate::schema_from!(
    Role,
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .description(Some("Role code: 100 owner, 200 admin, 300 moderator, 400 member, 600 guest"))
        .enum_values(Some(Role::ALL.map(Role::code)))
        .into()
);

impl TryFrom<i64> for Role {
    type Error = String;
    fn try_from(code: i64) -> Result<Self, Self::Error> {
        Role::from_code(code)
            .ok_or_else(|| format!("unknown role {code}; known: 100 owner, 200 admin, 300 moderator, 400 member, 600 guest"))
    }
}

impl From<Role> for i64 {
    fn from(role: Role) -> i64 {
        role.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        assert_eq!(Role::from_code(500), None);
        assert!(serde_json::from_str::<Role>("500").is_err());
        assert_eq!(serde_json::from_str::<Role>("600").unwrap(), Role::Guest);
    }
}
