//! Managing rules and channels on behalf of a caller, and answering entitlements. A rule is
//! checked against what exists (its user, team, plan, usage type and channels) and against what
//! the caller may manage: operators anything, an organization key its own organization only.

use super::Alerting;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Serialize;
use tally_domain::alerts::webhook::Secret;
use tally_domain::alerts::{AlertRule, Channel, ChannelKind, FieldError, LOG_CHANNEL, Metric, PartialScope, RuleBody, RuleScope, Window};
use tally_domain::{OrganizationId, Scope, UserId};
use tally_store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn field(name: &str, reason: impl Into<String>) -> RuleError {
    RuleError::Field(FieldError { field: name.to_owned(), reason: reason.into() })
}

/// The organization a caller manages rules for: `None` for operators.
pub fn managed_by(scope: &Scope) -> Result<Option<OrganizationId>, RuleError> {
    match scope {
        Scope::Admin => Ok(None),
        Scope::Organization(org) => Ok(Some(org.clone())),
        other => Err(RuleError::Forbidden(format!("a {other} key cannot manage alert rules; use an admin or org key"))),
    }
}

/// Whether a caller managing `owner` (None: operators) may see or change something owned by
/// `of`.
pub fn may_manage(owner: &Option<OrganizationId>, of: &Option<OrganizationId>) -> bool {
    owner.is_none() || owner == of
}

/// Builds a rule from a body: resolves its scope, checks what it names, and gives it an id.
pub async fn build(
    store: &dyn Store,
    owner: Option<OrganizationId>,
    body: RuleBody,
    id: Option<String>,
    created_at: Option<Timestamp>,
) -> Result<AlertRule, RuleError> {
    // An org key's users and teams are looked up in its organization only: another
    // organization's are as unknown as ones that do not exist.
    let asked = match (body.scope, &owner) {
        (PartialScope::User { organization_id: None, user_id }, Some(own)) => {
            PartialScope::User { organization_id: Some(own.clone()), user_id }
        }
        (PartialScope::Team { organization_id: None, team_id }, Some(own)) => {
            PartialScope::Team { organization_id: Some(own.clone()), team_id }
        }
        (scope, _) => scope,
    };
    let scope = resolve_scope(store, asked).await?;
    if let Some(own) = &owner
        && scope.organization_id() != Some(own)
    {
        return Err(field("scope", format!("an org key's rules watch its own organization ({own}) only")));
    }
    if let Some(usage_type) = body.metric.usage_type() {
        let types = store.usage_types().await?;
        let Some(known) = types.iter().find(|t| t.key.as_str() == usage_type) else {
            return Err(field("metric.usage_type", format!("unknown usage type {usage_type:?}")));
        };
        let per_user = matches!(scope, RuleScope::User { .. } | RuleScope::Plan { .. });
        if matches!(body.metric, Metric::BalancePercent { .. }) && known.aggregation == tally_domain::Aggregation::Latest && !per_user {
            return Err(field(
                "scope",
                format!("{usage_type} is a gauge: its balance is each user's latest value; use a user or plan scope"),
            ));
        }
    }
    if body.hard && matches!(scope, RuleScope::Team { .. }) {
        return Err(field("hard", "entitlements are answered per user: a budget needs a user, organization or plan scope"));
    }
    for (i, channel) in body.channels.iter().enumerate() {
        if channel == LOG_CHANNEL {
            continue;
        }
        match store.channel(channel).await? {
            Some((c, _)) if may_manage(&owner, &c.owner) => {}
            _ => return Err(field(&format!("channels[{i}]"), format!("unknown channel {channel:?}"))),
        }
    }
    let now = Timestamp::now();
    let id = id.or(body.id).unwrap_or_else(|| format!("rule_{:016x}", rand::random::<u64>()));
    let name = if body.name.is_empty() { default_name(&body.metric, body.window, &scope, body.threshold) } else { body.name };
    Ok(AlertRule {
        id,
        owner,
        name,
        scope,
        metric: body.metric,
        window: body.window,
        operator: body.operator,
        threshold: body.threshold,
        repeat_every: body.repeat_every,
        severity: body.severity,
        channels: body.channels,
        hard: body.hard,
        enabled: body.enabled,
        builtin: false,
        created_at: created_at.unwrap_or(now),
        updated_at: now,
    })
}

async fn resolve_scope(store: &dyn Store, scope: PartialScope) -> Result<RuleScope, RuleError> {
    Ok(match scope {
        PartialScope::User { organization_id, user_id } => {
            let user = store.user(&user_id).await?.filter(|u| organization_id.as_ref().is_none_or(|o| o == &u.organization_id));
            let user = user.ok_or_else(|| field("scope.user_id", format!("unknown user {user_id:?}")))?;
            RuleScope::User { organization_id: user.organization_id, user_id }
        }
        PartialScope::Team { organization_id, team_id } => {
            let team = store.team(&team_id).await?.filter(|t| organization_id.as_ref().is_none_or(|o| o == &t.organization_id));
            let team = team.ok_or_else(|| field("scope.team_id", format!("unknown team {team_id:?}")))?;
            RuleScope::Team { organization_id: team.organization_id, team_id }
        }
        PartialScope::Organization { organization_id } => {
            if store.organization(&organization_id).await?.is_none() {
                return Err(field("scope.organization_id", format!("unknown organization {organization_id:?}")));
            }
            RuleScope::Organization { organization_id }
        }
        PartialScope::Plan { plan_id } => {
            if store.plan(&plan_id).await?.is_none() {
                return Err(field("scope.plan_id", format!("unknown plan {plan_id:?}")));
            }
            RuleScope::Plan { plan_id }
        }
        PartialScope::All => RuleScope::All,
    })
}

