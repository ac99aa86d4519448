//! The LLM price table: per model, the price of a million input and of a million output tokens,
//! matched by exact name, then by the most specific `*` pattern. An event that carries its own
//! cost keeps it; one that does not is priced here at ingest, exactly (integer nano-units), and
//! one whose model has no price keeps no cost (listed as unpriced, never counted as $0).

use crate::Money;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// An exact model name, or a pattern where `*` stands for any run of characters
    /// (`claude-3-5-sonnet-*`).
    pub model: String,
    pub input_per_million: Money,
    pub output_per_million: Money,
    /// The price of a million input tokens read from the prompt cache; `None`: as other input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<Money>,
}

impl ModelPrice {
    pub fn check(&self) -> Result<(), String> {
        if self.model.is_empty() || self.model.len() > 128 || self.model.chars().any(char::is_control) {
            return Err("`model` must be 1 to 128 characters".into());
        }
        if self.input_per_million.nanos() < 0
            || self.output_per_million.nanos() < 0
            || self.cached_input_per_million.is_some_and(|p| p.nanos() < 0)
        {
            return Err("prices must not be negative".into());
        }
        Ok(())
    }

    fn is_pattern(&self) -> bool {
        self.model.contains('*')
    }

    /// Whether `name` fits this entry's pattern (`*` matches any run, including none).
    fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = self.model.split('*').collect();
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
            return false;
        }
        let mut rest = &name[first.len()..name.len() - last.len()];
        for middle in &parts[1..parts.len() - 1] {
            match rest.find(middle) {
                Some(i) => rest = &rest[i + middle.len()..],
                None => return false,
            }
        }
        true
    }

    /// The cost of a request, rounded half up to the nano-unit; `cached` of the input tokens came
    /// from the prompt cache.
    pub fn cost(&self, input_tokens: i64, cached: i64, output_tokens: i64) -> Money {
        let cached = cached.clamp(0, input_tokens.max(0));
        let cached_price = self.cached_input_per_million.unwrap_or(self.input_per_million);
        let nanos = i128::from(input_tokens - cached) * i128::from(self.input_per_million.nanos())
            + i128::from(cached) * i128::from(cached_price.nanos())
            + i128::from(output_tokens) * i128::from(self.output_per_million.nanos());
        Money::from_nanos(((nanos + 500_000) / 1_000_000).clamp(0, i128::from(i64::MAX)) as i64)
    }
}

/// The entry pricing `model`: its exact name, else the matching pattern with the most literal
/// characters.
pub fn find<'a>(prices: &'a [ModelPrice], model: &str) -> Option<&'a ModelPrice> {
    prices.iter().find(|p| !p.is_pattern() && p.model == model).or_else(|| {
        prices.iter().filter(|p| p.is_pattern() && p.matches(model)).max_by_key(|p| p.model.len() - p.model.matches('*').count())
    })
}

/// The whole table and its version (raised by every change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PriceTable {
    pub version: i64,
    pub prices: Vec<ModelPrice>,
}

impl PriceTable {
    /// Prices the LLM requests that carry no cost of their own, recording the table version;
    /// requests whose model has no price keep no cost.
    pub fn price(&self, events: &mut [crate::UsageEvent]) {
        for e in events.iter_mut().filter(|e| e.usage_type.as_str() == "llm_request") {
            let Some(llm) = e.llm.as_mut() else { continue };
            if llm.cost.is_some() {
                continue;
            }
            if let Some(price) = llm.model.as_deref().and_then(|m| find(&self.prices, m)) {
                llm.cost = Some(price.cost(llm.input_tokens, llm.cached_input_tokens, llm.output_tokens));
                llm.price_version = Some(self.version);
            }
        }
    }
}

/// A model that LLM requests named without a cost and without a price in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpricedModel {
    /// Empty when the requests named no model.
    pub model: String,
    pub requests: i64,
    pub last_seen: jiff::Timestamp,
}

