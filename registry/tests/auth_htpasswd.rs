//! htpasswd Basic auth with access rules: the challenges and error bodies a client sees
//! (distribution-spec "Error Codes", RFC 7617), and docker (a private dockerd) logging in,
//! pushing and pulling, and being denied a push it has no rule for.

use conformance::auth_files::{alice_pushes_and_bob_is_denied, docker_tiny_image, htpasswd_file};
use conformance::peers::{run_ok, Dockerd};
use conformance::registry_suite::Rregistry;
use reqwest::blocking::Client;
use reqwest::StatusCode;

/// alice may do anything under team/, every user may pull everything, anyone may pull
/// public/*.
fn start(dir: &std::path::Path) -> Rregistry {
    let htpasswd = htpasswd_file(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]).unwrap();
    Rregistry::start(
        true,
        &format!(
            "auth:\n  htpasswd:\n    realm: rregistry-test\n    path: {}\n  access:\n    - repository: 'team/**'\n      users: [alice]\n      actions: ['*']\n    - repository: '**'\n      users: ['*']\n      actions: [pull]\n  anonymous: ['public/*']\n",
            htpasswd.display()
        ),
    )
    .expect("start rregistry")
}

fn error_code(resp: reqwest::blocking::Response) -> String {
    let body: serde_json::Value = resp.json().expect("JSON error body");
    body["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn challenges_rules_and_anonymous_pull() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start(dir.path());
    let http = Client::new();
    let url = |p: &str| format!("{}{p}", registry.url());

    // The ping challenges, so that docker knows to send credentials.
    let resp = http.get(url("/v2/")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["WWW-Authenticate"],
        "Basic realm=\"rregistry-test\""
    );
    assert_eq!(
        resp.headers()["Docker-Distribution-API-Version"],
        "registry/2.0"
    );
    assert_eq!(error_code(resp), "UNAUTHORIZED");

    let resp = http
        .get(url("/v2/"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("WWW-Authenticate"));
    let resp = http
        .get(url("/v2/"))
        .basic_auth("nobody", Some("x"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = http
        .get(url("/v2/"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // alice may push to team/, bob may only pull there: 403 DENIED, no challenge.
    let resp = http
        .post(url("/v2/team/app/blobs/uploads/"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = http
        .post(url("/v2/team/app/blobs/uploads/"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.headers().contains_key("WWW-Authenticate"));
    assert_eq!(error_code(resp), "DENIED");
    let resp = http
        .get(url("/v2/team/none/tags/list"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "bob may read team/");
    // Deleting needs `delete`, which bob lacks.
    let resp = http
        .delete(url("/v2/team/app/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Anonymous pulls of public/* reach the handler (404: nothing there yet); anonymous
    // pushes there and pulls elsewhere are challenged.
    let resp = http.get(url("/v2/public/x/manifests/1")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp), "MANIFEST_UNKNOWN");
    let resp = http
        .post(url("/v2/public/x/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http.get(url("/v2/team/app/manifests/1")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(
        body["errors"][0]["detail"][0],
        serde_json::json!({"Type": "repository", "Name": "team/app", "Action": "pull"})
    );

    // The catalog is for signed-in users.
    assert_eq!(
        http.get(url("/v2/_catalog")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(url("/v2/_catalog"))
            .basic_auth("bob", Some("bob-pw"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn docker_login_push_pull_and_denied_push() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start(dir.path());
    let addr = registry.addr();
    let dockerd = Dockerd::start().expect("start dockerd");
    let image = format!("{addr}/team/app:1");
    docker_tiny_image(&dockerd, &image, "hello from alice").unwrap();

    let out = dockerd
        .docker()
        .args(["login", "-u", "alice", "-p", "wrong", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Before any login the push is refused too.
    let out = dockerd.docker().args(["push", &image]).output().unwrap();
    assert!(!out.status.success(), "anonymous push must fail");

    let bobs = alice_pushes_and_bob_is_denied(&dockerd, &addr, &image).unwrap();
    // bob may still pull what alice pushed.
    run_ok(dockerd.docker().args(["rmi", &image, &bobs])).unwrap();
    run_ok(dockerd.docker().args(["pull", &image])).unwrap();
}
