//! Audit events: changes of state with stable numeric type codes, and what each does to a user's
//! seat.

use super::{RoleCounts, UserSeat};
use crate::ids::{OrganizationId, UserId};
use crate::role::Role;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEventType {
    UserCreated,
    UserActivated,
    UserDeactivated,
    UserReactivated,
    RoleChanged,
    OrganizationDeactivated,
    OrganizationReactivated,
    PlanChanged,
}

impl AuditEventType {
    pub const ALL: [AuditEventType; 8] = [
        AuditEventType::UserCreated,
        AuditEventType::UserActivated,
        AuditEventType::UserDeactivated,
        AuditEventType::UserReactivated,
        AuditEventType::RoleChanged,
        AuditEventType::OrganizationDeactivated,
        AuditEventType::OrganizationReactivated,
        AuditEventType::PlanChanged,
    ];

    pub fn code(self) -> i64 {
        match self {
            AuditEventType::UserCreated => 101,
            AuditEventType::UserActivated => 102,
            AuditEventType::UserDeactivated => 103,
            AuditEventType::UserReactivated => 104,
            AuditEventType::RoleChanged => 105,
            AuditEventType::OrganizationDeactivated => 201,
            AuditEventType::OrganizationReactivated => 202,
            AuditEventType::PlanChanged => 301,
        }
    }

    pub fn from_code(code: i64) -> Result<Self, String> {
        Self::ALL.into_iter().find(|t| t.code() == code).ok_or_else(|| {
            format!(
                "unknown event type {code}; known: 101 user created, 102 activated, 103 deactivated, 104 reactivated, \
                 105 role changed, 201 organization deactivated, 202 reactivated, 301 plan changed"
            )
        })
    }

    /// Whether the event is about one user (and changes the role counts).
    pub fn is_user_event(self) -> bool {
        self.code() < 200
    }

    /// Whether the event switches the organization off or on.
    pub fn organization_active(self) -> Option<bool> {
        match self {
            AuditEventType::OrganizationDeactivated => Some(false),
            AuditEventType::OrganizationReactivated => Some(true),
            _ => None,
        }
    }
}

crate::schema_from!(
    AuditEventType,
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .description(Some("The audit event's type code"))
        .into()
);

impl Serialize for AuditEventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

/// A stored audit event. Ids are the sender's, unique per organization; rows a self-hosted server
/// pushed name it, and their id is the server's own row id.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub organization_id: OrganizationId,
    pub id: String,
    pub event_time: Timestamp,
    pub event_type: AuditEventType,
    pub user_id: Option<UserId>,
    /// The role a created user gets.
    pub role: Option<Role>,
    pub old_role: Option<Role>,
    pub new_role: Option<Role>,
    pub is_bot: bool,
    pub plan_id: Option<String>,
    /// Active users by role right after the event: the sender's, or computed by Tally.
    pub role_counts: Option<RoleCounts>,
    pub backfilled: bool,
    pub server_id: Option<String>,
}

/// The body of one event of `POST /v1/audit-events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventInput {
    pub id: String,
    pub organization_id: String,
    pub event_time: Timestamp,
    pub event_type: i64,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub role: Option<i64>,
    #[serde(default)]
    pub old_role: Option<i64>,
    #[serde(default)]
    pub new_role: Option<i64>,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub role_counts: Option<Value>,
    #[serde(default)]
    pub backfilled: bool,
}

/// Why an event was refused, and which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRejection {
    pub field: &'static str,
    pub reason: String,
}

fn reject(field: &'static str, reason: impl Into<String>) -> AuditRejection {
    AuditRejection { field, reason: reason.into() }
}

fn role(field: &'static str, code: Option<i64>) -> Result<Option<Role>, AuditRejection> {
    code.map(|c| Role::try_from(c).map_err(|e| reject(field, e))).transpose()
}

/// How far ahead of the clock an event time may be (senders' clocks drift).
const MAX_AHEAD: SignedDuration = SignedDuration::from_hours(24);

