//! `run`: load and validate the config, build every part, serve until SIGTERM/SIGINT,
//! then fail readiness, drain and exit.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use fincode_config::{Config, Env, PostgresStoreConfig, StoreBackend, StoreTls};
use fincode_proxy::EgressProxy;
use fincode_server::{CancellationToken, ConnectionMetrics, Server};
use fincode_store::{
    EventStore, PostgresOptions, PostgresStore, PostgresTls, SqliteStore, StoreError,
};
use fincode_telemetry::{LogLevel, Metrics, Traces, init_logging};
use fincode_webhooks::Webhooks;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::{
    admin::{self, Readiness},
    audit_trail,
};

/// Exit code for a config that cannot be used.
const INVALID_CONFIG: u8 = 2;

pub(crate) async fn run_from_file(path: &Path) -> ExitCode {
    let env = Env::from_process();
    let (config, log_level) = match Config::load(path, &env) {
        Ok((config, warnings)) => {
            let log_level = init_logging(&config.log);
            for warning in warnings {
                tracing::warn!(%warning, "config warning");
            }
            (config, log_level)
        }
        Err(error) => {
            eprintln!("{error}");
            eprintln!(
                "{}: invalid config; `fincode-sidecar check --config {}` lists every problem",
                path.display(),
                path.display()
            );
            return ExitCode::from(INVALID_CONFIG);
        }
    };
    let reload = ReloadFrom {
        path: path.to_owned(),
        log_level,
    };
    run(config, &env, shutdown_signal(), Some(reload)).await
}

/// Where a running sidecar reloads its config from (see [`crate::reload`]).
pub(crate) struct ReloadFrom {
    pub(crate) path: PathBuf,
    pub(crate) log_level: Option<LogLevel>,
}

