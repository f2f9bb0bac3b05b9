//! Token auth (specs/docker-registry-auth/): rregistry's built-in issuer (tokens, grants
//! intersected with the access rules, OAuth2 password and refresh grants), the challenges
//! with exactly the scope a request needs, docker logging in, pushing, pulling and being
//! denied, and a second rregistry that only verifies tokens of an external issuer, trusted
//! through a certificate bundle (`kid`, or an `x5c` chain up to a CA) or a JWKS file.

use std::path::Path;

use base64::Engine;
use conformance::auth_files::{
    alice_pushes_and_bob_is_denied, ca_signed_cert, cert_der, docker_tiny_image, ec_key,
    htpasswd_file, self_signed_cert, LeafUse,
};
use conformance::peers::{run_ok, Dockerd};
use conformance::registry_suite::Rregistry;
use registry::auth::keys::{PublicKey, SigningKey};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SERVICE: &str = "rregistry-test";
const ISSUER: &str = "rregistry-test-issuer";
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Issuing {
    registry: Rregistry,
    key: std::path::PathBuf,
}

/// A registry with the built-in issuer: alice may do anything under team/, every user may
/// pull everything, anyone may pull public/*. The realm follows the Host (`autoredirect`).
fn start_issuing(dir: &Path) -> Issuing {
    let users = htpasswd_file(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]).unwrap();
    let key = ec_key(dir, "issuer").unwrap();
    let registry = Rregistry::start(
        true,
        &format!(
            "auth:\n  token:\n    autoredirect: true\n    autoredirectpath: /auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    signingkey: {}\n    users: {}\n  access:\n    - repository: 'team/**'\n      users: [alice]\n      actions: ['*']\n    - repository: '**'\n      users: ['*']\n      actions: [pull]\n  anonymous: ['public/*']\n",
            key.display(),
            users.display()
        ),
    )
    .expect("start rregistry");
    Issuing { registry, key }
}

fn challenge(resp: &reqwest::blocking::Response) -> String {
    resp.headers()["WWW-Authenticate"]
        .to_str()
        .unwrap()
        .to_string()
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64URL.decode(part).unwrap()).unwrap()
}

