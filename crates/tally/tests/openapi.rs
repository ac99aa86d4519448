//! The OpenAPI document: generated from the code, served at `/v1/openapi.json`, equal to the
//! committed `docs/openapi.json`, and true to the routes — every documented operation is routed,
//! and schemathesis (PyPI), run against `tally serve --demo` on both backends, finds no 5xx and
//! no answer outside the document. `.ci/run` installs schemathesis and sets `TALLY_SCHEMATHESIS`;
//! without it that test is skipped (and says so).

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tally");
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &support::TestApp) -> Value {
    let (status, doc) = app.request("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

#[tokio::test]
async fn document_is_openapi_3_1_and_committed() {
    let app = support::spawn(tally_store::testing::sqlite().await).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap_or_default()).unwrap_or_default();
    assert!(committed == doc, "docs/openapi.json is stale: regenerate it with `cargo run -- openapi > docs/openapi.json`");
    // Every operation names its answers, and every error answer is a problem (or Lago's own).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let responses = item[*method]["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} documents no success");
            assert!(responses.contains_key("500"), "{method} {path}");
            if !path.starts_with("/compat/lago") {
                let problem = &responses["500"]["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(problem, "#/components/schemas/Problem", "{method} {path}");
            }
        }
    }
}

/// The document and the router come from the same annotations; this checks the result: each
/// documented (method, path) reaches a handler rather than the 404 fallback or a 405.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = support::spawn(tally_store::testing::sqlite().await).await;
    let doc = document(&app).await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace('{', "x").replace('}', "");
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let (status, body) = app.request(&method.to_uppercase(), &concrete, Some(&app.admin), None).await;
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(!(status == 404 && body["detail"] == "route not found"), "{method} {path} is documented but not routed");
            operations += 1;
        }
    }
    assert!(operations >= 100, "only {operations} operations documented");
    // And an undocumented path is not served.
    let (status, body) = app.get("/v1/no-such-thing").await;
    assert_eq!((status, body["detail"].as_str()), (404, Some("route not found")));
}

/// Starts `tally serve --demo` on a free port and returns it with its demo admin key.
fn serve_demo(store: &[String]) -> (std::process::Child, String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(store)
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let key = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("demo admin key: ").map(str::to_owned))
        .expect("tally serve --demo prints its admin key");
    (child, format!("http://127.0.0.1:{port}"), key)
}

async fn schemathesis(backend: &str, store: Vec<String>) {
    let Ok(schemathesis) = std::env::var("TALLY_SCHEMATHESIS") else {
        eprintln!("skipped: TALLY_SCHEMATHESIS is not set");
        return;
    };
    let (mut server, base, key) = serve_demo(&store);
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = format!("{}/schemathesis-{backend}", env!("CARGO_TARGET_TMPDIR"));
    let args = vec![
        "run".to_owned(),
        format!("{base}/v1/openapi.json"),
        "--header".to_owned(),
        format!("Authorization: Bearer {key}"),
        "--checks".to_owned(),
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance".to_owned(),
        "--phases".to_owned(),
        "examples,coverage,fuzzing".to_owned(),
        // Bounded and reproducible: the same examples every run.
        "--max-examples".to_owned(),
        "15".to_owned(),
        "--seed".to_owned(),
        "20261204".to_owned(),
        "--no-color".to_owned(),
        "--report-dir".to_owned(),
        report,
    ];
    // Its cache goes where it runs: the target directory, not the source tree.
    let output =
        tokio::task::spawn_blocking(move || Command::new(schemathesis).args(args).current_dir(env!("CARGO_TARGET_TMPDIR")).output())
            .await
            .unwrap()
            .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "schemathesis found failures on {backend}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn schemathesis_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    schemathesis("sqlite", vec!["--data-dir".into(), dir.path().display().to_string()]).await;
}

#[tokio::test]
async fn schemathesis_on_postgres() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    let url = tally_store::testing::fresh_schema(&base).await.unwrap();
    schemathesis("postgres", vec!["--database-url".into(), url]).await;
}
