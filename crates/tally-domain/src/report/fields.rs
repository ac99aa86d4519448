//! The fields a user report can be filtered and ordered by, their types, and the typing of a
//! parsed `q` query against them: an unknown field, a lookup that does not fit the field's type
//! or a value that does not parse is an error naming the term, never an empty result.

use super::q::{Expr, Term};
use jiff::Timestamp;
use jiff::civil::Date;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Integer,
    Number,
    Boolean,
    DateTime,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::DateTime => "date-time",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    AllTime,
    Current,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmMeasure {
    Requests,
    Failed,
    InputTokens,
    OutputTokens,
    Cost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceMeasure {
    EffectiveLimit,
    BalanceValue,
    BalancePercent,
    Exceeded,
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A column of the user's row (`users`).
    User(&'static str),
    /// First and last name with a space between.
    FullName,
    /// A column of the user's organization.
    Organization(&'static str),
    /// A key of the user's free-form metadata (compared as text).
    Metadata(String),
    /// A column of any of the organization's subscriptions (`subscriptions[]__…`).
    Subscription(&'static str),
    /// A usage type's sum, all time or in the current billing period.
    Usage {
        usage_type: String,
        period: Period,
    },
    Llm {
        period: Period,
        measure: LlmMeasure,
    },
    /// The latest `storage_bytes` value.
    TotalStorage,
    Balance {
        usage_type: String,
        measure: BalanceMeasure,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub path: String,
    pub ty: FieldType,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Exact,
    IExact,
    Contains,
    IContains,
    StartsWith,
    IStartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    IsNull,
}

impl Lookup {
    const ALL: [(&'static str, Lookup); 12] = [
        ("exact", Lookup::Exact),
        ("iexact", Lookup::IExact),
        ("contains", Lookup::Contains),
        ("icontains", Lookup::IContains),
        ("startswith", Lookup::StartsWith),
        ("istartswith", Lookup::IStartsWith),
        ("gt", Lookup::Gt),
        ("gte", Lookup::Gte),
        ("lt", Lookup::Lt),
        ("lte", Lookup::Lte),
        ("in", Lookup::In),
        ("isnull", Lookup::IsNull),
    ];

    fn parse(s: &str) -> Option<Lookup> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, l)| *l)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, l)| *l == self).map_or("exact", |(n, _)| n)
    }

    fn fits(self, ty: FieldType) -> bool {
        use Lookup::*;
        match self {
            Exact | In | IsNull => true,
            IExact | Contains | IContains | StartsWith | IStartsWith => ty == FieldType::Text,
            Gt | Gte | Lt | Lte => matches!(ty, FieldType::Integer | FieldType::Number | FieldType::DateTime),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    DateTime(Timestamp),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub lookup: Lookup,
    /// One value, several for `in`, and for `isnull` a boolean.
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Condition(Condition),
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// A term that does not fit the fields, and what would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub at: usize,
    pub token: String,
    pub message: String,
    /// For an unknown field: the fields there are.
    pub allowed: Option<Vec<String>>,
}

const USER_FIELDS: [(&str, FieldType, &str); 14] = [
    ("id", FieldType::Text, "user_id"),
    ("username", FieldType::Text, "username"),
    ("email", FieldType::Text, "email"),
    ("first_name", FieldType::Text, "first_name"),
    ("last_name", FieldType::Text, "last_name"),
    ("is_active", FieldType::Boolean, "is_active"),
    ("is_superuser", FieldType::Boolean, "is_superuser"),
    ("is_bot", FieldType::Boolean, "is_bot"),
    ("role", FieldType::Integer, "role"),
    ("date_joined", FieldType::DateTime, "date_joined"),
    ("last_login", FieldType::DateTime, "last_login"),
    ("last_activity", FieldType::DateTime, "last_activity"),
    ("organization__role", FieldType::Integer, "role"),
    ("organization__id", FieldType::Text, "organization_id"),
];

const SUBSCRIPTION_FIELDS: [(&str, FieldType, &str); 6] = [
    ("id", FieldType::Text, "subscription_id"),
    ("plan", FieldType::Text, "plan_id"),
    ("status", FieldType::Text, "status"),
    ("current_period_start", FieldType::DateTime, "current_period_start"),
    ("current_period_end", FieldType::DateTime, "current_period_end"),
    ("trial_end", FieldType::DateTime, "trial_end"),
];

const LLM_MEASURES: [(&str, LlmMeasure, FieldType); 5] = [
    ("requests", LlmMeasure::Requests, FieldType::Integer),
    ("failed", LlmMeasure::Failed, FieldType::Integer),
    ("input_tokens", LlmMeasure::InputTokens, FieldType::Integer),
    ("output_tokens", LlmMeasure::OutputTokens, FieldType::Integer),
    ("cost", LlmMeasure::Cost, FieldType::Number),
];

const BALANCE_MEASURES: [(&str, BalanceMeasure, FieldType); 4] = [
    ("effective_limit", BalanceMeasure::EffectiveLimit, FieldType::Number),
    ("balance_value", BalanceMeasure::BalanceValue, FieldType::Number),
    ("balance_percent", BalanceMeasure::BalancePercent, FieldType::Number),
    ("exceeded", BalanceMeasure::Exceeded, FieldType::Boolean),
];

/// The fields there are, given the usage types the store knows.
pub struct Catalog {
    usage_types: Vec<String>,
}

impl Catalog {
    pub fn new(mut usage_types: Vec<String>) -> Self {
        usage_types.sort();
        Catalog { usage_types }
    }

    fn field(path: &str, ty: FieldType, source: Source) -> Field {
        Field { path: path.to_owned(), ty, source }
    }

    /// The field at exactly this path.
    pub fn resolve(&self, path: &str) -> Option<Field> {
        if let Some((_, ty, column)) = USER_FIELDS.iter().find(|(n, _, _)| *n == path) {
            return Some(Self::field(path, *ty, Source::User(column)));
        }
        match path {
            "full_name" => return Some(Self::field(path, FieldType::Text, Source::FullName)),
            "organization__name" => return Some(Self::field(path, FieldType::Text, Source::Organization("name"))),
            "service_usage__total_storage_bytes" => return Some(Self::field(path, FieldType::Number, Source::TotalStorage)),
            _ => {}
        }
        if let Some(key) = path.strip_prefix("metadata__") {
            let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            return ok.then(|| Self::field(path, FieldType::Text, Source::Metadata(key.to_owned())));
        }
        if let Some(rest) = path.strip_prefix("subscriptions[]__") {
            let (_, ty, column) = SUBSCRIPTION_FIELDS.iter().find(|(n, _, _)| *n == rest)?;
            return Some(Self::field(path, *ty, Source::Subscription(column)));
        }
        let rest = path.strip_prefix("service_usage__")?;
        if let Some(rest) = rest.strip_prefix("llm__") {
            let (period, measure) = rest.split_once("__")?;
            let period = match period {
                "all_time" => Period::AllTime,
                "current_period" => Period::Current,
                _ => return None,
            };
            let (_, m, ty) = LLM_MEASURES.iter().find(|(n, _, _)| *n == measure)?;
            return Some(Self::field(path, *ty, Source::Llm { period, measure: *m }));
        }
        if let Some(rest) = rest.strip_prefix("balances__") {
            let (usage_type, measure) = rest.split_once("__")?;
            self.usage_types.iter().find(|t| *t == usage_type)?;
            let (_, m, ty) = BALANCE_MEASURES.iter().find(|(n, _, _)| *n == measure)?;
            return Some(Self::field(path, *ty, Source::Balance { usage_type: usage_type.to_owned(), measure: *m }));
        }
        let (usage_type, period) = rest.split_once("__")?;
        self.usage_types.iter().find(|t| *t == usage_type)?;
        let period = match period {
            "all_time" => Period::AllTime,
            "current_period" => Period::Current,
            _ => return None,
        };
        Some(Self::field(path, FieldType::Number, Source::Usage { usage_type: usage_type.to_owned(), period }))
    }

    /// Every field path, for error messages (usage types shown as `<type>`).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = USER_FIELDS.iter().map(|(n, _, _)| (*n).to_owned()).collect();
        names.extend(["full_name", "organization__name", "metadata__<key>", "service_usage__total_storage_bytes"].map(String::from));
        names.extend(SUBSCRIPTION_FIELDS.iter().map(|(n, _, _)| format!("subscriptions[]__{n}")));
        names.extend(["service_usage__<type>__all_time", "service_usage__<type>__current_period"].map(String::from));
        names.extend(LLM_MEASURES.iter().map(|(n, _, _)| format!("service_usage__llm__{{all_time,current_period}}__{n}")));
        names.extend(BALANCE_MEASURES.iter().map(|(n, _, _)| format!("service_usage__balances__<type>__{n}")));
        names.push(format!("(<type>: {})", self.usage_types.join(", ")));
        names
    }

    /// Types a parsed query: each term's field, lookup and value.
    pub fn typed(&self, expr: &Expr) -> Result<Filter, FieldError> {
        Ok(match expr {
            Expr::Term(term) => Filter::Condition(self.condition(term)?),
            Expr::Not(inner) => Filter::Not(Box::new(self.typed(inner)?)),
            Expr::And(parts) => Filter::And(parts.iter().map(|p| self.typed(p)).collect::<Result<_, _>>()?),
            Expr::Or(parts) => Filter::Or(parts.iter().map(|p| self.typed(p)).collect::<Result<_, _>>()?),
        })
    }

    fn condition(&self, term: &Term) -> Result<Condition, FieldError> {
        let shown = if term.path.is_empty() { term.value.clone() } else { format!("{}:{}", term.path, term.value) };
        let error = |message: String, allowed: Option<Vec<String>>| FieldError { at: term.at, token: shown.clone(), message, allowed };
        if term.path.is_empty() {
            // A bare word searches usernames.
            if term.value.chars().count() < 3 {
                return Err(error("a search word needs at least 3 characters".into(), None));
            }
            let field = self.resolve("username").expect("username exists");
            return Ok(Condition { field, lookup: Lookup::IContains, values: vec![Value::Text(term.value.clone())] });
        }
        let (field, lookup) = match self.resolve(&term.path) {
            Some(field) => (field, Lookup::Exact),
            None => {
                let parsed = term.path.rsplit_once("__").and_then(|(path, lookup)| Some((self.resolve(path)?, Lookup::parse(lookup)?)));
                parsed.ok_or_else(|| error(format!("unknown field {:?}", term.path), Some(self.names())))?
            }
        };
        if !lookup.fits(field.ty) {
            return Err(error(format!("`{}` does not apply to {} field {}", lookup.name(), field.ty, field.path), None));
        }
        let values = match lookup {
            Lookup::IsNull => vec![Value::Boolean(boolean(&term.value).ok_or_else(|| error("isnull takes true or false".into(), None))?)],
            Lookup::In => {
                term.value.split(',').map(|v| typed_value(field.ty, v.trim())).collect::<Result<_, _>>().map_err(|m| error(m, None))?
            }
            _ => vec![typed_value(field.ty, &term.value).map_err(|m| error(m, None))?],
        };
        Ok(Condition { field, lookup, values })
    }
}

fn boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A date-time (RFC 3339), or a date meaning its midnight in UTC.
pub fn date_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>()
        .ok()
        .or_else(|| s.parse::<Date>().ok().and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok()).map(|z| z.timestamp()))
}