fn error_code(resp: reqwest::blocking::Response) -> String {
    let body: Value = resp.json().expect("JSON error body");
    body["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

/// A token from the issuer at `base` for `scopes`, as `user` (None: anonymous).
fn token(http: &Client, base: &str, user: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let mut query = vec![("service", SERVICE)];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    let mut req = http.get(format!("{base}/auth/token")).query(&query);
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap() >= 60);
    body["token"].as_str().unwrap().to_string()
}

#[test]
fn challenges_grants_and_oauth2() {
    let dir = tempfile::tempdir().unwrap();
    let issuing = start_issuing(dir.path());
    let base = issuing.registry.url();
    let http = Client::new();
    let url = |p: &str| format!("{base}{p}");
    let realm = format!("{base}/auth/token");

    let resp = http.get(url("/v2/")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&resp),
        format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"")
    );
    assert_eq!(error_code(resp), "UNAUTHORIZED");
    let resp = http.get(url("/v2/team/app/manifests/1")).send().unwrap();
    assert_eq!(
        challenge(&resp),
        format!(
            "Bearer realm=\"{realm}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull\""
        )
    );
    let resp = http
        .post(url(
            "/v2/team/dst/blobs/uploads/?mount=sha256:00&from=team/src",
        ))
        .send()
        .unwrap();
    assert!(
        challenge(&resp)
            .ends_with(",scope=\"repository:team/dst:pull,push repository:team/src:pull\""),
        "{}",
        challenge(&resp)
    );
    let resp = http.get(url("/v2/_catalog")).send().unwrap();
    assert!(challenge(&resp).ends_with(",scope=\"registry:catalog:*\""));

    // Grants are the intersection of what was asked and what the rules give.
    let push = "repository:team/app:pull,push";
    let alice = token(&http, &base, Some(("alice", "alice-pw")), &[push]);
    let c = claims(&alice);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(c["sub"], "alice");
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    let bob = token(&http, &base, Some(("bob", "bob-pw")), &[push]);
    assert_eq!(claims(&bob)["access"][0]["actions"], json!(["pull"]));
    let anonymous = token(&http, &base, None, &[push, "repository:public/x:pull"]);
    assert_eq!(
        claims(&anonymous)["access"],
        json!([{"type": "repository", "name": "public/x", "actions": ["pull"]}])
    );
    let resp = http
        .get(format!("{realm}?service={SERVICE}"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .get(format!("{realm}?service=elsewhere"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The registry honours the grants.
    let upload = url("/v2/team/app/blobs/uploads/");
    let resp = http.post(&upload).bearer_auth(&alice).send().unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // bob's token lacks push and the rules would not give it: 403 DENIED.
    let resp = http.post(&upload).bearer_auth(&bob).send().unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(resp), "DENIED");
    // An anonymous token lacking a scope: 401, signing in might help.
    let resp = http
        .get(url("/v2/team/app/tags/list"))
        .bearer_auth(&anonymous)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&resp).ends_with(",error=\"insufficient_scope\""));
    let resp = http
        .get(url("/v2/public/x/tags/list"))
        .bearer_auth(&anonymous)
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "allowed, nothing there"
    );
    let resp = http.get(url("/v2/")).bearer_auth("a.b.c").send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&resp).ends_with(",error=\"invalid_token\""));

    // OAuth2 (oauth.md): the password grant with access_type=offline gives a refresh
    // token; the refresh grant trades it for access tokens; it is no access token itself.
    let resp = http
        .post(&realm)
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("access_type", "offline"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let resp = http
        .post(&realm)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", SERVICE),
            ("client_id", "test"),
            ("scope", "repository:team/app:push repository:other:push"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["scope"], "repository:team/app:push");
    assert_eq!(body["refresh_token"], refresh.as_str());
    let resp = http.get(url("/v2/")).bearer_auth(&refresh).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .post(&realm)
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
            ("service", SERVICE),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// docker against the built-in issuer, then against a registry that trusts that issuer's
/// certificate but issues nothing itself.
#[test]
fn docker_with_built_in_and_external_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let issuing = start_issuing(dir.path());
    let addr = issuing.registry.addr();
    let dockerd = Dockerd::start().expect("start dockerd");
    let image = format!("{addr}/team/app:1");
    docker_tiny_image(&dockerd, &image, "hello through tokens").unwrap();

    let out = dockerd
        .docker()
        .args(["login", "-u", "alice", "-p", "wrong", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password fails the login");
    let bobs = alice_pushes_and_bob_is_denied(&dockerd, &addr, &image).unwrap();
    run_ok(dockerd.docker().args(["logout", &addr])).unwrap();
    // Anonymous: pulls of team/ are refused (no anonymous rule).
    run_ok(dockerd.docker().args(["rmi", &image, &bobs])).unwrap();
    let out = dockerd.docker().args(["pull", &image]).output().unwrap();
    assert!(!out.status.success(), "anonymous pull of team/ must fail");

    // A verifier-only registry trusting the issuer's certificate (matched by `kid`).
    let cert = self_signed_cert(dir.path(), "issuer", &issuing.key).unwrap();
    let verifier = Rregistry::start(
        true,
        &format!(
            "auth:\n  token:\n    realm: {}/auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            issuing.registry.url(),
            cert.display()
        ),
    )
    .expect("start the verifying rregistry");
    let vaddr = verifier.addr();
    let there = format!("{vaddr}/team/app:2");
    docker_tiny_image(&dockerd, &there, "verified elsewhere").unwrap();
    run_ok(
        dockerd
            .docker()
            .args(["login", "-u", "alice", "-p", "alice-pw", &vaddr]),
    )
    .unwrap();
    run_ok(dockerd.docker().args(["push", &there])).unwrap();
    run_ok(dockerd.docker().args(["rmi", &there])).unwrap();
    run_ok(dockerd.docker().args(["pull", &there])).unwrap();
}

/// Signs `claims` with `key` as an external issuer would, naming the key by `x5c` or `kid`.
fn external_token(
    key: &SigningKey,
    x5c: Option<&[Vec<u8>]>,
    kid: Option<&str>,
    scope: &str,
) -> String {
    let std_b64 = base64::engine::general_purpose::STANDARD;
    let mut header = json!({"typ": "JWT", "alg": key.alg.name()});
    if let Some(chain) = x5c {
        header["x5c"] = json!(chain.iter().map(|c| std_b64.encode(c)).collect::<Vec<_>>());
    }
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let now = oci::timestamp::now_unix();
    let (name, actions) = scope.rsplit_once(':').unwrap();
    let name = name.strip_prefix("repository:").unwrap();
    let claims = json!({
        "iss": ISSUER, "sub": "ext", "aud": SERVICE, "exp": now + 300, "nbf": now - 5,
        "iat": now, "jti": "x",
        "access": [{"type": "repository", "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
    });
    let input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64URL.encode(sig))
}

/// Trust through an x5c chain to a CA of the bundle, and through a JWKS `kid`; an x5c
/// certificate the bundle does not lead to is refused.
#[test]
fn external_tokens_x5c_chain_and_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_key = ec_key(d, "ca").unwrap();
    let ca = self_signed_cert(d, "ca", &ca_key).unwrap();
    let leaf_key = ec_key(d, "leaf").unwrap();
    let leaf = ca_signed_cert(d, "leaf", &leaf_key, (&ca, &ca_key), LeafUse::TokenSigning).unwrap();
    let stranger_key = ec_key(d, "stranger").unwrap();
    let stranger = self_signed_cert(d, "stranger", &stranger_key).unwrap();
    let jwks_key_path = ec_key(d, "jwks").unwrap();
    let jwks_key = SigningKey::load(&jwks_key_path).unwrap();
    let PublicKey::Ec { point, .. } = &jwks_key.public else {
        panic!("EC key expected")
    };
    let jwks = d.join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "jwks-key-1",
            "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..])}]})
        .to_string(),
    )
    .unwrap();
    let registry = Rregistry::start(
        true,
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:1/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n    jwks: {}\n    signingalgorithms: [ES256]\n",
            ca.display(),
            jwks.display()
        ),
    )
    .expect("start rregistry");
    let http = Client::new();
    let upload = format!("{}/v2/ext/app/blobs/uploads/", registry.url());
    let scope = "repository:ext/app:pull,push";

    let leaf_signer = SigningKey::load(&leaf_key).unwrap();
    let chain = [cert_der(&leaf).unwrap(), cert_der(&ca).unwrap()];
    let ok = external_token(&leaf_signer, Some(&chain), None, scope);
    let resp = http.post(&upload).bearer_auth(&ok).send().unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let ok = external_token(&leaf_signer, Some(&chain[..1]), None, scope);
    let resp = http.post(&upload).bearer_auth(&ok).send().unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "the leaf alone chains to the CA"
    );

    let jwks_token = external_token(&jwks_key, None, Some("jwks-key-1"), scope);
    let resp = http.post(&upload).bearer_auth(&jwks_token).send().unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let stranger_signer = SigningKey::load(&stranger_key).unwrap();
    let bad = external_token(
        &stranger_signer,
        Some(&[cert_der(&stranger).unwrap()]),
        None,
        scope,
    );
    let resp = http.post(&upload).bearer_auth(&bad).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&resp).contains("error=\"invalid_token\""));
    // The leaf's certificate with another key's signature.
    let forged = external_token(&stranger_signer, Some(&chain), None, scope);
    let resp = http.post(&upload).bearer_auth(&forged).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A token for pull only, on a push: an external issuer might grant more, so 401.
    let pull_only = external_token(&leaf_signer, Some(&chain), None, "repository:ext/app:pull");
    let resp = http.post(&upload).bearer_auth(&pull_only).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&resp).contains("error=\"insufficient_scope\""));
}

/// CNCF distribution, given a certificate of our issuer's key as its `rootcertbundle`,
/// accepts the built-in issuer's tokens (found by their libtrust `kid`) and refuses pushes
/// they do not grant.
#[test]
fn distribution_accepts_the_built_in_issuers_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let issuing = start_issuing(dir.path());
    let cert = self_signed_cert(dir.path(), "issuer", &issuing.key).unwrap();
    let distribution = conformance::peers::DockerRegistry::start(&format!(
        "auth:\n  token:\n    realm: {}/auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        issuing.registry.url(),
        cert.display()
    ))
    .expect("start docker-registry");
    let http = Client::new();
    let base = issuing.registry.url();
    let upload = format!("http://{}/v2/team/app/blobs/uploads/", distribution.addr());
    let scope = "repository:team/app:pull,push";
    let alice = token(&http, &base, Some(("alice", "alice-pw")), &[scope]);
    let resp = http.post(&upload).bearer_auth(&alice).send().unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let bob = token(&http, &base, Some(("bob", "bob-pw")), &[scope]);
    let resp = http.post(&upload).bearer_auth(&bob).send().unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "bob's token has no push"
    );
}
