//! Running the server: storage from the config, the purge task, the listener, and a SIGTERM
//! that drains in-flight requests for up to `http.draintimeout`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{router, AppState, HttpLimits};
use crate::service::{Registry, Settings};
use crate::storage::filesystem::FilesystemDriver;
use crate::storage::s3::S3Driver;
use crate::storage::{StorageDriver, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("open storage: {0}")]
    Storage(#[from] StorageError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serve: {0}")]
    Serve(#[source] std::io::Error),
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Mirror(#[from] crate::proxy::MirrorError),
}

/// Serves until `shutdown` resolves, then drains for up to `http.draintimeout`.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Some(s3) = &config.storage.s3 {
        let driver = S3Driver::new(s3)?.with_redirects(!config.storage.redirect.disable);
        tracing::info!(bucket = %driver.bucket(), root = %s3.rootdirectory, "s3 storage");
        return serve_with(config, driver, shutdown).await;
    }
    let driver = FilesystemDriver::new(&config.storage.filesystem.rootdirectory)?;
    tracing::info!(root = %driver.root().display(), "filesystem storage");
    serve_with(config, driver, shutdown).await
}

pub async fn serve_with<S: StorageDriver>(
    config: Config,
    driver: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let driver = crate::storage::instrumented::Instrumented::new(driver, metrics.clone());
    let registry = Arc::new(Registry::new(
        driver,
        Settings {
            delete_enabled: config.storage.delete.enabled,
            upload_max_bytes: config.http.uploadmaxbytes,
        },
    ));
    let purging = &config.storage.maintenance.uploadpurging;
    if purging.enabled {
        tokio::spawn(purge_uploads(
            registry.clone(),
            purging.age,
            purging.interval,
            purging.dryrun,
        ));
    }
    let gc = &config.storage.maintenance.gc;
    let gc_gate = Arc::new(if gc.replicas {
        crate::gc::GcGate::across_replicas(crate::gc::replicas::Announcer::new(registry.clone()))
    } else {
        crate::gc::GcGate::default()
    });
    crate::gc::run_periodically(registry.clone(), gc_gate.clone(), metrics.clone(), gc);
    let tls = config
        .http
        .tls
        .as_ref()
        .map(|t| crate::tls::TlsServer::new(t, &config.http.http2))
        .transpose()?;
    let auth = crate::auth::Auth::from_config(&config.auth, tls.is_some())?.map(Arc::new);
    let mirror = crate::proxy::Mirror::from_config(&config.proxy, registry.clone())?;
    if let Some(mirror) = &mirror {
        let _ = metrics.mirror.set(mirror.metrics.clone());
        tokio::spawn(mirror.clone().run_sweeper());
    }
    let state = Arc::new(AppState {
        mirror,
        auth,
        registry,
        metrics,
        gc_gate,
        limits: HttpLimits {
            manifest_max_bytes: config.http.manifestmaxbytes,
            body_timeout: config.http.bodytimeout,
        },
    });
    let app = router(state, !config.log.accesslog.disabled);
    let addr = config.listen_addr();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(addr = %local, "rregistry listening");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let server = match tls {
        Some(tls) => {
            let header_timeout = config.http.headertimeout;
            let builder =
                crate::http::connections::builder(header_timeout, !config.http.http2.disabled);
            tokio::spawn(tls.serve(listener, app, builder, header_timeout, stopped))
        }
        None => {
            let header_timeout = config.http.headertimeout;
            let builder =
                crate::http::connections::builder(header_timeout, !config.http.http2.disabled);
            tokio::spawn(async move {
                crate::http::connections::serve(listener, app, builder, header_timeout, stopped)
                    .await;
                Ok(())
            })
        }
    };
    shutdown.await;
    tracing::info!(timeout = ?config.http.draintimeout, "shutting down: draining in-flight requests");
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.http.draintimeout, server).await {
        Ok(Ok(result)) => result.map_err(ServeError::Serve),
        Ok(Err(join)) => Err(ServeError::Serve(std::io::Error::other(join))),
        Err(_) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the server can only be killed; keep serving.
        _ => std::future::pending::<()>().await,
    }
}

async fn purge_uploads<S: StorageDriver>(
    registry: Arc<Registry<S>>,
    age: std::time::Duration,
    interval: std::time::Duration,
    dry_run: bool,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match registry.purge_uploads(age, dry_run).await {
            Ok(purged) if !purged.is_empty() => {
                tracing::info!(count = purged.len(), dry_run, sessions = ?purged, "purged stale upload sessions")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
    }
}
