//! The disk fills up under the embedded store: ingestion answers 507 (or 503) with a problem body
//! and `Retry-After`, never 500; no acknowledged event is lost; and once space returns, ingestion
//! works again without a restart. The data directory is a small tmpfs, which needs root to mount
//! (CI runs as root); elsewhere the test is skipped, and says so.

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tally");

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Mount(dir)),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.0.path()).output().unwrap();
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).output();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn batch(n: usize) -> Value {
    // Padding in the properties fills the disk in a few dozen requests.
    let padding = "x".repeat(1500);
    (0..200)
        .map(|i| {
            json!({"id": format!("e{n}-{i}"), "timestamp": "2025-06-01T12:00:00Z", "organization_id": "full",
                   "user_id": format!("u{}", i % 20), "type": "api_call", "quantity": 1, "properties": {"padding": padding}})
        })
        .collect()
}

#[tokio::test]
async fn a_full_disk_answers_507_and_recovers_when_space_returns() {
    let Some(mount) = Mount::new("12m") else { return };
    let dir = mount.0.path().display().to_string();
    let key = {
        let out = Command::new(BIN).args(["--data-dir", &dir, "keys", "create", "--scope", "admin"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Server(
        Command::new(BIN)
            .args(["--data-dir", &dir, "serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("TALLY_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |n: usize| client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(n)).send();

    // Fill the disk: every request is either stored whole (200) or refused whole (507/503).
    let mut acknowledged = 0u64;
    let mut refusals = 0;
    let mut n = 0;
    while refusals < 3 {
        assert!(n < 2000, "the disk never filled");
        let answer = post(n).await.unwrap();
        n += 1;
        match answer.status().as_u16() {
            200 => acknowledged += 200,
            status @ (507 | 503) => {
                assert!(answer.headers().contains_key("retry-after"), "{status} without Retry-After");
                assert_eq!(answer.headers()["content-type"], "application/problem+json");
                let problem: Value = answer.json().await.unwrap();
                let kind = problem["type"].as_str().unwrap();
                assert!(kind.ends_with("storage-full") || kind.ends_with("unavailable"), "{problem}");
                assert!(problem["detail"].as_str().unwrap().contains("nothing was stored"), "{problem}");
                eprintln!("request {n}: {status} {problem}");
                refusals += 1;
            }
            other => panic!("a full disk answered {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert!(acknowledged > 0, "nothing fit before the disk filled");
    eprintln!("{acknowledged} events acknowledged in {n} requests before the disk filled");

    // Space returns: ingestion works again, no restart needed.
    mount.resize("256m");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = post(n).await.unwrap();
        n += 1;
        if answer.status() == 200 {
            acknowledged += 200;
            break;
        }
        assert!(Instant::now() < deadline, "ingestion did not recover: {}", answer.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged event is there, once.
    let totals: Value =
        client.get(format!("{base}/v1/organizations/full/usage/totals")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let count = totals["totals"].as_array().unwrap().iter().find(|t| t["usage_type"] == "api_call").unwrap()["count"].as_u64().unwrap();
    assert_eq!(count, acknowledged, "{totals}");
}