fn typed_value(ty: FieldType, s: &str) -> Result<Value, String> {
    let fail = || format!("{s:?} is not a {ty} value");
    Ok(match ty {
        FieldType::Text => Value::Text(s.to_owned()),
        FieldType::Integer => Value::Integer(s.parse().map_err(|_| fail())?),
        FieldType::Number => Value::Number(s.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(fail)?),
        FieldType::Boolean => Value::Boolean(boolean(s).ok_or_else(fail)?),
        FieldType::DateTime => Value::DateTime(date_time(s).ok_or_else(fail)?),
    })
}

/// One `ordering` item: a field and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub field: Field,
    pub descending: bool,
}

impl Catalog {
    /// `ordering=-service_usage__llm__current_period__cost,username`: scalar fields only.
    pub fn ordering(&self, text: &str) -> Result<Vec<Order>, FieldError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (descending, path) = match item.strip_prefix('-') {
                    Some(p) => (true, p),
                    None => (false, item),
                };
                let field = self.resolve(path).filter(|f| !matches!(f.source, Source::Subscription(_))).ok_or_else(|| FieldError {
                    at: 0,
                    token: item.to_owned(),
                    message: format!("cannot order by {path:?}"),
                    allowed: Some(self.names().into_iter().filter(|n| !n.starts_with("subscriptions[]")).collect()),
                })?;
                Ok(Order { field, descending })
            })
            .collect()
    }
}
