//! A token server (docker-registry-auth token.md) for CNCF distribution's `auth.token`: Basic
//! credentials in, an RS256 JWT out whose `x5c` header carries the certificate distribution
//! trusts (signed by `openssl`). An OAuth2 refresh-token POST (oauth.md) is accepted for
//! [`REFRESH_TOKEN`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::peers::{require, run_ok};

/// The one refresh token the test token server accepts.
pub const REFRESH_TOKEN: &str = "rbuild-test-refresh";

/// A token server on a free loopback port that accepts one user (and [`REFRESH_TOKEN`]), for
/// CNCF distribution's `auth.token` ([`TokenServer::distribution_auth`]). It records the
/// scopes of every token it issues. Stopped when dropped.
pub struct TokenServer {
    port: u16,
    /// The certificate distribution trusts (`rootcertbundle`).
    pub cert: PathBuf,
    scopes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Starts with a fresh RSA key and certificate written into `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<TokenServer> {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run_ok(
            Command::new(require("openssl"))
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=rbuild-test-token",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
        let der = run_ok(
            Command::new(require("openssl"))
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert),
        )?
        .stdout;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (scopes2, stop2) = (scopes.clone(), stop.clone());
        let expected_auth = format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes(), false)
        );
        let x5c = base64(&der, false);
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = handle_token_request(stream, &expected_auth, &x5c, &key, &scopes2);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        Ok(TokenServer {
            port,
            cert,
            scopes,
            stop,
        })
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The `auth:` section that makes CNCF distribution trust this server's tokens.
    pub fn distribution_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: rbuild-test-registry\n    issuer: rbuild-test-issuer\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert.display()
        )
    }

    /// The scopes of each token request so far, space-joined per request.
    pub fn scopes_requested(&self) -> Vec<String> {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle_token_request(
    stream: TcpStream,
    expected_auth: &str,
    x5c: &str,
    key: &Path,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == expected_auth {
                authorized = true;
            }
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    // GET: token.md's query; POST: oauth.md's form, whose `scope` is space-separated.
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let mut params = target.split_once('?').map_or("", |(_, q)| q).to_string();
    let is_post = request_line.starts_with("POST ");
    if is_post {
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        params = String::from_utf8_lossy(&body).into_owned();
    }
    let mut scopes = Vec::new();
    let mut service = String::new();
    let (mut grant, mut refresh) = (String::new(), String::new());
    for pair in params.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" if is_post => scopes.extend(v.split(' ').map(String::from)),
            "scope" => scopes.push(v),
            "service" => service = v,
            "grant_type" => grant = v,
            "refresh_token" => refresh = v,
            _ => {}
        }
    }
    if is_post {
        authorized = grant == "refresh_token" && refresh == REFRESH_TOKEN;
    }
    let mut stream = stream;
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(stream, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let entry = scopes.join(" ");
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(if is_post {
            format!("refresh_token {entry}")
        } else {
            entry
        });
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "rbuild-test-issuer", "sub": "bob", "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("openssl has no stdin"))?
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64(&signature, true));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 4648 base64; `url` selects the URL-safe alphabet without padding (JWT).
pub fn base64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}
