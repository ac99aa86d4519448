//! A realistic demo dataset: organizations on different plans and subscription states, teams,
//! users of every role (and a bot), and 90 days of events of every usage type, LLM requests
//! included. Deterministic (seeded), so two runs of `tally demo` make the same world.

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use std::fmt;
use tally_domain::alerts::{AlertRule, Metric, Operator, RuleScope, Window};
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tally_domain::event::ValidationContext;
use tally_domain::seats::audit::{AuditEvent, AuditEventType};
use tally_domain::{Money, OrganizationId, RawEvent, Role, TeamId, UsageEvent, UserId};
use tally_store::{Store, Write};

pub const DAYS: i64 = 90;

pub struct Summary {
    pub organizations: usize,
    pub users: usize,
    pub events: usize,
    pub skipped: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped {
            write!(f, "the store already holds events; demo data not loaded")
        } else {
            write!(
                f,
                "demo data loaded: {} organizations, {} users, {} events over {DAYS} days",
                self.organizations, self.users, self.events
            )
        }
    }
}

struct OrgSpec {
    id: &'static str,
    name: &'static str,
    plan: &'static str,
    status: &'static str,
    teams: &'static [&'static str],
    users: usize,
    activity: f64,
}

const ORGS: &[OrgSpec] = &[
    OrgSpec {
        id: "acme",
        name: "Acme Research",
        plan: "business",
        status: "active",
        teams: &["field-ops", "data-science", "support"],
        users: 24,
        activity: 1.0,
    },
    OrgSpec {
        id: "globex",
        name: "Globex University",
        plan: "pro",
        status: "active",
        teams: &["biology-101", "history-210"],
        users: 18,
        activity: 0.7,
    },
    OrgSpec { id: "initech", name: "Initech", plan: "starter", status: "trialing", teams: &["pilot"], users: 8, activity: 0.5 },
    OrgSpec {
        id: "umbrella",
        name: "Umbrella Health",
        plan: "pro",
        status: "payment_issue",
        teams: &["clinic-a", "clinic-b"],
        users: 12,
        activity: 0.3,
    },
];

/// (model, provider, input price per million tokens, output price per million tokens)
const MODELS: &[(&str, &str, i64, i64)] = &[
    ("gpt-4o", "openai", 2_500_000, 10_000_000),
    ("gpt-4o-mini", "openai", 150_000, 600_000),
    ("claude-3-5-sonnet", "anthropic", 3_000_000, 15_000_000),
    ("llama-3.1-70b", "together", 880_000, 880_000),
];

const FIRST_NAMES: &[&str] =
    &["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger", "Radia"];
const LAST_NAMES: &[&str] =
    &["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen", "Dijkstra", "Perlman"];

fn plans(now: Timestamp) -> Vec<Plan> {
    let plan = |id: &str, name: &str, limits: serde_json::Value, seat_price: &str, free: u32| -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "currency": "USD", "usage": limits,
            "seats": {"free_seats": free, "price_per_seat_monthly": seat_price, "price_per_seat_annual": seat_price,
                      "minimum_licenses": 1, "guest_seat_ratio": 5},
            "created_at": now,
        }))
        .expect("demo plan is valid")
    };
    vec![
        plan(
            "starter",
            "Starter",
            serde_json::json!({
            "submission": {"limit": 1000.0, "included": 200.0, "unit_price": "0.01"}, "storage_bytes": {"limit": 1e9},
            "asr_seconds": {"limit": 600.0}, "mt_characters": {"limit": 50000.0}, "llm_request": {"limit": 500.0}}),
            "0",
            10,
        ),
        plan(
            "pro",
            "Pro",
            serde_json::json!({
            "submission": {"limit": 25000.0, "included": 1000.0, "unit_price": "0.004"}, "storage_bytes": {"limit": 2e10},
            "asr_seconds": {"limit": 36000.0, "charge": {"model": "graduated", "tiers": [
                {"up_to": 3600.0, "unit_price": "0.008"}, {"up_to": null, "unit_price": "0.005"}]}},
            "mt_characters": {"limit": 2e6, "charge": {"model": "package", "package_size": 10000.0, "price": "0.15", "free_units": 50000.0}},
            "llm_request": {"limit": 20000.0}}),
            "8",
            5,
        ),
        plan(
            "business",
            "Business",
            serde_json::json!({
            "submission": {"limit": 100000.0, "unit_price": "0.002"}, "storage_bytes": {"limit": 1e11},
            "asr_seconds": {"limit": 180000.0, "unit_price": "0.004"}, "mt_characters": {"limit": 1e7, "unit_price": "0.00001"},
            "llm_request": {"charge": {"model": "volume", "tiers": [
                {"up_to": 1000.0, "unit_price": "0.002"}, {"up_to": null, "unit_price": "0.001", "flat_fee": "1"}]}},
            "api_call": {"included": 100000.0, "unit_price": "0.0001"}}),
            "15",
            0,
        ),
    ]
}