/// Runs the sidecar with a validated `config` until `shutdown` resolves; reloads it from
/// `reload` on SIGHUP or a change of the file.
pub(crate) async fn run(
    config: Config,
    env: &Env,
    shutdown: impl Future<Output = ()>,
    reload: Option<ReloadFrom>,
) -> ExitCode {
    let secrets = match config.secrets(env) {
        Ok(secrets) => secrets,
        Err(missing) => {
            for problem in &missing {
                tracing::error!(%problem, "environment");
                eprintln!("{problem}");
            }
            return ExitCode::from(INVALID_CONFIG);
        }
    };
    crate::fd_limit::warn_if_short(crate::fd_limit::raise(crate::fd_limit::needed(
        &config.listeners,
        config.webhooks.enabled,
    )));
    if config.upstream.base_url.scheme_str() == Some("http") {
        tracing::warn!(
            upstream = %config.upstream.base_url,
            "PLAIN HTTP TO FINCODE: upstream.allow_insecure is set; credentials and payments travel unencrypted. Tests only."
        );
    }
    let metrics = Metrics::new();
    let traces = match Traces::from_config(&config.traces, env) {
        Ok(traces) => traces,
        Err(error) => return fail(INVALID_CONFIG, &error),
    };
    let proxy = match EgressProxy::new(&config, &secrets, metrics.clone()) {
        Ok(proxy) => proxy.with_traces(traces.clone()),
        Err(error) => return fail(INVALID_CONFIG, &error),
    };
    let trail = match audit_trail::start(
        &config,
        secrets.audit_signing_key.as_ref(),
        proxy.redactor().clone(),
        &mut metrics.registry(),
    ) {
        Ok(trail) => trail,
        Err(error) => return fail(INVALID_CONFIG, &error),
    };
    let auditor = trail.as_ref().map(|trail| trail.auditor.clone());
    let proxy = match &auditor {
        Some(auditor) => proxy.with_auditor(auditor.clone()),
        None => proxy,
    };
    let reloader = reload.map(|from| {
        crate::reload::Reloader::new(
            &from.path,
            env.clone(),
            config.clone(),
            proxy.reloader(),
            from.log_level,
            auditor.clone(),
            &mut metrics.registry(),
        )
    });
    // The egress port's connections run on a runtime per core (see fincode_server::Workers).
    let egress_workers =
        match fincode_server::Workers::start(fincode_server::default_worker_count(), "egress") {
            Ok(workers) => workers,
            Err(error) => return fail(1, &error),
        };
    let egress = match bind("listen.egress", config.listen.egress).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let admin_listener = match bind("listen.admin", config.listen.admin).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let egress_bound = match egress.local_addr() {
        Ok(addr) => addr,
        Err(error) => return fail(1, &error),
    };
    let webhook_store: Option<Arc<dyn EventStore>> = if config.webhooks.enabled {
        match open_store(&config.store, secrets.store_password.as_ref()).await {
            Ok(store) => Some(store),
            Err(error) => return fail(1, &error),
        }
    } else {
        None
    };
    let webhooks = if let Some(store) = &webhook_store {
        let built = Webhooks::from_config(
            &config,
            &secrets,
            egress_bound,
            store.clone(),
            proxy.redactor().clone(),
            &mut metrics.registry(),
            auditor.clone(),
        );
        match built {
            Ok(webhooks) => webhooks,
            Err(error) => return fail(INVALID_CONFIG, &error),
        }
    } else {
        None
    };

    let webhook_socket = match &webhooks {
        Some(webhooks) => match bind("webhooks.listen", webhooks.listen_addr()).await {
            Ok(listener) => Some(listener),
            Err(code) => return code,
        },
        None => None,
    };

    // The bound addresses, not the configured ones: port 0 means "any free port".
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    let (egress_addr, admin_addr) = (local(&egress), local(&admin_listener));
    let webhook_addr = webhook_socket.as_ref().map(local);

    // Login mode: log in now and keep the token fresh until shutdown.
    let credentials = proxy.credentials().clone();
    let refresher = credentials.start();

    let readiness = Readiness::new(
        credentials.clone(),
        proxy.breaker().clone(),
        auditor.clone(),
        webhook_store,
    );
    let connections = ConnectionMetrics::register(&mut metrics.registry());
    let server = |name, limits| Server::new(name, limits).with_metrics(connections.clone());
    // Shutdown, in order: readiness off -> egress and webhook ports stop, and they and the
    // dispatcher drain within one `shutdown.grace` -> logout -> audit trail closed -> admin
    // port last (probes answer until the end).
    let stop_listeners = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        server("admin", &config.listeners.admin),
        admin_listener,
        readiness.clone(),
        metrics,
        webhooks.as_ref().map(Webhooks::admin),
        stop_admin.clone(),
    ));

    // Webhooks: the listener and the dispatcher stop with the egress port. The dispatcher
    // claims nothing more and gives its in-flight deliveries the same grace as the app's
    // calls; a delivery that needs a confirm-by-query through the (now closed) egress port
    // fails and stays queued for the next start.
    let (webhook_listener, dispatcher) = match (webhooks, webhook_socket) {
        (Some(webhooks), Some(socket)) => {
            let (listener, dispatcher) = webhooks.into_parts();
            (
                Some(tokio::spawn(listener.serve(
                    server("webhooks", &config.listeners.webhooks),
                    socket,
                    stop_listeners.clone(),
                    config.shutdown.grace,
                ))),
                Some(tokio::spawn(dispatcher.run(
                    stop_listeners.clone().cancelled_owned(),
                    config.shutdown.grace,
                ))),
            )
        }
        _ => (None, None),
    };

    // Reloads stop when shutdown begins: the drain runs on the config it started with.
    let reloader = reloader.map(|reloader| tokio::spawn(reloader.watch(stop_listeners.clone())));

    readiness.set(true);
    tracing::info!(
        egress = %egress_addr,
        admin = %admin_addr,
        webhooks = webhook_addr.as_deref().unwrap_or("off"),
        upstream = %config.upstream.base_url,
        "fincode-sidecar ready"
    );

    let draining = readiness.clone();
    let grace = config.shutdown.grace;
    let stopping = stop_listeners.clone();
    tokio::join!(
        proxy.with_drain(config.shutdown.grace).serve(
            server("egress", &config.listeners.egress),
            egress,
            egress_workers.handles(),
            stop_listeners
        ),
        async move {
            shutdown.await;
            // Fail readiness first so no new traffic is routed while we drain.
            draining.set(false);
            tracing::info!(
                grace = %humantime::format_duration(grace),
                "shutting down: draining in-flight requests (a second signal exits at once)"
            );
            stopping.cancel();
            // An operator who signals again means it: no more draining.
            tokio::spawn(async {
                shutdown_signal().await;
                tracing::warn!("second shutdown signal: exiting at once, without draining");
                eprintln!("fincode-sidecar: second shutdown signal, exiting at once");
                std::process::exit(SECOND_SIGNAL_EXIT);
            });
        },
    );
    // Every egress connection has drained (or was closed at the deadline).
    egress_workers.stop().await;
    if let Some(listener) = webhook_listener {
        let _ = listener.await;
    }
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }

    // Revoke our tokens (best effort, bounded) once nothing in flight needs them.
    credentials.logout().await;
    // The trail closes after the last call and delivery it records.
    if let Some(trail) = trail {
        trail.stop(Duration::from_secs(5)).await;
    }
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    // The admin port outlives the drain so probes keep answering until the end.
    stop_admin.cancel();
    let _ = admin.await;
    // Send the last spans; joining the exporter thread blocks, so not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || traces.shutdown(Duration::from_secs(5))).await;
    let _ =
        tokio::task::spawn_blocking(|| fincode_telemetry::flush_access_log(Duration::from_secs(5)))
            .await;
    tracing::info!("fincode-sidecar stopped");
    ExitCode::SUCCESS
}