impl AuditEventInput {
    pub fn validate(self, now: Timestamp) -> Result<AuditEvent, AuditRejection> {
        if self.id.is_empty() || self.id.len() > 128 || self.id.chars().any(char::is_control) {
            return Err(reject("id", "must be 1 to 128 characters without control characters"));
        }
        let organization_id = OrganizationId::parse(self.organization_id).map_err(|e| reject("organization_id", e.to_string()))?;
        let event_type = AuditEventType::from_code(self.event_type).map_err(|e| reject("event_type", e))?;
        if self.event_time > now + MAX_AHEAD {
            return Err(reject("event_time", "is more than a day in the future"));
        }
        let user_id = self.user_id.map(UserId::parse).transpose().map_err(|e| reject("user_id", e.to_string()))?;
        if event_type.is_user_event() && user_id.is_none() {
            return Err(reject("user_id", format!("event type {} is about a user: `user_id` is required", event_type.code())));
        }
        let new_role = role("new_role", self.new_role)?;
        if event_type == AuditEventType::RoleChanged && new_role.is_none() {
            return Err(reject("new_role", "a role change (105) needs `new_role`"));
        }
        if let Some(plan) = &self.plan_id {
            crate::ids::check(plan).map_err(|e| reject("plan_id", e.to_string()))?;
        }
        let role_counts = self.role_counts.as_ref().map(RoleCounts::from_json).transpose().map_err(|e| reject("role_counts", e))?;
        Ok(AuditEvent {
            organization_id,
            id: self.id,
            event_time: self.event_time,
            event_type,
            user_id,
            role: role("role", self.role)?,
            old_role: role("old_role", self.old_role)?,
            new_role,
            is_bot: self.is_bot,
            plan_id: self.plan_id,
            role_counts,
            backfilled: self.backfilled,
            server_id: None,
        })
    }
}

/// The user's seat state after `event`, from the state before it (`None`: Tally does not know
/// the user). Events about the organization leave users as they are.
pub fn user_after(before: Option<UserSeat>, event: &AuditEvent) -> Option<UserSeat> {
    let known_or_new =
        |role: Option<Role>| before.unwrap_or(UserSeat { role: role.unwrap_or(Role::Member), is_bot: event.is_bot, is_active: true });
    match event.event_type {
        AuditEventType::UserCreated => Some(UserSeat { role: event.role.unwrap_or(Role::Member), is_bot: event.is_bot, is_active: true }),
        AuditEventType::UserActivated | AuditEventType::UserReactivated => Some(UserSeat { is_active: true, ..known_or_new(event.role) }),
        AuditEventType::UserDeactivated => before.map(|u| UserSeat { is_active: false, ..u }),
        AuditEventType::RoleChanged => Some(UserSeat { role: event.new_role.unwrap_or(Role::Member), ..known_or_new(event.new_role) }),
        _ => before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-10T00:00:00Z".parse().unwrap()
    }

    fn input(v: Value) -> Result<AuditEvent, AuditRejection> {
        serde_json::from_value::<AuditEventInput>(v).unwrap().validate(now())
    }

    #[test]
    fn codes_are_stable() {
        for t in AuditEventType::ALL {
            assert_eq!(AuditEventType::from_code(t.code()).unwrap(), t);
        }
        assert_eq!(AuditEventType::RoleChanged.code(), 105);
        assert_eq!(AuditEventType::PlanChanged.code(), 301);
        assert!(AuditEventType::from_code(106).unwrap_err().contains("106"));
    }

    #[test]
    fn validation_names_the_field() {
        let base = json!({"id": "a1", "organization_id": "o", "event_time": "2026-01-01T00:00:00Z", "event_type": 101, "user_id": "u"});
        assert!(input(base.clone()).is_ok());
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            input(b).unwrap_err()
        };
        assert_eq!(with("event_type", json!(999)).field, "event_type");
        assert_eq!(with("role", json!(500)).field, "role");
        assert_eq!(with("user_id", Value::Null).field, "user_id");
        assert_eq!(with("event_time", json!("2026-01-12T00:00:00Z")).field, "event_time");
        assert_eq!(with("role_counts", json!({"humans": {"700": 1}})).field, "role_counts");
        assert_eq!(with("id", json!("")).field, "id");
        let change = json!({"id": "a", "organization_id": "o", "event_time": "2026-01-01T00:00:00Z", "event_type": 105, "user_id": "u"});
        assert_eq!(input(change).unwrap_err().field, "new_role");
        let org = json!({"id": "a", "organization_id": "o", "event_time": "2026-01-01T00:00:00Z", "event_type": 201});
        assert!(input(org).is_ok());
    }

    #[test]
    fn users_move_through_their_seat_states() {
        let mut e = input(json!({"id": "a", "organization_id": "o", "event_time": "2026-01-01T00:00:00Z", "event_type": 101, "user_id": "u", "role": 600})).unwrap();
        let created = user_after(None, &e).unwrap();
        assert_eq!(created, UserSeat { role: Role::Guest, is_bot: false, is_active: true });
        e.event_type = AuditEventType::UserDeactivated;
        let gone = user_after(Some(created), &e).unwrap();
        assert!(!gone.is_active);
        assert_eq!(user_after(None, &e), None);
        e.event_type = AuditEventType::UserReactivated;
        assert!(user_after(Some(gone), &e).unwrap().is_active);
        e.event_type = AuditEventType::RoleChanged;
        e.new_role = Some(Role::Admin);
        assert_eq!(user_after(Some(created), &e).unwrap().role, Role::Admin);
        e.event_type = AuditEventType::OrganizationDeactivated;
        assert_eq!(user_after(Some(created), &e), Some(created));
    }
}
