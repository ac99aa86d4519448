//! The dashboard's server side over HTTP, on both backends: its files, sign-in and sign-out with
//! the session cookie, and the cross-site request rule for cookie-authenticated writes.

mod support;

use serde_json::json;
use support::TestApp;

http_tests!(files_sign_in_and_cookie_rules);

async fn files_sign_in_and_cookie_rules(app: TestApp) {
    let client = &app.client;
    let index = client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(index.text().await.unwrap().contains("/ui/app.js"));
    let script = client.get(format!("{}/ui/app.js", app.base)).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(client.get(format!("{}/ui/secrets.txt", app.base)).send().await.unwrap().status(), 404);

    let sign_in = |key: &str| client.post(format!("{}/ui/session", app.base)).json(&json!({ "key": key })).send();
    assert_eq!(sign_in("tly_unknown").await.unwrap().status(), 401);
    assert_eq!(sign_in(&app.key("ingest").await).await.unwrap().status(), 403, "an ingest key reads nothing");
    let signed_in = sign_in(&app.admin).await.unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(signed_in.json::<serde_json::Value>().await.unwrap()["kind"], "admin");

    // The cookie reads; a write also needs the header a cross-site form cannot send.
    let me = client.get(format!("{}/v1/me", app.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let body = json!({"id": "acme", "name": "Acme"});
    let forged = client.post(format!("{}/v1/organizations", app.base)).header("cookie", &session).json(&body).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let ours = client
        .post(format!("{}/v1/organizations", app.base))
        .header("cookie", &session)
        .header("x-tally-csrf", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status(), 201);

    let out = client.delete(format!("{}/ui/session", app.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(client.get(format!("{}/v1/me", app.base)).send().await.unwrap().status(), 401);
}
