//! User reports: the `q` filter language ([`q`]), the fields it can name and their types
//! ([`fields`]), billing periods and balances ([`balance`]). Compiling a typed filter to SQL is
//! the store's job.

pub mod balance;
pub mod fields;
pub mod q;

pub use fields::{Catalog, Condition, Field, FieldError, FieldType, Filter, Lookup, Order, Source, Value};

/// Parses and types a `q` query; `Ok(None)` when it is empty.
pub fn filter(query: &str, catalog: &Catalog) -> Result<Option<Filter>, FieldError> {
    let expr = q::parse(query).map_err(|e| FieldError { at: e.at, token: e.token, message: e.message, allowed: None })?;
    expr.map(|e| catalog.typed(&e)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(["submission", "storage_bytes", "llm_request", "api_call"].map(String::from).to_vec())
    }

    /// `(query, Ok(rendering) | Err(fragment of the error))`: valid queries render as a compact
    /// S-expression of field, lookup and typed values.
    const CASES: &[(&str, Result<&str, &str>)] = &[
        ("username:ann", Ok("username exact Text(\"ann\")")),
        ("username__iexact:Ann", Ok("username iexact Text(\"Ann\")")),
        ("email__contains:@acme", Ok("email contains Text(\"@acme\")")),
        ("email__icontains:ACME", Ok("email icontains Text(\"ACME\")")),
        ("username__startswith:a", Ok("username startswith Text(\"a\")")),
        ("username__istartswith:A", Ok("username istartswith Text(\"A\")")),
        ("role:400", Ok("role exact Integer(400)")),
        ("role__in:100,200", Ok("role in Integer(100) Integer(200)")),
        ("role__lt:300", Ok("role lt Integer(300)")),
        ("is_bot:true", Ok("is_bot exact Boolean(true)")),
        ("is_active:false", Ok("is_active exact Boolean(false)")),
        ("last_login__isnull:true", Ok("last_login isnull Boolean(true)")),
        ("date_joined__gte:2025-01-01T10:00:00Z", Ok("date_joined gte DateTime(2025-01-01T10:00:00Z)")),
        ("date_joined__lt:2025-02-01", Ok("date_joined lt DateTime(2025-02-01T00:00:00Z)")),
        ("full_name__icontains:\"ann lee\"", Ok("full_name icontains Text(\"ann lee\")")),
        ("organization__name:'Acme Corp'", Ok("organization__name exact Text(\"Acme Corp\")")),
        ("organization__id:acme", Ok("organization__id exact Text(\"acme\")")),
        ("metadata__plan_tier:gold", Ok("metadata__plan_tier exact Text(\"gold\")")),
        ("subscriptions[]__status:active", Ok("subscriptions[]__status exact Text(\"active\")")),
        ("subscriptions[]__plan__in:basic,pro", Ok("subscriptions[]__plan in Text(\"basic\") Text(\"pro\")")),
        ("service_usage__submission__current_period__gte:10", Ok("service_usage__submission__current_period gte Number(10.0)")),
        ("service_usage__submission__all_time:0", Ok("service_usage__submission__all_time exact Number(0.0)")),
        ("service_usage__llm__current_period__cost__gt:1.5", Ok("service_usage__llm__current_period__cost gt Number(1.5)")),
        ("service_usage__llm__all_time__requests__lte:9", Ok("service_usage__llm__all_time__requests lte Integer(9)")),
        (
            "service_usage__balances__submission__balance_value__gte:5000",
            Ok("service_usage__balances__submission__balance_value gte Number(5000.0)"),
        ),
        ("service_usage__balances__submission__exceeded:true", Ok("service_usage__balances__submission__exceeded exact Boolean(true)")),
        ("service_usage__total_storage_bytes__gt:1e9", Ok("service_usage__total_storage_bytes gt Number(1000000000.0)")),
        ("demo", Ok("username icontains Text(\"demo\")")),
        ("a:1 OR b:2", Err("unknown field \"a\"")),
        ("is_bot:true OR role:100", Ok("(or is_bot exact Boolean(true) | role exact Integer(100))")),
        ("is_bot:true role:100", Ok("(and is_bot exact Boolean(true) | role exact Integer(100))")),
        ("NOT is_bot:true", Ok("(not is_bot exact Boolean(true))")),
        (
            "demo AND (role:100 OR NOT is_active:true)",
            Ok("(and username icontains Text(\"demo\") | (or role exact Integer(100) | (not is_active exact Boolean(true))))"),
        ),
        ("", Ok("")),
        // Invalid: each names what is wrong.
        ("colour:red", Err("unknown field \"colour\"")),
        ("username__near:ann", Err("unknown field \"username__near\"")),
        ("role__icontains:1", Err("`icontains` does not apply to integer field role")),
        ("is_bot__gt:true", Err("`gt` does not apply to boolean field is_bot")),
        ("role:admin", Err("\"admin\" is not a integer value")),
        ("is_bot:maybe", Err("\"maybe\" is not a boolean value")),
        ("date_joined__gte:yesterday", Err("\"yesterday\" is not a date-time value")),
        ("service_usage__submission__current_period__gte:ten", Err("\"ten\" is not a number value")),
        ("service_usage__video__all_time:1", Err("unknown field \"service_usage__video__all_time\"")),
        ("service_usage__llm__last_week__cost:1", Err("unknown field")),
        ("last_login__isnull:perhaps", Err("isnull takes true or false")),
        ("ab", Err("at least 3 characters")),
        ("role:1 OR", Err("the query ends where a term was expected")),
        ("(role:1", Err("expected a closing parenthesis")),
        ("role:1)", Err("unexpected here")),
        ("username:\"ann", Err("never closed")),
        ("subscriptions[]__colour:red", Err("unknown field")),
        ("metadata__:x", Err("unknown field")),
    ];

    fn render(f: &Filter) -> String {
        match f {
            Filter::Condition(c) => {
                let values: Vec<String> = c.values.iter().map(|v| format!("{v:?}")).collect();
                format!("{} {} {}", c.field.path, c.lookup.name(), values.join(" "))
            }
            Filter::Not(inner) => format!("(not {})", render(inner)),
            Filter::And(parts) => format!("(and {})", parts.iter().map(render).collect::<Vec<_>>().join(" | ")),
            Filter::Or(parts) => format!("(or {})", parts.iter().map(render).collect::<Vec<_>>().join(" | ")),
        }
    }

    #[test]
    fn q_cases() {
        assert!(CASES.len() >= 40);
        let catalog = catalog();
        for (query, expected) in CASES {
            let got = filter(query, &catalog).map(|f| f.as_ref().map(render).unwrap_or_default());
            match (expected, &got) {
                (Ok(want), Ok(have)) => assert_eq!(have, want, "query {query:?}"),
                (Err(fragment), Err(e)) => assert!(e.message.contains(fragment), "query {query:?}: {:?} lacks {fragment:?}", e.message),
                _ => panic!("query {query:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_list_the_allowed_ones() {
        let e = filter("colour:red", &catalog()).unwrap_err();
        let allowed = e.allowed.unwrap();
        assert!(allowed.iter().any(|f| f == "username"));
        assert!(allowed.iter().any(|f| f.contains("submission")));
        assert_eq!((e.at, e.token.as_str()), (0, "colour:red"));
    }

    #[test]
    fn ordering_takes_scalar_fields() {
        let order = catalog().ordering("-service_usage__llm__current_period__cost,username").unwrap();
        assert_eq!((order[0].descending, order[1].field.path.as_str()), (true, "username"));
        assert!(catalog().ordering("subscriptions[]__status").is_err());
        assert!(catalog().ordering("colour").unwrap_err().allowed.is_some());
    }

    #[test]
    fn typing_never_panics_on_noise() {
        use rand::{Rng, SeedableRng};
        let words = ["role", "__", "gte", ":", "1", "is_bot", "true", "(", ")", " ", "OR", "NOT", "\"", "service_usage", "llm", "x"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let catalog = catalog();
        for _ in 0..20_000 {
            let q: String = (0..rng.random_range(0..12)).map(|_| words[rng.random_range(0..words.len())]).collect();
            let _ = filter(&q, &catalog);
        }
    }
}
