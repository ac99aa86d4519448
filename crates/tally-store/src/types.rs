//! Values the store trait speaks in, beyond the domain's own.

use jiff::Timestamp;
use serde::Serialize;
use tally_domain::{OrganizationId, Scope, TeamId, UsageTypeKey, UserId};

/// Whether a save creates a new row (failing with `AlreadyExists`) or creates-or-replaces one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

impl Page {
    pub const MAX_LIMIT: u32 = 1000;

    pub fn all() -> Self {
        Page { limit: Self::MAX_LIMIT, offset: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Listed<T> {
    /// Rows matching, regardless of the page.
    pub count: u64,
    pub results: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    #[serde(skip)]
    pub digest: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Whose usage a query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Organization(OrganizationId),
    User { organization_id: OrganizationId, user_id: UserId },
}

impl Subject {
    pub fn organization_id(&self) -> &OrganizationId {
        match self {
            Subject::Organization(o) | Subject::User { organization_id: o, .. } => o,
        }
    }
}

/// A half-open interval `[from, to)`; a missing end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageTotal {
    pub usage_type: String,
    pub count: i64,
    pub sum: f64,
}

/// Row counts and column sums over the aggregate tables: equal fingerprints mean equal figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AggregatesFingerprint {
    pub hourly_rows: i64,
    pub hourly_count: i64,
    pub hourly_sum: f64,
    pub hourly_cost_nanos: i64,
    pub hourly_tokens: i64,
    pub user_rows: i64,
    pub user_count: i64,
    pub user_sum: f64,
    pub month_rows: i64,
    pub month_count: i64,
    pub latest_values_sum: f64,
    pub users_with_activity: i64,
    pub org_hourly_rows: i64,
    pub org_hourly_count: i64,
    pub org_hourly_sum: f64,
    pub org_hourly_cost_nanos: i64,
    pub org_latest_values_sum: f64,
    /// The users' daily LLM cells (`llm_daily`, per model and provider) and their latencies.
    pub latency_day_rows: i64,
    pub latency_day_requests: i64,
    pub latency_day_sum_ms: i64,
    pub org_latency_day_rows: i64,
    pub org_latency_day_requests: i64,
    pub org_latency_day_sum_ms: i64,
    pub unpriced_rows: i64,
    pub unpriced_requests: i64,
    pub org_monthly_rows: i64,
    pub org_monthly_count: i64,
    pub org_monthly_sum: f64,
    pub org_monthly_latest_values_sum: f64,
    pub llm_day_cost_nanos: i64,
    pub llm_day_tokens: i64,
    pub org_type_month_rows: i64,
    pub org_type_month_count: i64,
    pub org_type_month_latest_sum: f64,
    pub org_type_month_sum: f64,
    pub org_type_month_cost_nanos: i64,
    /// The users' figures of their organization's recorded billing period.
    pub period_rows: i64,
    pub period_count: i64,
    pub period_sum: f64,
    pub period_cost_nanos: i64,
    /// The organizations' daily cells.
    pub org_daily_rows: i64,
    pub org_daily_count: i64,
    pub org_daily_sum: f64,
    pub org_daily_cost_nanos: i64,
    pub org_daily_latest_values_sum: f64,
    pub org_weekly_rows: i64,
    pub org_weekly_count: i64,
    pub org_weekly_sum: f64,
    pub org_weekly_cost_nanos: i64,
    pub org_weekly_latest_values_sum: f64,
}

/// Whose hourly cells a read keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellScope {
    /// Every user's (the user dimension filled).
    Users,
    /// Every organization's.
    Organizations,
    /// Summed over organizations (organization and user empty), for series that break down by
    /// neither: one row per hour and dimension instead of one per organization.
    Summed,
}

/// Which organization-wide monthly cells a series reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthCells {
    /// One per organization, month, type, team, model and provider.
    Split,
    /// One per organization, month and type (team, model and provider empty).
    PerType,
    /// As `PerType`, with the latest value the sum of every user's latest value of the month.
    LatestSums,
}

/// Which usage a series query reads. Absent fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageFilter {
    pub organization_id: Option<OrganizationId>,
    pub team_id: Option<TeamId>,
    pub user_id: Option<UserId>,
    /// Empty: every usage type.
    pub usage_types: Vec<UsageTypeKey>,
}

/// What a user report shows of one user, before it is shaped for the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub user: tally_domain::entities::User,
    pub organization_name: String,
    /// The organization's subscriptions, latest period first.
    pub subscriptions: Vec<tally_domain::entities::Subscription>,
    /// The billing period the `current` figures cover.
    pub period: (Timestamp, Timestamp),
    /// Per usage type, all time (from `user_usage`).
    pub all_time: Vec<(String, tally_domain::rollup::Aggregate)>,
    /// Per usage type, in the billing period (from the hourly aggregates).
    pub current: Vec<(String, tally_domain::rollup::Aggregate)>,
}

/// One run of a resumable job.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: String,
    pub job: String,
    /// `in_progress`, `completed` or `aborted`.
    pub status: String,
    /// The last organization done.
    pub cursor: Option<String>,
    /// Events replayed so far.
    pub processed: u64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub lease_owner: String,
    pub lease_until: Timestamp,
}

/// A page of a user's LLM requests, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequestQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<String>,
    /// Continue below this (time, event id), from the previous page's last request.
    pub cursor: Option<(Timestamp, String)>,
    pub limit: u32,
}

/// A self-hosted server that pushes its realms' counts and audit logs. Its secret is an API key
/// with the scope `server:<id>`; `key_id` names the current one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Server {
    pub id: String,
    /// The organization that holds the server's subscription and ledger.
    pub organization_id: OrganizationId,
    pub hostname: String,
    pub contact_email: String,
    #[serde(skip)]
    pub key_id: String,
    pub created_at: Timestamp,
    pub last_push_at: Option<Timestamp>,
    pub last_audit_log_id: Option<i64>,
    pub last_realm_count_id: Option<i64>,
    pub last_installation_count_id: Option<i64>,
}

