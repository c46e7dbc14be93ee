//! `demo`: a FinCode sandbox and the sidecar in one process on loopback, so a newcomer
//! can see the whole path work with curl before touching a real tenant.

use std::process::ExitCode;

use fincode_config::{AuthMode, Config, Env, LogFormat};
use fincode_sandbox::{DEMO_EMAIL, DEMO_PASSWORD, Sandbox, SandboxConfig};

/// The env vars the demo's generated config names for the login secrets.
const EMAIL_ENV: &str = "FINCODE_EMAIL";
const PASSWORD_ENV: &str = "FINCODE_PASSWORD";

pub(crate) async fn demo() -> ExitCode {
    match start().await {
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
  # FinCode's own errors pass through untouched (with your request id)
  curl -s -X POST {sandbox_admin}/faults -d '{{"kind":"status","status":503,"times":1}}'
  curl -i http://{egress}/transactionmanagement/transactions
  # errors the sidecar makes are problem+json with x-sidecar-error
  curl -i -X POST http://{egress}/sandbox/echo -H 'Content-Length: 99999999' -d x

Ctrl-C stops both.
"#,
        base = sandbox.base_url(),
        sandbox_admin = sandbox.admin_url(),
        config = config_path.display(),
    );

    let env = Env::from_pairs([(EMAIL_ENV, DEMO_EMAIL), (PASSWORD_ENV, DEMO_PASSWORD)]);
    let code = crate::run::run(config, &env, crate::run::shutdown_signal()).await;
    sandbox.shutdown().await;
    Ok(code)
}