/// Loads the demo world unless the store already has events.
pub async fn load(store: &dyn Store) -> anyhow::Result<Summary> {
    if store.event_count().await? > 0 {
        return Ok(Summary { organizations: 0, users: 0, events: 0, skipped: true });
    }
    let now = Timestamp::now();
    let start = now - SignedDuration::from_hours(24 * DAYS);
    let mut rng = StdRng::seed_from_u64(0x0007_a117);
    for plan in plans(now) {
        store.save_plan(&plan, Write::Replace).await?;
    }
    let known: std::collections::HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now, known_types: &known };
    let mut user_count = 0;
    let mut event_count = 0;
    for spec in ORGS {
        let org = OrganizationId::parse(spec.id)?;
        let mut o = Organization::registered(org.clone(), start);
        o.name = spec.name.to_owned();
        store.save_organization(&o, Write::Replace).await?;
        for team in spec.teams {
            let t = Team {
                id: TeamId::parse(format!("{}-{team}", spec.id))?,
                organization_id: org.clone(),
                name: team.replace('-', " "),
                metadata: serde_json::json!({}),
                created_at: start,
            };
            store.save_team(&t, Write::Replace).await?;
        }
        let period_start = now - SignedDuration::from_hours(24 * 12);
        let sub: Subscription = serde_json::from_value(serde_json::json!({
            "id": format!("sub-{}", spec.id), "organization_id": spec.id, "plan_id": spec.plan, "status": spec.status,
            "current_period_start": period_start, "current_period_end": period_start + SignedDuration::from_hours(24 * 30),
            "trial_end": (spec.status == "trialing").then(|| now + SignedDuration::from_hours(48)), "created_at": start,
        }))?;
        store.save_subscription(&sub, Write::Replace).await?;

        let mut events: Vec<UsageEvent> = Vec::new();
        let (mut users, mut audit) = (Vec::new(), Vec::new());
        for n in 0..spec.users {
            let id = UserId::parse(format!("{}-u{n:02}", spec.id))?;
            let mut user = User::registered(id.clone(), org.clone(), start + SignedDuration::from_hours(rng.random_range(0..24 * 20)));
            user.first_name = FIRST_NAMES[(n + spec.id.len()) % FIRST_NAMES.len()].to_owned();
            user.last_name = LAST_NAMES[(n * 7 + spec.id.len()) % LAST_NAMES.len()].to_owned();
            user.username = format!("{}.{}{n}", user.first_name.to_lowercase(), spec.id);
            user.email = format!("{}@{}.example", user.username, spec.id);
            user.role = match n {
                0 => Role::Owner,
                1 | 2 => Role::Admin,
                3 => Role::Moderator,
                n if n % 6 == 5 => Role::Guest,
                _ => Role::Member,
            };
            user.is_bot = n == spec.users - 1;
            user.is_active = n % 11 != 10;
            user.last_login = Some(now - SignedDuration::from_hours(rng.random_range(1..24 * 10)));
            // The history the seats are counted from: joined, and for some, deactivated later.
            audit.push(audit_event(&org, format!("join-{n}"), user.date_joined, AuditEventType::UserCreated, &user));
            if !user.is_active {
                let left = user.date_joined + SignedDuration::from_hours(24 * rng.random_range(20..60));
                audit.push(audit_event(&org, format!("leave-{n}"), left, AuditEventType::UserDeactivated, &user));
            }
            users.push(user);
            user_count += 1;

            let team = spec.teams[n % spec.teams.len()];
            // Some users fade out: churn the report can find.
            let active_until = if n % 5 == 4 { DAYS - rng.random_range(10..40) } else { DAYS };
            let intensity = spec.activity * rng.random_range(0.3..1.5);
            let mut storage: f64 = rng.random_range(1e6..5e8);
            for day in 0..active_until {
                if !rng.random_bool((0.75 * intensity).min(0.95)) {
                    continue;
                }
                let day_start = start + SignedDuration::from_hours(24 * day);
                let mut emit = |rng: &mut StdRng, kind: &str, quantity: f64, extra: String| {
                    let at = day_start + SignedDuration::from_secs(rng.random_range(6 * 3600..22 * 3600));
                    let json = format!(
                        r#"{{"id":"demo-{org}-{n}-{seq}","timestamp":"{at}","organization_id":"{org}","user_id":"{id}","team_id":"{org}-{team}","type":"{kind}","quantity":{quantity}{extra}}}"#,
                        org = spec.id,
                        seq = events.len(),
                    );
                    let event = RawEvent::from_json(&json).and_then(|r| r.validate(&ctx)).expect("demo events are valid");
                    events.push(event);
                };
                emit(&mut rng, "login", 1.0, String::new());
                for _ in 0..rng.random_range(1..(12.0 * intensity) as u32 + 2) {
                    let q = rng.random_range(1..40) as f64;
                    emit(&mut rng, "api_call", q, String::new());
                }
                for _ in 0..rng.random_range(0..(6.0 * intensity) as u32 + 1) {
                    emit(&mut rng, "submission", 1.0, r#","properties":{"form":"survey"}"#.to_owned());
                }
                if rng.random_bool(0.3) {
                    let q = rng.random_range(10..600) as f64;
                    emit(&mut rng, "asr_seconds", q, String::new());
                }
                if rng.random_bool(0.3) {
                    let q = rng.random_range(200..20000) as f64;
                    emit(&mut rng, "mt_characters", q, String::new());
                }
                storage += rng.random_range(0.0..5e6);
                emit(&mut rng, "storage_bytes", storage.round(), String::new());
                for _ in 0..rng.random_range(0..(10.0 * intensity) as u32 + 1) {
                    let (model, provider, input_price, output_price) = MODELS[rng.random_range(0..MODELS.len())];
                    let input = rng.random_range(50..4000i64);
                    let failed = rng.random_bool(0.04);
                    let output = if failed { 0 } else { rng.random_range(20..1500i64) };
                    let cost = Money::from_nanos((input * input_price + output * output_price) / 1_000_000);
                    let extra = format!(
                        r#","model":"{model}","provider":"{provider}","status":"{}","input_tokens":{input},"output_tokens":{output},"cost":"{}","latency_ms":{}"#,
                        if failed { "error" } else { "success" },
                        cost,
                        rng.random_range(200..9000)
                    );
                    emit(&mut rng, "llm_request", 1.0, extra);
                }
            }
        }
        // Audit events first, in time order, so each carries the counts of its moment; then the
        // users' details.
        audit.sort_by_key(|e| e.event_time);
        store.record_audit_events(audit, now).await?;
        for user in &users {
            store.save_user(user, Write::Replace).await?;
        }
        event_count += events.len();
        for chunk in events.chunks(20_000) {
            store.record_events(chunk.to_vec()).await?;
        }
    }
    crate::seats::run_ledger(store, crate::seats::LedgerOptions::default(), |_| {}).await?;
    // A week of churn reports, so scores, risers and alerts have a history to show.
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let days = crate::daily::days(None, 7, today)?;
    let churn = crate::daily::churn::ChurnReport { settings: Default::default() };
    crate::daily::generate(&churn, store, &days, &crate::daily::Generate::default(), |_| {}).await?;
    for rule in rules(now)? {
        store.save_alert_rule(&rule, Write::Replace).await?;
    }
    Ok(Summary { organizations: ORGS.len(), users: user_count, events: event_count, skipped: false })
}