/// The audit event an answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditSource {
    pub organization_id: String,
    pub id: String,
    pub event_type: i64,
    pub event_time: Timestamp,
}

/// An organization's state at one moment, from its audit history: the latest role counts at or
/// before it, and whether the organization was active.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeatSnapshot {
    pub role_counts: Option<tally_domain::seats::RoleCounts>,
    /// The audit event the counts come from.
    pub source: Option<AuditSource>,
    pub is_active: bool,
}

/// Rows of one table of a push: new ones, and re-sent ones that were already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct Stored {
    pub stored: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct PushOutcome {
    pub format: u8,
    pub realms: u64,
    pub realm_counts: Stored,
    pub installation_counts: Stored,
    pub audit_log_rows: Stored,
}

/// Where an audit event sorts for the ledger job: time, organization, id.
pub type AuditKey = (Timestamp, OrganizationId, String);

/// The UTC days `[from, to)` of an organization's events the churn report reads, and what it
/// counts in them.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityDays {
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub login_type: String,
    pub progress_type: String,
    /// An event property (letters, digits, `_`) read as a number.
    pub frustration_property: String,
}

/// One user's activity on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDay {
    pub user_id: String,
    pub activity: tally_domain::churn::DayActivity,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChurnRow {
    pub organization_id: OrganizationId,
    pub report_date: jiff::civil::Date,
    pub user_id: String,
    pub score: f64,
    pub risk_level: String,
    pub details: tally_domain::churn::ChurnDetails,
    pub login_count: i64,
    pub login_trend: String,
    pub days_until_renewal: Option<i64>,
    pub schema_version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChurnOrdering {
    ScoreDesc,
    ScoreAsc,
    User,
    DateDesc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChurnQuery {
    pub date: Option<jiff::civil::Date>,
    pub organization_id: Option<OrganizationId>,
    pub user_id: Option<String>,
    pub risk_level: Option<String>,
    pub min_score: Option<f64>,
    pub ordering: ChurnOrdering,
    pub page: Page,
}

impl ChurnQuery {
    /// The scores of the asked risk level, at least the first and below the second: asked for
    /// beside the level, so that the index on a day's scores finds the level's rows.
    pub fn level_scores(&self) -> (Option<f64>, Option<f64>) {
        let Some(level) = self.risk_level.as_deref().and_then(tally_domain::churn::RiskLevel::parse) else { return (None, None) };
        let (lowest, below) = level.scores();
        (Some(lowest), below)
    }
}

/// An open alert as a report reconciles it: whose, which condition, and the report day that
/// opened it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub id: String,
    pub user_id: Option<String>,
    pub alert_type: String,
    pub report_date: Option<jiff::civil::Date>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    /// `None` for system alerts, which belong to no organization.
    pub organization_id: Option<OrganizationId>,
    /// `churn_report`, `rule` or `system`.
    pub source: String,
    pub rule_id: Option<String>,
    /// What makes two alerts the same one: at most one open alert per key and organization.
    #[serde(skip)]
    pub key: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub alert_type: String,
    pub severity: String,
    /// `open` or `resolved`.
    pub status: String,
    /// The report that opened it, if a report did.
    pub report_date: Option<jiff::civil::Date>,
    pub details: serde_json::Value,
    pub opened_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// `auto` (the condition cleared) or `manual`.
    pub resolution: Option<String>,
    pub action_taken: Option<String>,
}

/// One message to one channel about one alert, and how its delivery went.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub organization_id: Option<OrganizationId>,
    pub channel_id: String,
    pub alert_id: String,
    /// `alert.opened` or `alert.resolved`.
    pub event_type: String,
    pub payload: serde_json::Value,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: u32,
    pub attempt_log: Vec<DeliveryAttempt>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryQuery {
    pub organization_id: Option<OrganizationId>,
    pub status: Option<String>,
    pub channel_id: Option<String>,
    pub alert_id: Option<String>,
    pub page: Option<Page>,
}

/// Totals a rule evaluation needs: a subject's usage from `from` on (all time if `None`), or,
/// with `last_requests`, the outcome of its latest LLM requests.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowQuery {
    pub subject: tally_domain::alerts::evaluate::Subject,
    pub from: Option<Timestamp>,
    pub last_requests: Option<u32>,
}

/// One organization's churn rows of a day, and its alert changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnBatch {
    pub organization_id: OrganizationId,
    pub rows: Vec<ChurnRow>,
    pub open: Vec<Alert>,
    /// Ids of open alerts to resolve.
    pub resolve: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    pub id: Option<String>,
    pub source: Option<String>,
    pub rule_id: Option<String>,
    pub status: Option<String>,
    pub severity: Option<String>,
    pub alert_type: Option<String>,
    pub organization_id: Option<OrganizationId>,
    pub user_id: Option<String>,
    pub page: Option<Page>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReportRun {
    pub id: String,
    pub report: String,
    pub report_date: jiff::civil::Date,
    pub organization_id: Option<String>,
    /// `succeeded` or `failed`.
    pub status: String,
    pub rows_written: u64,
    pub alerts_opened: u64,
    pub alerts_resolved: u64,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// The merged latency histograms of whole days, and the first day that had any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyDays {
    pub histogram: tally_domain::llm::latency::LatencyHistogram,
    pub first_day: Option<Timestamp>,
}

/// What an import commit stored: events new to the store, and those it already held (or that
/// were staged twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub accepted: u64,
    pub duplicates: u64,
}
