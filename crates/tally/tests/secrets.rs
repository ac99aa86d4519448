//! Secrets stay secret: no database password and no API key appears in any log line or error,
//! whatever goes wrong, even with every log turned up to `debug`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tally");
const PASSWORD: &str = "hunter2-do-not-log";

/// A command's whole output, stdout and stderr.
fn output(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("TALLY_LOG", "debug").output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn database_passwords_are_not_shown_when_the_database_fails() {
    // Nobody listens on port 1.
    let url = format!("postgres://tally:{PASSWORD}@127.0.0.1:1/tally");
    for args in [vec!["--database-url", url.as_str(), "migrate"], vec!["--database-url", url.as_str(), "serve", "--listen", "127.0.0.1:0"]]
    {
        let said = output(&args);
        assert!(!said.contains(PASSWORD), "{said}");
        assert!(said.contains("127.0.0.1") || said.to_lowercase().contains("connect"), "the error still says what failed: {said}");
    }
    // A reachable server refusing the database named.
    if let Ok(base) = std::env::var("TALLY_TEST_DATABASE_URL") {
        let wrong =
            base.replacen("postgres://postgres@", &format!("postgres://postgres:{PASSWORD}@"), 1).rsplit_once('/').unwrap().0.to_owned()
                + "/no_such_database";
        let said = output(&["--database-url", &wrong, "migrate"]);
        assert!(!said.contains(PASSWORD), "{said}");
    }
}

#[tokio::test]
async fn api_keys_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let created = Command::new(BIN).args(["--data-dir", &data, "keys", "create", "--scope", "admin"]).output().unwrap();
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(BIN)
        .args(["--data-dir", &data, "serve", "--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("TALLY_LOG", "debug,tower_http=trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wrong = "tly_this-key-does-not-exist-and-must-not-be-logged";
    for (secret, path) in [(key.as_str(), "/v1/organizations"), (wrong, "/v1/organizations"), (key.as_str(), "/v1/no-such-route")] {
        client.get(format!("{base}{path}")).bearer_auth(secret).send().await.unwrap();
        // Keys sent where they do not belong: a cookie, and a query string.
        client.get(format!("{base}{path}?api_key={secret}")).header("cookie", format!("tally_session={secret}")).send().await.unwrap();
    }
    let events =
        serde_json::json!([{"id": "e1", "timestamp": "2025-01-01T00:00:00Z", "organization_id": "o", "user_id": "u", "type": "nope"}]);
    client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&events).send().await.unwrap();
    server.kill().unwrap();
    let mut logs = String::new();
    server.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    server.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    server.wait().unwrap();
    assert!(logs.contains("/v1/organizations"), "the requests were logged at all: {logs}");
    for secret in [key.as_str(), wrong] {
        assert!(!logs.contains(secret), "a key is in the logs: {logs}");
        assert!(!logs.contains(&secret[4..20]), "part of a key is in the logs: {logs}");
    }
}
