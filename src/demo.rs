//! `demo`: a FinCode sandbox and the sidecar in one process on loopback, so a newcomer
//! can see the whole path work with curl before touching a real tenant.

use std::{convert::Infallible, net::SocketAddr, process::ExitCode};

use bytes::Bytes;
use fincode_config::{AuthMode, Config, Env, LogFormat};
use fincode_sandbox::{DEMO_EMAIL, DEMO_PASSWORD, Sandbox, SandboxConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The env vars the demo's generated config names for the login secrets.
const EMAIL_ENV: &str = "FINCODE_EMAIL";
const PASSWORD_ENV: &str = "FINCODE_PASSWORD";
/// The webhook secrets: FinCode's (verified) and the sidecar's own (signs deliveries).
const WEBHOOK_SECRET_ENV: &str = "FINCODE_WEBHOOK_SECRET";
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
const SIGNING_SECRET_ENV: &str = "FINCODE_SIDECAR_SIGNING_SECRET";
const SIGNING_SECRET: &str = "whsec_ZGVtby1zaWRlY2FyLXNpZ25pbmcta2V5LTMyYnl0ZXM=";
/// The audit trail's keys: the checkpoint signing seed and the pseudonym key. Fixed and
/// public, for the demo only; production reads them from secrets.
const AUDIT_KEY_ENV: &str = "FINCODE_AUDIT_SIGNING_KEY";
const AUDIT_KEY: &str = "ZGVtby1hdWRpdC1zaWduaW5nLXNlZWQtMzItYnl0ZXM=";
const HASH_KEY_ENV: &str = "FINCODE_REDACT_HASH_KEY";
const HASH_KEY: &str = "demo-redact-hash-key-at-least-32-bytes-long";

pub(crate) async fn demo() -> ExitCode {
    // The whole sidecar's start-up future is large; it lives on the heap, not the stack.
    match Box::pin(start()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: demo failed to start: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new().prefix("fincode-demo-").tempdir()?;
    let sandbox = Sandbox::start(SandboxConfig {
        state_dir: dir.path().join("sandbox"),
        ..SandboxConfig::default()
    })
    .await?;
    let mut config = Config::with_base_url(sandbox.base_url().parse()?);
    config.upstream.ca_file = Some(sandbox.ca_cert_path());
    config.listen.admin = "127.0.0.1:9090".parse()?;
    // Login mode, as in production: email and password from the environment, the
    // password RSA-encrypted with the tenant key, tokens refreshed automatically.
    config.auth.mode = AuthMode::Login;
    config.auth.email_env = Some(EMAIL_ENV.to_owned());
    config.auth.password_env = Some(PASSWORD_ENV.to_owned());
    config.auth.public_key_file = Some(sandbox.public_key_path());
    config.log.format = LogFormat::Text;
    // Webhooks: FinCode (the sandbox) posts HMAC-signed events; the sidecar verifies,
    // stores and acknowledges them, then delivers them to a stand-in app that prints them.
    let app = demo_app().await?;
    config.webhooks.enabled = true;
    config.webhooks.listen = "127.0.0.1:8081".parse()?;
    config.webhooks.secret_envs = vec![WEBHOOK_SECRET_ENV.to_owned()];
    config.webhooks.deliver_to = Some(format!("http://{app}/webhooks/fincode").parse()?);
    config.webhooks.signing_secret_env = Some(SIGNING_SECRET_ENV.to_owned());
    config.store = fincode_config::StoreBackend::Sqlite {
        path: dir.path().join("events.db"),
    };
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    config.audit.signing_key_env = Some(AUDIT_KEY_ENV.to_owned());
    config.audit.actor = Some("demo-app".to_owned());
    config.audit.checkpoint_interval = std::time::Duration::from_secs(5);
    config.redact.hash_key_env = Some(HASH_KEY_ENV.to_owned());
    let audit_public_key = fincode_audit::Signer::from_base64_seed(AUDIT_KEY)?.public_key_base64();
    let exe = std::env::current_exe()?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config.to_toml_string())?;

    fincode_telemetry::init_logging(&config.log);
    let egress = config.listen.egress;
    let admin = config.listen.admin;
    println!(
        r#"
fincode-sidecar demo
  FinCode sandbox  {base}  (admin {sandbox_admin})
  sidecar egress   http://{egress}   admin http://{admin}
  generated config {config}
  credentials      login mode: ${EMAIL_ENV} / ${PASSWORD_ENV} from the environment, never the file

Try, in another terminal:
  curl -i http://{egress}/sandbox/ping
  curl -i -X POST http://{egress}/transactionmanagement/create-transaction \
       -H 'Content-Type: application/json' -H 'X-Idempotency-Key: demo-order-1' \
       -d '{{"amount": 2500, "currency": "GBP", "beneficiaryId": "BEN-1"}}'
  # the same call again returns the same transaction: one payment, not two
  curl -s http://{egress}/transactionmanagement/transactions
  curl -s {sandbox_admin}/counters        # what FinCode saw (logins, side effects per key)
  # FinCode revokes every token: the sidecar refreshes once and replays, the app sees 200
  curl -s -X POST {sandbox_admin}/tokens/expire
  curl -i http://{egress}/transactionmanagement/transactions
  curl -s http://{admin}/readyz
  # FinCode fails twice with 503: the sidecar retries, the app sees 200, x-sidecar-attempts: 3
  curl -s -X POST {sandbox_admin}/faults -d '{{"kind":"status","status":503,"times":2}}'
  curl -i http://{egress}/transactionmanagement/transactions
  # errors the sidecar makes are problem+json with x-sidecar-error
  curl -i -X POST http://{egress}/sandbox/echo -H 'Content-Length: 99999999' -d x
  # FinCode sends a signed webhook three times: three 200s, the app (this terminal) gets it once
  curl -s -X POST {sandbox_admin}/webhooks/send -d '{{"url":"http://{webhooks}/webhooks/fincode",
       "signing":{{"kind":"hmac","secret":"{WEBHOOK_SECRET}","algorithm":"sha256","encoding":"hex"}},
       "events":[{{"eventType":"TRANSACTION_STATUS","Reference":"PCN0000000001","Status":"PAID"}}],
       "copies":3}}'
  curl -s http://{admin}/webhooks/events          # stored events (loopback only)
  # the audit trail: one record per call and webhook, ids as keyed pseudonyms, signed checkpoints
  {exe} audit verify {audit_dir} --public-key {audit_public_key}
  {HASH_KEY_ENV}={HASH_KEY} {exe} audit find {audit_dir} --idempotency-key demo-order-1

Ctrl-C stops both.
"#,
        base = sandbox.base_url(),
        sandbox_admin = sandbox.admin_url(),
        config = config_path.display(),
        webhooks = config.webhooks.listen,
        exe = exe.display(),
        audit_dir = config.audit.dir.display(),
    );

    let env = Env::from_pairs([
        (EMAIL_ENV, DEMO_EMAIL),
        (PASSWORD_ENV, DEMO_PASSWORD),
        (WEBHOOK_SECRET_ENV, WEBHOOK_SECRET),
        (SIGNING_SECRET_ENV, SIGNING_SECRET),
        (AUDIT_KEY_ENV, AUDIT_KEY),
        (HASH_KEY_ENV, HASH_KEY),
    ]);
    let code = crate::run::run(config, &env, crate::run::shutdown_signal(), None).await;
    sandbox.shutdown().await;
    Ok(code)
}

/// The stand-in app: prints each webhook the sidecar delivers and answers 200.
async fn demo_app() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<Incoming>| async move {
                let id = req
                    .headers()
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes);
                let body = body.unwrap_or_default();
                println!(
                    "app: webhook {id} delivered (signed by the sidecar): {}",
                    String::from_utf8_lossy(&body)
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
