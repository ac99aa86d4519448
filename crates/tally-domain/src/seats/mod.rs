//! Seats: who holds a paid seat at a moment, from the role counts that audit events carry.
//! Audit events and their users' seat states are in [`audit`], the license ledger in [`ledger`],
//! the next invoice in [`invoice`], and self-hosted servers' pushes in [`remote`].

pub mod audit;
pub mod invoice;
pub mod ledger;
pub mod remote;

use crate::role::Role;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Active users of an organization by role, and its active bots, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleCounts {
    /// Indexed like [`Role::ALL`].
    humans: [u64; 5],
    pub bots: u64,
}

/// One user's part in the counts: deactivated users and bots hold no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSeat {
    pub role: Role,
    pub is_bot: bool,
    pub is_active: bool,
}

fn index(role: Role) -> usize {
    Role::ALL.iter().position(|r| *r == role).expect("every role is in Role::ALL")
}

impl RoleCounts {
    pub fn new(humans: impl IntoIterator<Item = (Role, u64)>, bots: u64) -> Self {
        let mut counts = RoleCounts { humans: [0; 5], bots };
        for (role, n) in humans {
            counts.humans[index(role)] += n;
        }
        counts
    }

    pub fn humans(&self, role: Role) -> u64 {
        self.humans[index(role)]
    }

    pub fn guests(&self) -> u64 {
        self.humans(Role::Guest)
    }

    pub fn non_guests(&self) -> u64 {
        Role::ALL.iter().filter(|r| **r != Role::Guest).map(|r| self.humans(*r)).sum()
    }

    /// Both counts together (a server's realms).
    pub fn plus(&self, other: &RoleCounts) -> RoleCounts {
        let mut sum = *self;
        sum.humans.iter_mut().zip(other.humans).for_each(|(a, b)| *a += b);
        sum.bots += other.bots;
        sum
    }

    /// Counts `user` in, if active.
    pub fn add(&mut self, user: UserSeat) {
        if user.is_active {
            match user.is_bot {
                true => self.bots += 1,
                false => self.humans[index(user.role)] += 1,
            }
        }
    }

    /// Counts `user` out, if active (never below zero: counts given by a sender may lag).
    pub fn remove(&mut self, user: UserSeat) {
        if user.is_active {
            let slot = match user.is_bot {
                true => &mut self.bots,
                false => &mut self.humans[index(user.role)],
            };
            *slot = slot.saturating_sub(1);
        }
    }

    /// The JSON form, `{"humans": {"100": n, …, "600": n}, "bots": n}`: role codes as string keys.
    /// This and [`RoleCounts::from_json`] are the only conversions between the two.
    pub fn to_json(&self) -> Value {
        let humans: Map<String, Value> = Role::ALL.iter().map(|r| (r.code().to_string(), json!(self.humans(*r)))).collect();
        json!({ "humans": humans, "bots": self.bots })
    }

    /// Reads the JSON form; a missing role counts zero, an unknown role or a negative or
    /// fractional count is an error naming it.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("role counts must be an object with `humans` and `bots`")?;
        if let Some(key) = object.keys().find(|k| *k != "humans" && *k != "bots") {
            return Err(format!("role counts: unknown member {key:?}; expected `humans` and `bots`"));
        }
        let count =
            |v: &Value, what: &str| v.as_u64().ok_or_else(|| format!("role counts: {what} must be a non-negative integer, got {v}"));
        let bots = object.get("bots").map(|v| count(v, "`bots`")).transpose()?.unwrap_or(0);
        let mut counts = RoleCounts { humans: [0; 5], bots };
        let humans = match object.get("humans") {
            None => return Ok(counts),
            Some(h) => h.as_object().ok_or("role counts: `humans` must be an object of role code to count")?,
        };
        for (key, n) in humans {
            let role = key
                .parse::<i64>()
                .ok()
                .and_then(Role::from_code)
                .ok_or_else(|| format!("role counts: unknown role {key:?}; known: 100, 200, 300, 400, 600"))?;
            counts.humans[index(role)] = count(n, &format!("`humans.{key}`"))?;
        }
        Ok(counts)
    }
}

