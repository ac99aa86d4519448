//! The parameters of `GET /v1/usage` and `GET /v1/spend`, checked one by one so that every
//! mistake is reported with the parameter's name and what it accepts.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tally_domain::series::{Dimension, Grid, Interval, parse_instant};
use tally_domain::{OrganizationId, TeamId, UsageType, UsageTypeKey, UserId};
use tally_store::UsageFilter;

/// Beyond this many buckets an answer is refused rather than computed.
pub const MAX_BUCKETS: usize = 10_000;
const MAX_HOURLY_DAYS: i64 = 31;
const MAX_BREAKDOWNS: usize = 3;
const MAX_LIMIT: usize = 1000;

const NAMES: [&str; 12] = [
    "organization_id",
    "team_id",
    "user_id",
    "usage_type",
    "breakdowns",
    "interval",
    "date_from",
    "date_to",
    "timezone",
    "compare",
    "limit",
    "format",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub parameter: String,
    pub detail: String,
}

fn bad(parameter: &str, detail: impl Into<String>) -> ParamError {
    ParamError { parameter: parameter.to_owned(), detail: detail.into() }
}

/// The raw query string values, by name.
#[derive(Debug, Clone, Default)]
pub struct SeriesParams {
    pub organization_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub usage_type: Option<String>,
    pub breakdowns: Option<String>,
    pub interval: Option<String>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub timezone: Option<String>,
    pub compare: Option<String>,
    pub limit: Option<String>,
    pub format: Option<String>,
}

/// What a series measures: usage in its units, or spend in money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Usage,
    Spend,
}

#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub filter: UsageFilter,
    pub breakdowns: Vec<Dimension>,
    pub grid: Grid,
    pub timezone: TimeZone,
    pub compare: bool,
    pub limit: Option<usize>,
    pub csv: bool,
    /// No `date_to` was given: the range ends at the present.
    pub to_present: bool,
}