/// A spend rule with repeat steps, a plan-wide quota warning and one user's hard token budget:
/// the first sweep of `tally serve` opens their alerts.
fn rules(now: Timestamp) -> anyhow::Result<Vec<AlertRule>> {
    let acme = OrganizationId::parse("acme")?;
    let rule = |id: &str, name: &str, scope, metric, window, threshold: Decimal| AlertRule {
        id: id.to_owned(),
        owner: None,
        name: name.to_owned(),
        scope,
        metric,
        window,
        operator: Operator::Gt,
        threshold,
        repeat_every: None,
        severity: "medium".to_owned(),
        channels: vec![tally_domain::alerts::LOG_CHANNEL.to_owned()],
        hard: false,
        enabled: true,
        builtin: false,
        created_at: now,
        updated_at: now,
    };
    Ok(vec![
        AlertRule {
            repeat_every: Some(Decimal::new(5, 3)),
            ..rule(
                "demo-acme-llm-spend",
                "Acme LLM spend, every half cent",
                RuleScope::Organization { organization_id: acme.clone() },
                Metric::LlmCost,
                Window::Month,
                Decimal::new(5, 3),
            )
        },
        AlertRule {
            operator: Operator::Gte,
            severity: "high".to_owned(),
            ..rule(
                "demo-starter-quota",
                "Starter users at 75% of their transcription quota",
                RuleScope::Plan { plan_id: "starter".to_owned() },
                Metric::BalancePercent { usage_type: "asr_seconds".to_owned() },
                Window::CurrentPeriod,
                Decimal::from(75),
            )
        },
        AlertRule {
            hard: true,
            ..rule(
                "demo-acme-u01-tokens",
                "Token budget of acme-u01",
                RuleScope::User { organization_id: acme, user_id: UserId::parse("acme-u01")? },
                Metric::LlmTokens,
                Window::Month,
                Decimal::from(20_000),
            )
        },
    ])
}

fn audit_event(org: &OrganizationId, id: String, at: Timestamp, event_type: AuditEventType, user: &User) -> AuditEvent {
    AuditEvent {
        organization_id: org.clone(),
        id,
        event_time: at,
        event_type,
        user_id: Some(user.id.clone()),
        role: Some(user.role),
        old_role: None,
        new_role: None,
        is_bot: user.is_bot,
        plan_id: None,
        role_counts: None,
        backfilled: false,
        server_id: None,
    }
}