/// Opens the store `[store]` describes: the SQLite file, or the shared Postgres database
/// with `password`, the store's secret from [`Config::secrets`].
pub(crate) async fn open_store(
    store: &StoreBackend,
    password: Option<&SecretString>,
) -> Result<Arc<dyn EventStore>, StoreError> {
    match store {
        StoreBackend::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreBackend::Postgres(config) => open_postgres(config, password).await,
    }
}

/// Connects to the Postgres store `config` describes, with the password read (and checked
/// to be set) by [`Config::secrets`] or [`Config::store_secrets`] from the variable
/// `store.password_env` names.
pub(crate) async fn open_postgres(
    config: &PostgresStoreConfig,
    password: Option<&SecretString>,
) -> Result<Arc<dyn EventStore>, StoreError> {
    let tls = match &config.tls {
        StoreTls::Disable => PostgresTls::Disable,
        StoreTls::VerifyFull { ca_file } => PostgresTls::VerifyFull {
            ca_file: ca_file.clone(),
        },
    };
    let store = PostgresStore::connect(PostgresOptions {
        url: config.url.clone(),
        password: password.cloned(),
        tls,
        pool_size: config.pool_size as usize,
        schema: config.schema.clone(),
    })
    .await?;
    Ok(Arc::new(store))
}

async fn bind(key: &str, addr: std::net::SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|error| {
        let message = format!(
            "cannot listen on {key} = \"{addr}\": {error}; choose a free port or stop what uses it"
        );
        tracing::error!("{message}");
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    tracing::error!(%error, "cannot start");
    eprintln!("error: {error}");
    ExitCode::from(code)
}

/// The exit code after a second SIGTERM/SIGINT cut the drain short: 128 + SIGINT's number,
/// as a shell reports an interrupted program, so a supervisor sees it did not stop cleanly.
const SECOND_SIGNAL_EXIT: i32 = 130;

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
