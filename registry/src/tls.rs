//! HTTPS for the listener (distribution's `http.tls`, specs/distribution-configuration.md
//! "tls"): rustls with ring, HTTP/2 and HTTP/1.1 offered by ALPN and served by hyper-util's
//! auto builder like plain connections (`http.http2.disabled` leaves HTTP/1.1 only). The certificate and key files
//! are polled; when either changes, the pair is loaded again and new handshakes use it, with
//! no restart. A pair that does not load (half-replaced, mismatched) is logged and the one in
//! service stays.

use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `http.tls`, distribution's keys.
#[derive(Debug, Clone, Deserialize)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// tls1.2 (default) or tls1.3; rustls has nothing older.
    #[serde(default)]
    pub minimumtls: Option<String>,
    /// Read so that it can be reported: rustls offers only AEAD suites with forward secrecy.
    #[serde(default)]
    pub ciphersuites: Vec<String>,
    /// Client certificates and Let's Encrypt are not implemented; a config asking for them
    /// is refused rather than served without them.
    #[serde(default)]
    pub clientcas: Vec<PathBuf>,
    #[serde(default)]
    pub clientauth: Option<String>,
    #[serde(default)]
    pub letsencrypt: Option<serde_yaml::Value>,
}

/// `http.http2`, distribution's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Http2Config {
    pub disabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls: {0}")]
    Invalid(String),
    #[error("http.tls: {path}: {message}")]
    Load { path: PathBuf, message: String },
}

/// A TLS listener's configuration, ready to accept.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
}

impl TlsServer {
    pub fn new(config: &TlsConfig, http2: &Http2Config) -> Result<TlsServer, TlsError> {
        if !config.clientcas.is_empty() || config.clientauth.is_some() {
            return Err(TlsError::Invalid(
                "client certificates (clientcas, clientauth) are not supported".into(),
            ));
        }
        if config.letsencrypt.is_some() {
            return Err(TlsError::Invalid("letsencrypt is not supported".into()));
        }
        if !config.ciphersuites.is_empty() {
            tracing::warn!("http.tls.ciphersuites is ignored: rustls offers only AEAD suites with forward secrecy");
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match config.minimumtls.as_deref() {
            None | Some("tls1.2") => rustls::ALL_VERSIONS,
            Some("tls1.3") => &[&rustls::version::TLS13],
            Some(v @ ("tls1.0" | "tls1.1")) => {
                tracing::warn!(
                    minimumtls = v,
                    "TLS 1.0 and 1.1 are not offered; the minimum is TLS 1.2"
                );
                rustls::ALL_VERSIONS
            }
            Some(other) => {
                return Err(TlsError::Invalid(format!(
                    "minimumtls {other:?} (tls1.2 or tls1.3)"
                )))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadingCertificate::load(
            &config.certificate,
            &config.key,
            provider.clone(),
        )?);
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        server.alpn_protocols = if !http2.disabled {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificate,
        })
    }

    /// Accepts until `shutdown` resolves, then waits for open connections to finish (the
    /// caller bounds that wait with `http.draintimeout`). After its handshake a connection is
    /// served as plain ones are (`http::connections`, with `http.headertimeout`).
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        builder: auto::Builder<TokioExecutor>,
        header_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let reloader = tokio::spawn(self.certificate.clone().watch());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            // As on the plain listener (http/connections.rs): no Nagle delay on last segments.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            let acceptor = self.acceptor.clone();
            let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                crate::http::connections::serve_connection(
                    stream,
                    app,
                    builder,
                    header_timeout,
                    watcher,
                )
                .await;
            });
        }
        drop(listener);
        graceful.shutdown().await;
        reloader.abort();
        Ok(())
    }
}

/// The certificate in service, replaced when its files change.
#[derive(Debug)]
struct ReloadingCertificate {
    certificate: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// What identifies a file's content without reading it: a rename-into-place changes the
/// inode, a rewrite the size or mtime.
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

impl ReloadingCertificate {
    fn load(
        certificate: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCertificate, TlsError> {
        let loaded = load_pair(certificate, key, &provider)?;
        Ok(ReloadingCertificate {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    async fn watch(self: Arc<Self>) {
        let mut seen = (stamp(&self.certificate), stamp(&self.key));
        let mut ticker = tokio::time::interval(RELOAD_POLL);
        loop {
            ticker.tick().await;
            let now = (stamp(&self.certificate), stamp(&self.key));
            if now == seen {
                continue;
            }
            // Remember this state even if it fails to load: the next change (say, the key
            // after the certificate) tries again, and a bad pair is reported once.
            seen = now;
            match load_pair(&self.certificate, &self.key, &self.provider) {
                Ok(loaded) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                    tracing::info!(certificate = %self.certificate.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays in service")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A PEM chain (leaf first) and its PEM private key, checked to belong together.
fn load_pair(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let load_err = |path: &Path, message: String| TlsError::Load {
        path: path.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| load_err(certificate, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| load_err(certificate, e.to_string()))?;
    if chain.is_empty() {
        return Err(load_err(certificate, "no certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| load_err(key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| load_err(key, e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // Unknown: the key type cannot tell its public half; rustls fails the handshake then.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(load_err(
            key,
            format!("does not match the certificate: {e}"),
        )),
    }
}