/// The table a fresh store starts with: list prices (USD per million tokens) of widely used
/// models; edit them through `/v1/llm/prices`.
pub fn defaults() -> Vec<ModelPrice> {
    let money = |text: &str| Money::parse_non_negative(text).expect("valid default");
    let price = |model: &str, input: &str, cached: Option<&str>, output: &str| ModelPrice {
        model: model.to_owned(),
        input_per_million: money(input),
        output_per_million: money(output),
        cached_input_per_million: cached.map(money),
    };
    vec![
        price("gpt-4o", "2.50", Some("1.25"), "10.00"),
        price("gpt-4o-*", "2.50", Some("1.25"), "10.00"),
        price("gpt-4o-mini", "0.15", Some("0.075"), "0.60"),
        price("gpt-4o-mini-*", "0.15", Some("0.075"), "0.60"),
        price("gpt-4.1", "2.00", Some("0.50"), "8.00"),
        price("gpt-4.1-mini", "0.40", Some("0.10"), "1.60"),
        price("gpt-4.1-nano", "0.10", Some("0.025"), "0.40"),
        price("o3-mini", "1.10", Some("0.55"), "4.40"),
        price("claude-3-5-sonnet-*", "3.00", Some("0.30"), "15.00"),
        price("claude-3-7-sonnet-*", "3.00", Some("0.30"), "15.00"),
        price("claude-sonnet-4*", "3.00", Some("0.30"), "15.00"),
        price("claude-3-5-haiku-*", "0.80", Some("0.08"), "4.00"),
        price("claude-opus-4*", "15.00", Some("1.50"), "75.00"),
        price("gemini-1.5-pro*", "1.25", None, "5.00"),
        price("gemini-1.5-flash*", "0.075", None, "0.30"),
        price("gemini-2.0-flash*", "0.10", Some("0.025"), "0.40"),
        price("mistral-large-*", "2.00", None, "6.00"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_then_the_most_specific_pattern() {
        let table = defaults();
        assert_eq!(find(&table, "gpt-4o").unwrap().model, "gpt-4o");
        assert_eq!(find(&table, "gpt-4o-2024-08-06").unwrap().model, "gpt-4o-*");
        // Both "gpt-4o-*" and "gpt-4o-mini-*" match; the longer literal wins.
        assert_eq!(find(&table, "gpt-4o-mini-2024-07-18").unwrap().model, "gpt-4o-mini-*");
        assert_eq!(find(&table, "claude-3-5-sonnet-20241022").unwrap().model, "claude-3-5-sonnet-*");
        assert!(find(&table, "my-finetune").is_none());
        let middle = ModelPrice {
            model: "a*b*c".into(),
            input_per_million: Money::from_nanos(0),
            output_per_million: Money::from_nanos(0),
            cached_input_per_million: None,
        };
        assert!(middle.matches("abc") && middle.matches("a-b-c") && !middle.matches("acb") && !middle.matches("ab"));
    }

    #[test]
    fn events_without_a_cost_are_priced_and_the_rest_kept() {
        let types: std::collections::HashSet<String> = ["llm_request".to_owned()].into();
        let ctx = crate::event::ValidationContext { now: jiff::Timestamp::now(), known_types: &types };
        let event = |json: &str| crate::RawEvent::from_json(json).unwrap().validate(&ctx).unwrap();
        let base = r#""timestamp":"2025-01-01T00:00:00Z","organization_id":"o","user_id":"u","type":"llm_request","input_tokens":1000,"output_tokens":500"#;
        let mut events = vec![
            event(&format!(r#"{{"id":"a",{base},"model":"gpt-4o"}}"#)),
            event(&format!(r#"{{"id":"b",{base},"model":"gpt-4o","cost":"1.5"}}"#)),
            event(&format!(r#"{{"id":"c",{base},"model":"my-finetune"}}"#)),
        ];
        PriceTable { version: 7, prices: defaults() }.price(&mut events);
        let llm = |i: usize| events[i].llm.clone().unwrap();
        assert_eq!((llm(0).cost.map(|c| c.to_string()), llm(0).price_version), (Some("0.0075".into()), Some(7)));
        assert_eq!((llm(1).cost.map(|c| c.to_string()), llm(1).price_version), (Some("1.5".into()), None));
        assert_eq!((llm(2).cost, llm(2).price_version), (None, None));
    }

    #[test]
    fn costs_are_exact() {
        let p = find(&defaults(), "gpt-4o").unwrap().clone();
        // 1,000 input tokens at $2.50/M + 500 output at $10/M = 0.0025 + 0.005.
        assert_eq!(p.cost(1000, 0, 500).to_string(), "0.0075");
        assert_eq!(p.cost(0, 0, 0).to_string(), "0");
        // 600 of the 1,000 input tokens from the cache, at $1.25/M: 0.001 + 0.00075 + 0.005.
        assert_eq!(p.cost(1000, 600, 500).to_string(), "0.00675");
        let tiny = ModelPrice {
            model: "t".into(),
            input_per_million: Money::from_nanos(1),
            output_per_million: Money::from_nanos(0),
            cached_input_per_million: None,
        };
        // 499,999 tokens × 1 nano / 1e6 rounds down; 500,000 rounds up; no cached price: as input.
        assert_eq!((tiny.cost(499_999, 0, 0).nanos(), tiny.cost(500_000, 0, 0).nanos()), (0, 1));
        assert_eq!(tiny.cost(500_000, 500_000, 0).nanos(), 1);
        assert!(ModelPrice { model: String::new(), ..p }.check().is_err());
    }
}