impl SeriesParams {
    /// Collects query pairs; an unknown or repeated name is an error.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<SeriesParams, ParamError> {
        let mut p = SeriesParams::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "organization_id" => &mut p.organization_id,
                "team_id" => &mut p.team_id,
                "user_id" => &mut p.user_id,
                "usage_type" => &mut p.usage_type,
                "breakdowns" => &mut p.breakdowns,
                "interval" => &mut p.interval,
                "date_from" => &mut p.date_from,
                "date_to" => &mut p.date_to,
                "timezone" => &mut p.timezone,
                "compare" => &mut p.compare,
                "limit" => &mut p.limit,
                "format" => &mut p.format,
                _ => return Err(bad(&name, format!("unknown parameter; the parameters are {}", NAMES.join(", ")))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(&name, "given more than once"));
            }
        }
        Ok(p)
    }

    pub fn parse(&self, measure: Measure, now: Timestamp, known: &[UsageType]) -> Result<SeriesQuery, ParamError> {
        let timezone = match self.timezone.as_deref() {
            None | Some("") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| bad("timezone", format!("{name:?} is not an IANA time zone such as Europe/Paris")))?
            }
        };
        let interval = match self.interval.as_deref() {
            None => Interval::Day,
            Some(s) => Interval::parse(s).ok_or_else(|| bad("interval", format!("{s:?} is not one of {}", Interval::ALL.join(", "))))?,
        };
        let now_zoned = now.to_zoned(timezone.clone());
        let instant = |name: &str, value: Option<&str>, default: &str, is_end: bool| {
            let value = value.unwrap_or(default);
            parse_instant(value, &timezone, &now_zoned, is_end).ok_or_else(|| {
                bad(name, format!("{value:?} is not an RFC 3339 date or date-time (2025-01-31, 2025-01-31T10:00:00Z) or a relative time (-30d, -12w, -6m)"))
            })
        };
        let from = instant("date_from", self.date_from.as_deref(), "-30d", false)?;
        let to = match self.date_to.as_deref() {
            None => now_zoned.clone(),
            Some(v) => instant("date_to", Some(v), "", true)?,
        };
        if to.timestamp() <= from.timestamp() {
            return Err(bad("date_to", format!("{} is not after date_from {}", to.timestamp(), from.timestamp())));
        }
        if interval == Interval::Hour && from.timestamp().duration_until(to.timestamp()) > SignedDuration::from_hours(24 * MAX_HOURLY_DAYS)
        {
            return Err(bad("interval", format!("an hour interval covers at most {MAX_HOURLY_DAYS} days; use day, week or month")));
        }
        let grid = Grid::new(interval, &from, to.timestamp(), MAX_BUCKETS)
            .ok_or_else(|| bad("date_from", format!("the range holds more than {MAX_BUCKETS} {interval} buckets")))?;

        let mut breakdowns = match self.breakdowns.as_deref().map(str::trim) {
            None | Some("") => vec![],
            Some(s) => parse_breakdowns(s)?,
        };
        let usage_types = match self.usage_type.as_deref().map(str::trim) {
            None | Some("") => vec![],
            Some(s) => s.split(',').map(|key| known_type(key.trim(), known)).collect::<Result<Vec<_>, _>>()?,
        };
        match measure {
            Measure::Usage => {
                if usage_types.is_empty() && !breakdowns.contains(&Dimension::Type) {
                    return Err(bad("usage_type", "required unless `breakdowns` includes \"type\": sums of different units mean nothing"));
                }
                // Several types are never summed together: each gets its own series.
                if usage_types.len() > 1 && !breakdowns.contains(&Dimension::Type) {
                    breakdowns.insert(0, Dimension::Type);
                }
            }
            // Money adds up across usage types; LLM status is not a priced dimension.
            Measure::Spend => {
                if breakdowns.contains(&Dimension::Status) {
                    let allowed: Vec<&str> = Dimension::ALL.iter().copied().filter(|d| *d != "status").collect();
                    return Err(bad(
                        "breakdowns",
                        format!("spend cannot be broken down by status; the dimensions are {}", allowed.join(", ")),
                    ));
                }
            }
        }
        let limit = match self.limit.as_deref() {
            None => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad("limit", format!("{s:?} is not a whole number from 1 to {MAX_LIMIT}")))?,
            ),
        };
        let compare = match self.compare.as_deref() {
            None | Some("") => false,
            Some("previous_period") => true,
            Some(s) => return Err(bad("compare", format!("{s:?} is not supported; the only comparison is previous_period"))),
        };
        let csv = match self.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(s) => return Err(bad("format", format!("{s:?} is not one of json, csv"))),
        };
        let filter = UsageFilter {
            organization_id: self.organization_id.as_deref().map(|s| parse_id("organization_id", s, OrganizationId::parse)).transpose()?,
            team_id: self.team_id.as_deref().map(|s| parse_id("team_id", s, TeamId::parse)).transpose()?,
            user_id: self.user_id.as_deref().map(|s| parse_id("user_id", s, UserId::parse)).transpose()?,
            usage_types,
        };
        let to_present = self.date_to.is_none();
        Ok(SeriesQuery { filter, breakdowns, grid, timezone, compare, limit, csv, to_present })
    }
}

fn parse_id<T, E>(name: &str, value: &str, parse: fn(String) -> Result<T, E>) -> Result<T, ParamError> {
    parse(value.to_owned()).map_err(|_| bad(name, format!("{value:?} is not a valid identifier (1 to 128 bytes, no control characters)")))
}

fn known_type(key: &str, known: &[UsageType]) -> Result<UsageTypeKey, ParamError> {
    known.iter().find(|t| t.key.as_str() == key).map(|t| t.key.clone()).ok_or_else(|| {
        let names: Vec<&str> = known.iter().map(|t| t.key.as_str()).collect();
        bad("usage_type", format!("unknown usage type {key:?}; the known ones are {}", names.join(", ")))
    })
}

