//! The reference entities operators manage: organizations, teams, users, plans, subscriptions.
//! Bodies are strict (`deny_unknown_fields`) so a misspelt field is a 400, not a silent no-op.

use crate::ids::{OrganizationId, TeamId, UserId};
use crate::money::Money;
use crate::pricing::Charge;
use crate::role::Role;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn yes() -> bool {
    true
}

fn now() -> Timestamp {
    Timestamp::now()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub id: OrganizationId,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    #[serde(default = "now")]
    pub created_at: Timestamp,
}

impl Organization {
    /// An organization first seen in an event: named after its id until metadata sync fills it in.
    pub fn registered(id: OrganizationId, at: Timestamp) -> Self {
        Organization { name: id.to_string(), id, is_active: true, metadata: empty_object(), created_at: at }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub id: TeamId,
    pub organization_id: OrganizationId,
    #[serde(default)]
    pub name: String,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    #[serde(default = "now")]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: UserId,
    pub organization_id: OrganizationId,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default = "member")]
    pub role: Role,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub is_superuser: bool,
    #[serde(default = "now")]
    pub date_joined: Timestamp,
    #[serde(default)]
    pub last_login: Option<Timestamp>,
    /// Time of the user's latest usage event; maintained by ingestion, read only through the API.
    #[serde(default)]
    pub last_activity: Option<Timestamp>,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

fn member() -> Role {
    Role::Member
}

impl User {
    pub fn registered(id: UserId, organization_id: OrganizationId, at: Timestamp) -> Self {
        User {
            username: id.to_string(),
            id,
            organization_id,
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            role: Role::Member,
            is_bot: false,
            is_active: true,
            is_superuser: false,
            date_joined: at,
            last_login: None,
            last_activity: None,
            metadata: empty_object(),
        }
    }

    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name).trim().to_owned()
    }
}

/// A plan's terms for one usage type: an optional quota per billing period, and its price: a
/// free allowance per period, then a charge model (`unit_price` is shorthand for a standard one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanUsage {
    /// Quota per period; `None` is unlimited.
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Money>,
    /// Units free of charge per period.
    #[serde(default)]
    pub included: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<Charge>,
}

impl PlanUsage {
    /// The charge model, if the usage is priced at all.
    pub fn charge(&self) -> Option<Charge> {
        self.charge.clone().or(self.unit_price.map(|unit_price| Charge::Standard { unit_price }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatPricing {
    #[serde(default)]
    pub free_seats: u32,
    #[serde(default)]
    pub price_per_seat_monthly: Option<Money>,
    #[serde(default)]
    pub price_per_seat_annual: Option<Money>,
    #[serde(default)]
    pub minimum_licenses: u32,
    /// Guests per paid seat (5 → five guests take one seat, 1 → each guest is one); `None`
    /// means guests are free. See `seats::seat_count`.
    #[serde(default)]
    pub guest_seat_ratio: Option<u32>,
    /// The price tier's code in the operator's billing system, carried onto invoices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "usd")]
    pub currency: String,
    /// Terms per usage type key.
    #[serde(default)]
    pub usage: BTreeMap<String, PlanUsage>,
    #[serde(default)]
    pub seats: SeatPricing,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    #[serde(default = "now")]
    pub created_at: Timestamp,
}

impl Plan {
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 128 {
            return Err("`id` must be 1 to 128 characters".into());
        }
        for (key, terms) in &self.usage {
            if terms.limit.is_some_and(|l| !l.is_finite() || l < 0.0) {
                return Err(format!("`usage.{key}.limit` must be a non-negative number or null"));
            }
            if terms.unit_price.is_some() && terms.charge.is_some() {
                return Err(format!("`usage.{key}`: give either `unit_price` or `charge`, not both"));
            }
            if !(terms.included.is_finite() && terms.included >= 0.0) {
                return Err(format!("`usage.{key}.included` must not be negative"));
            }
            if let Some(charge) = &terms.charge {
                charge.check().map_err(|e| format!("`usage.{key}.charge`: {e}"))?;
            }
        }
        if self.seats.guest_seat_ratio == Some(0) {
            return Err("`seats.guest_seat_ratio` must be at least 1 (or null: guests are free)".into());
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("`currency` must be an ISO 4217 code such as USD, got {:?}", self.currency));
        }
        Ok(())
    }
}

fn usd() -> String {
    "USD".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PaymentIssue,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PaymentIssue => "payment_issue",
            SubscriptionStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Trialing, Self::Active, Self::PaymentIssue, Self::Canceled].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub id: String,
    pub organization_id: OrganizationId,
    pub plan_id: String,
    pub status: SubscriptionStatus,
    pub current_period_start: Timestamp,
    pub current_period_end: Timestamp,
    #[serde(default)]
    pub trial_end: Option<Timestamp>,
    /// Extra units on top of the plan's limits, per usage type key.
    #[serde(default)]
    pub add_ons: BTreeMap<String, f64>,
    #[serde(default = "now")]
    pub created_at: Timestamp,
}

impl Subscription {
    pub fn check(&self) -> Result<(), String> {
        if self.current_period_end <= self.current_period_start {
            return Err("`current_period_end` must be after `current_period_start`".to_owned());
        }
        if crate::ids::OrganizationId::parse(self.id.clone()).is_err() {
            return Err("`id` must be 1 to 128 characters without control characters".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_bodies_are_strict_and_defaulted() {
        let u: User = serde_json::from_str(r#"{"id":"u1","organization_id":"o1","role":600}"#).unwrap();
        assert_eq!(u.role, Role::Guest);
        assert!(u.is_active && !u.is_bot);
        let err = serde_json::from_str::<User>(r#"{"id":"u1","organization_id":"o1","rolle":600}"#).unwrap_err();
        assert!(err.to_string().contains("rolle"));
    }

    #[test]
    fn subscription_periods_must_be_ordered() {
        let s: Subscription = serde_json::from_str(
            r#"{"id":"s","organization_id":"o","plan_id":"p","status":"active","current_period_start":"2025-02-01T00:00:00Z","current_period_end":"2025-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(s.check().unwrap_err().contains("after"));
        assert!(serde_json::from_str::<SubscriptionStatus>(r#""paused""#).is_err());
    }
}