fn default_name(metric: &Metric, window: Window, scope: &RuleScope, threshold: Decimal) -> String {
    let what = match metric.usage_type() {
        Some(t) => format!("{} of {t}", metric.name()),
        None => metric.name().to_owned(),
    };
    let whose = match scope {
        RuleScope::User { user_id, .. } => format!("user {user_id}"),
        RuleScope::Team { team_id, .. } => format!("team {team_id}"),
        RuleScope::Organization { organization_id } => format!("organization {organization_id}"),
        RuleScope::Plan { plan_id } => format!("users of plan {plan_id}"),
        RuleScope::All => "all requests".to_owned(),
    };
    let window = serde_json::to_value(window).ok().and_then(|w| w["type"].as_str().map(str::to_owned)).unwrap_or_default();
    format!("{what} over {threshold} ({window}) for {whose}")
}

/// Creates a channel; the answer carries the signing secret, shown this once.
pub async fn create_channel(
    store: &dyn Store,
    owner: Option<OrganizationId>,
    body: tally_domain::alerts::ChannelBody,
) -> Result<(Channel, Option<String>), RuleError> {
    if let ChannelKind::Webhook { url } = &body.kind
        && reqwest::Url::parse(url).map(|u| u.host().is_none()).unwrap_or(true)
    {
        return Err(field("url", format!("{url:?} is not a valid URL")));
    }
    let secret = match body.kind {
        ChannelKind::Webhook { .. } => Some(body.secret.unwrap_or_else(Secret::generate).expose()),
        ChannelKind::Log => None,
    };
    let id = body.id.unwrap_or_else(|| format!("chn_{:016x}", rand::random::<u64>()));
    let name = if body.name.is_empty() { id.clone() } else { body.name };
    let channel = Channel { id, owner, name, kind: body.kind, created_at: Timestamp::now() };
    store.create_channel(&channel, secret.as_deref()).await?;
    Ok((channel, secret))
}

/// One budget as it stands for a user.
#[derive(Debug, Serialize)]
pub struct BudgetStatus {
    pub rule_id: String,
    pub name: String,
    pub metric: Metric,
    pub window: Window,
    pub window_start: Option<Timestamp>,
    #[serde(with = "rust_decimal::serde::str")]
    pub limit: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub used: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub remaining: Decimal,
    pub exceeded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Entitlements {
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub allowed: bool,
    /// Why not, naming each exceeded budget.
    pub reason: Option<String>,
    pub budgets: Vec<BudgetStatus>,
    pub checked_at: Timestamp,
}

/// Whether a user may use more, from the hard rules that apply to them, computed now from the
/// live aggregates (not from alerts, which the evaluator opens a moment later). `usage_type`
/// narrows to the budgets that count that usage (LLM metrics count `llm_request`).
pub async fn entitlements(
    alerting: &Alerting,
    org: &OrganizationId,
    user: &UserId,
    usage_type: Option<&str>,
) -> Result<Entitlements, StoreError> {
    let mut pairs = alerting.budgets_of(org, user).await?;
    if let Some(t) = usage_type {
        pairs.retain(|(rule, _)| rule.metric.usage_type().map_or(t == tally_domain::event::LLM_USAGE_TYPE, |m| m == t));
    }
    let now = Timestamp::now();
    let observations = alerting.observe(&pairs, now).await?;
    let budgets: Vec<BudgetStatus> = observations
        .into_iter()
        .map(|o| {
            let exceeded = o.level.is_some();
            BudgetStatus {
                remaining: (o.rule.threshold - o.value).max(Decimal::ZERO).normalize(),
                limit: o.rule.threshold.normalize(),
                used: o.value.normalize(),
                exceeded,
                currency: (o.rule.metric == Metric::LlmCost).then_some("USD"),
                window_start: o.window_start,
                window: o.rule.window,
                metric: o.rule.metric.clone(),
                name: o.rule.name.clone(),
                rule_id: o.rule.id,
            }
        })
        .collect();
    let exceeded: Vec<String> =
        budgets.iter().filter(|b| b.exceeded).map(|b| format!("{} ({} of {} used)", b.name, b.used, b.limit)).collect();
    Ok(Entitlements {
        user_id: user.clone(),
        organization_id: org.clone(),
        allowed: exceeded.is_empty(),
        reason: (!exceeded.is_empty()).then(|| format!("budget exceeded: {}", exceeded.join("; "))),
        budgets,
        checked_at: now,
    })
}
