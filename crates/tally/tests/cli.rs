//! The CLI as a person uses it: keys, import (NDJSON and CSV), demo, rebuild.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tally");

fn tally(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("--data-dir").arg(dir).args(args).env("TALLY_LOG", "warn").output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn keys_create_prints_only_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = tally(dir.path(), &["keys", "create", "--scope", "org:acme", "--name", "ci"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("tly_"));
    let (_, list, _) = tally(dir.path(), &["keys", "list"]);
    assert!(list.contains("org:acme") && !list.contains(out.trim()));
    let id = list.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(tally(dir.path(), &["keys", "revoke", &id]).0);
    assert!(!tally(dir.path(), &["keys", "revoke", &id]).0);
    let (ok, _, err) = tally(dir.path(), &["keys", "create", "--scope", "root"]);
    assert!(!ok && err.contains("unknown scope"), "{err}");
}

#[test]
fn import_validates_deduplicates_and_summarizes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let line = |id: &str, qty: i32| {
        format!(
            r#"{{"id":"{id}","timestamp":"2025-01-01T00:00:00Z","organization_id":"o","user_id":"u","type":"api_call","quantity":{qty}}}"#
        )
    };
    std::fs::write(&file, [line("a", 1), line("b", 2), line("a", 1), "{oops".into(), line("c", -1)].join("\n")).unwrap();
    let (ok, out, err) = tally(dir.path(), &["import", "--json", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((summary["read"].as_u64(), summary["accepted"].as_u64()), (Some(5), Some(2)));
    assert_eq!((summary["duplicates"].as_u64(), summary["rejected"].as_u64()), (Some(1), Some(2)));
    assert!(err.contains("rejected event 3: line 4"), "{err}");
    assert!(err.contains("rejected event 4") && err.contains("non-negative"), "{err}");

    let csv = dir.path().join("events.csv");
    std::fs::write(&csv, "id,timestamp,organization_id,user_id,type,quantity\nd,2025-01-01T00:00:00Z,o,u,api_call,4\nb,2025-01-01T00:00:00Z,o,u,api_call,2\n")
        .unwrap();
    // `b` was stored by the import before: a duplicate, counted as such, whatever the commit size.
    let (ok, out, _) = tally(dir.path(), &["import", "--commit-every", "1", csv.to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("1 accepted, 1 duplicates, 0 rejected"), "{out}");
    let (ok, out, _) = tally(dir.path(), &["aggregates", "rebuild"]);
    assert!(ok && out.contains("from 3 events"), "{out}");
}

#[test]
fn demo_fills_an_empty_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = tally(dir.path(), &["demo"]);
    assert!(ok && out.contains("demo data loaded: 4 organizations"), "{out}");
    let (ok, out, _) = tally(dir.path(), &["demo"]);
    assert!(ok && out.contains("already holds events"), "{out}");
    assert!(tally(dir.path(), &["migrate"]).1.contains("sqlite schema is up to date"));
}

#[test]
fn servers_register_rotate_and_the_ledger_job_runs_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) =
        tally(dir.path(), &["servers", "register", "--hostname", "chat.example.org", "--contact-email", "ops@example.org"]);
    assert!(ok, "{err}");
    let field = |text: &str, name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap().to_owned();
    let (id, key) = (field(&out, "server_id"), field(&out, "api_key"));
    assert!(key.starts_with("tly_"));
    let (_, list, _) = tally(dir.path(), &["servers", "list"]);
    assert!(list.contains(&id) && list.contains("never") && !list.contains(&key), "{list}");
    let (ok, rotated, _) = tally(dir.path(), &["servers", "rotate-key", &id]);
    assert!(ok && field(&rotated, "api_key") != key);
    let (_, keys, _) = tally(dir.path(), &["keys", "list"]);
    assert_eq!(keys.lines().filter(|l| l.contains(&format!("server:{id}"))).count(), 2, "{keys}");
    assert!(!tally(dir.path(), &["servers", "rotate-key", "nope"]).0);
    let (ok, _, err) = tally(dir.path(), &["servers", "register", "--hostname", "h", "--contact-email", "not-an-email"]);
    assert!(!ok && err.contains("email"), "{err}");

    let (ok, out, err) = tally(dir.path(), &["jobs", "run", "ledger"]);
    assert!(ok, "{err}");
    assert!(out.contains("completed"), "{out}");
    let (ok, _, err) = tally(dir.path(), &["jobs", "run", "churn"]);
    assert!(!ok && err.contains("ledger"), "{err}");
}

#[test]
fn churn_reports_generate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tally(dir.path(), &["demo"]).0);
    let yesterday = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24)).to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let (ok, out, err) = tally(dir.path(), &["report", "generate", "churn", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains(&yesterday) && out.contains("would open") && out.contains("LOW") && out.contains("nothing was written"), "{out}");
    // The demo holds the last week's reports already: backfill three days before them.
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 10)).to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let (ok, out, err) = tally(dir.path(), &["reports", "generate", "churn", "--days-back", "3", "--date", &earlier]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(" rows, opened ")).count(), 3, "{out}");
    let (_, again, _) = tally(dir.path(), &["report", "generate", "churn"]);
    assert!(again.contains("skipped"), "{again}");
    let (ok, forced, _) = tally(dir.path(), &["report", "generate", "churn", "--force", "-v", "--org", "acme"]);
    assert!(ok && forced.contains(" rows, opened "), "{forced}");

    for (args, says) in [
        (vec!["report", "generate", "churn", "--date", "2999-01-01"], "future"),
        (vec!["report", "generate", "churn", "--date", "yesterday"], "--date"),
        (vec!["report", "generate", "churn", "--days-back", "400"], "1 to 366"),
        (vec!["report", "generate", "weather"], "churn"),
    ] {
        let (ok, _, err) = tally(dir.path(), &args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
}