crate::schema_from!(RoleCounts, {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let count = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
    ObjectBuilder::new()
        .description(Some("Users per role: `humans` maps role codes (100, 200, 300, 400, 600) to counts; `bots` counts bots"))
        .property("humans", ObjectBuilder::new().additional_properties(Some(count())))
        .property("bots", count())
        .into()
});

impl Serialize for RoleCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RoleCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RoleCounts::from_json(&Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Paid seats for these counts. Bots never count. `guest_seat_ratio` says how guests count:
/// none → guests are free; 1 → every guest is a seat; r → `max(non_guests, ⌈guests / r⌉)`,
/// so up to r guests per paying member ride free.
pub fn seat_count(counts: &RoleCounts, guest_seat_ratio: Option<u32>) -> u64 {
    let (non_guests, guests) = (counts.non_guests(), counts.guests());
    match guest_seat_ratio {
        None | Some(0) => non_guests,
        Some(1) => non_guests + guests,
        Some(ratio) => non_guests.max(guests.div_ceil(u64::from(ratio))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(owners: u64, members: u64, guests: u64, bots: u64) -> RoleCounts {
        RoleCounts::new([(Role::Owner, owners), (Role::Member, members), (Role::Guest, guests)], bots)
    }

    #[test]
    fn json_uses_string_role_keys_both_ways() {
        let c = counts(1, 3, 7, 2);
        let v = c.to_json();
        assert_eq!(v["humans"]["100"], 1);
        assert_eq!(v["humans"]["600"], 7);
        assert_eq!(v["humans"]["200"], 0);
        assert_eq!(v["bots"], 2);
        assert_eq!(RoleCounts::from_json(&v).unwrap(), c);
        assert_eq!(serde_json::from_value::<RoleCounts>(v).unwrap(), c);
    }

    #[test]
    fn bad_counts_say_what_is_wrong() {
        assert!(RoleCounts::from_json(&json!({"humans": {"500": 1}})).unwrap_err().contains("\"500\""));
        assert!(RoleCounts::from_json(&json!({"humans": {"400": -1}})).unwrap_err().contains("humans.400"));
        assert!(RoleCounts::from_json(&json!({"humans": {"400": 1.5}})).is_err());
        assert!(RoleCounts::from_json(&json!({"people": 1})).unwrap_err().contains("people"));
        assert!(RoleCounts::from_json(&json!([1])).is_err());
        assert_eq!(RoleCounts::from_json(&json!({"bots": 3})).unwrap(), counts(0, 0, 0, 3));
    }

    #[test]
    fn guests_count_by_the_plan_ratio() {
        let c = counts(1, 3, 7, 9);
        assert_eq!(seat_count(&c, None), 4);
        assert_eq!(seat_count(&c, Some(1)), 11);
        assert_eq!(seat_count(&c, Some(5)), 4);
        // Many guests, few members: the guests set the count, rounded up.
        let crowd = counts(1, 0, 11, 0);
        assert_eq!(seat_count(&crowd, Some(5)), 3);
        assert_eq!(seat_count(&crowd, Some(1)), 12);
        assert_eq!(seat_count(&RoleCounts::default(), Some(5)), 0);
    }

    #[test]
    fn adding_and_removing_ignores_inactive_users_and_never_underflows() {
        let mut c = RoleCounts::default();
        let member = UserSeat { role: Role::Member, is_bot: false, is_active: true };
        c.add(member);
        c.add(UserSeat { is_bot: true, ..member });
        c.add(UserSeat { is_active: false, ..member });
        assert_eq!((c.humans(Role::Member), c.bots), (1, 1));
        c.remove(member);
        c.remove(member);
        assert_eq!(c.humans(Role::Member), 0);
    }
}