/// A JSON array (`["type","team"]`) or a comma-separated list.
fn parse_breakdowns(s: &str) -> Result<Vec<Dimension>, ParamError> {
    let names: Vec<String> = if s.starts_with('[') {
        serde_json::from_str(s).map_err(|e| bad("breakdowns", format!("not a JSON array of strings: {e}")))?
    } else {
        s.split(',').map(|p| p.trim().to_owned()).collect()
    };
    if names.len() > MAX_BREAKDOWNS {
        return Err(bad("breakdowns", format!("at most {MAX_BREAKDOWNS} dimensions")));
    }
    let mut dims = Vec::new();
    for name in names {
        let d = Dimension::parse(&name)
            .ok_or_else(|| bad("breakdowns", format!("unknown dimension {name:?}; the dimensions are {}", Dimension::ALL.join(", "))))?;
        if dims.contains(&d) {
            return Err(bad("breakdowns", format!("{name:?} appears twice")));
        }
        dims.push(d);
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SeriesQuery, ParamError> {
        let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SeriesParams::from_pairs(pairs)?.parse(Measure::Usage, "2025-06-15T12:34:00Z".parse().unwrap(), &UsageType::builtins())
    }

    fn rejected(pairs: &[(&str, &str)]) -> String {
        parse(pairs).unwrap_err().parameter
    }

    #[test]
    fn defaults_are_thirty_days_of_days_in_utc() {
        let q = parse(&[("usage_type", "api_call")]).unwrap();
        assert_eq!(q.grid.interval, Interval::Day);
        assert_eq!(q.grid.starts.len(), 31);
        assert_eq!(q.grid.from().to_string(), "2025-05-16T00:00:00Z");
        assert_eq!(q.grid.end.to_string(), "2025-06-15T12:34:00Z");
        assert!(q.breakdowns.is_empty() && !q.compare && q.limit.is_none());
    }

    #[test]
    fn several_types_get_a_type_breakdown() {
        let q = parse(&[("usage_type", "api_call,submission"), ("breakdowns", r#"["team"]"#)]).unwrap();
        assert_eq!(q.breakdowns, [Dimension::Type, Dimension::Team]);
        let q = parse(&[("breakdowns", "type,model")]).unwrap();
        assert!(q.filter.usage_types.is_empty());
    }

    #[test]
    fn every_mistake_names_its_parameter() {
        assert_eq!(rejected(&[]), "usage_type");
        assert_eq!(rejected(&[("usage_type", "nope")]), "usage_type");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("interval", "fortnight")]), "interval");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("breakdowns", r#"["colour"]"#)]), "breakdowns");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("breakdowns", r#"["type","team","user","model"]"#)]), "breakdowns");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("breakdowns", "[1]")]), "breakdowns");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("timezone", "Mars/Olympus")]), "timezone");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("date_from", "2025-02-01"), ("date_to", "2025-01-01")]), "date_to");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("interval", "hour"), ("date_from", "-40d")]), "interval");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("date_from", "1990-01-01")]), "date_from");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("limit", "0")]), "limit");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("limit", "ten")]), "limit");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("compare", "last_year")]), "compare");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("colour", "red")]), "colour");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("usage_type", "login")]), "usage_type");
        assert_eq!(rejected(&[("usage_type", "api_call"), ("date_from", "yesterday")]), "date_from");
    }

    #[test]
    fn spend_needs_no_usage_type_but_refuses_status() {
        let spend = |pairs: &[(&str, &str)]| {
            let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            SeriesParams::from_pairs(pairs).unwrap().parse(Measure::Spend, "2025-06-15T12:34:00Z".parse().unwrap(), &UsageType::builtins())
        };
        assert!(spend(&[]).is_ok());
        assert_eq!(spend(&[("breakdowns", "status")]).unwrap_err().parameter, "breakdowns");
    }

    #[test]
    fn an_end_date_includes_its_whole_day_in_the_zone() {
        let q = parse(&[
            ("usage_type", "api_call"),
            ("date_from", "2025-03-01"),
            ("date_to", "2025-03-31"),
            ("timezone", "Europe/Paris"),
            ("interval", "week"),
        ])
        .unwrap();
        // Paris is on summer time (+02:00) from March 30th.
        assert_eq!(q.grid.end.to_string(), "2025-03-31T22:00:00Z");
        assert_eq!(q.grid.starts[0].date().to_string(), "2025-02-24");
    }
}
