//! `fincode-sidecar webhooks ...`: signatures (`verify`, `sign`, offline) and the events
//! of a running sidecar (`list`, `show`, `replay`, through its admin port, so the same
//! commands work whatever the store behind it).

use std::{path::PathBuf, process::ExitCode};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use fincode_config::Env;
use fincode_webhooks::cli::{self, Outcome, SchemeName, SignatureArgs};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[derive(Subcommand, Debug)]
pub(crate) enum WebhooksCommand {
    /// Check a webhook's signature: prints `valid` (exit 0) or why not (exit 1).
    Verify(SignatureFlags),
    /// Print the header(s) that sign a body.
    Sign(SignatureFlags),
    /// List stored events, newest first.
    List {
        /// Only events in this state.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one event (its body passed through the redactor).
    Show {
        /// The event id, as `list` shows it.
        id: i64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deliver an event again (attempts reset), or every dead letter with --all-dead.
    Replay {
        /// The event id, as `list` shows it.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Replay every dead letter.
        #[arg(long)]
        all_dead: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// The signature scheme, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SchemeFlag {
    /// HMAC-SHA256 of the body, hex.
    #[value(name = "hmac-sha256-hex")]
    HmacSha256Hex,
    /// HMAC-SHA256 of the body, base64.
    #[value(name = "hmac-sha256-base64")]
    HmacSha256Base64,
    /// HMAC-SHA512 of the body, hex.
    #[value(name = "hmac-sha512-hex")]
    HmacSha512Hex,
    /// HMAC-SHA512 of the body, base64.
    #[value(name = "hmac-sha512-base64")]
    HmacSha512Base64,
    /// Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature; whsec_ secret).
    #[value(name = "standard-webhooks")]
    StandardWebhooks,
    /// Stripe-style `t=<unix>,v1=<hex>`.
    #[value(name = "stripe")]
    Stripe,
    /// A header equal to the secret.
    #[value(name = "shared-secret")]
    SharedSecret,
}

/// Arguments shared by `webhooks verify` and `webhooks sign`; the library checks them
/// ([`cli::verify`], [`cli::sign`]) once parsed into its plain [`SignatureArgs`].
#[derive(Debug, Args)]
pub(crate) struct SignatureFlags {
    /// The signature scheme.
    #[arg(long, value_enum)]
    scheme: SchemeFlag,
    /// The environment variable holding the secret: its bytes for hmac-*, stripe and
    /// shared-secret; the "whsec_..." string for standard-webhooks.
    #[arg(long)]
    secret_env: String,
    /// Text before the encoded signature, such as "sha256=" (hmac-* only).
    #[arg(long)]
    prefix: Option<String>,
    /// The signature header [default: x-fincode-signature for hmac-*, stripe-signature for
    /// stripe, x-webhook-secret for shared-secret; standard-webhooks' names are fixed].
    #[arg(long)]
    signature_header: Option<String>,
    /// A received header, 'Name: value'; repeat for each (verify only).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The file holding the raw body, byte for byte as received or to be sent.
    #[arg(long)]
    body_file: PathBuf,
    /// The time to check or sign at, in unix seconds [default: the clock].
    #[arg(long)]
    now: Option<u64>,
    /// How far the signed timestamp may be from now, either way, in seconds (verify with
    /// standard-webhooks or stripe).
    #[arg(long, default_value_t = 300)]
    tolerance_secs: u64,
    /// The webhook-id to sign with (sign with standard-webhooks) [default: a random
    /// "msg_<32 hex digits>"].
    #[arg(long)]
    id: Option<String>,
}

// === impl SchemeFlag ===

impl From<SchemeFlag> for SchemeName {
    fn from(flag: SchemeFlag) -> Self {
        match flag {
            SchemeFlag::HmacSha256Hex => Self::HmacSha256Hex,
            SchemeFlag::HmacSha256Base64 => Self::HmacSha256Base64,
            SchemeFlag::HmacSha512Hex => Self::HmacSha512Hex,
            SchemeFlag::HmacSha512Base64 => Self::HmacSha512Base64,
            SchemeFlag::StandardWebhooks => Self::StandardWebhooks,
            SchemeFlag::Stripe => Self::Stripe,
            SchemeFlag::SharedSecret => Self::SharedSecret,
        }
    }
}

// === impl SignatureFlags ===

impl From<SignatureFlags> for SignatureArgs {
    fn from(flags: SignatureFlags) -> Self {
        Self {
            scheme: flags.scheme.into(),
            secret_env: flags.secret_env,
            prefix: flags.prefix,
            signature_header: flags.signature_header,
            headers: flags.headers,
            body_file: flags.body_file,
            now: flags.now,
            tolerance_secs: flags.tolerance_secs,
            id: flags.id,
        }
    }
}

/// Where the running sidecar's admin port is.
#[derive(Args, Debug)]
pub(crate) struct AdminArgs {
    /// The admin port's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin_url: String,
    /// The variable holding the admin token (`webhooks.admin_token_env`), needed when the
    /// admin port is not reached over loopback.
    #[arg(long)]
    token_env: Option<String>,
}

pub(crate) fn run(command: WebhooksCommand) -> ExitCode {
    let env = Env::from_process();
    let (method, path, admin) = match command {
        WebhooksCommand::Verify(flags) => return print(&cli::verify(&flags.into(), &env)),
        WebhooksCommand::Sign(flags) => return print(&cli::sign(&flags.into(), &env)),
        WebhooksCommand::List {
            status,
            limit,
            admin,
        } => {
            let path = match status {
                Some(status) => format!("/webhooks/events?limit={limit}&status={status}"),
                None => format!("/webhooks/events?limit={limit}"),
            };
            (Method::GET, path, admin)
        }
        WebhooksCommand::Show { id, admin } => {
            (Method::GET, format!("/webhooks/events/{id}"), admin)
        }
        WebhooksCommand::Replay {
            id: Some(id),
            admin,
            ..
        } => (Method::POST, format!("/webhooks/events/{id}/replay"), admin),
        WebhooksCommand::Replay {
            id: None, admin, ..
        } => (Method::POST, "/webhooks/dead/replay".to_owned(), admin),
    };
    let mut token = None;
    if let Some(var) = &admin.token_env {
        let Some(value) = env.get(var).filter(|t| !t.is_empty()) else {
            eprintln!("error: --token-env {var}: the variable is not set or empty");
            return ExitCode::from(Outcome::USAGE);
        };
        token = Some(value.to_owned());
    }
    let runtime = match crate::cli_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let url = format!("{}{path}", admin.admin_url.trim_end_matches('/'));
    match runtime.block_on(call(method, &url, token.as_deref())) {
        Ok((status, body)) if status.is_success() => {
            println!("{}", pretty(&body));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("error: the admin port answered {status}: {}", pretty(&body));
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!(
                "error: {url}: {why}; is the sidecar running with webhooks.enabled, and is --admin-url its admin port?"
            );
            ExitCode::FAILURE
        }
    }
}

fn print(outcome: &Outcome) -> ExitCode {
    if outcome.code == Outcome::USAGE {
        eprintln!("{}", outcome.output);
    } else {
        println!("{}", outcome.output);
    }
    ExitCode::from(outcome.code)
}

/// Marks a request as made by an operator's tool, not a browser (see `fincode_webhooks::admin`).
const ADMIN_HEADER: &str = fincode_webhooks::admin::ADMIN_HEADER;

/// One request to the sidecar's admin port (also `preflight`'s and `status`'s
/// reads of `/metrics` and `/readyz`): the status and the whole body.
pub(crate) async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
) -> Result<(http::StatusCode, Bytes), String> {
    let mut request = Request::builder().method(method).uri(url);
    // State-changing admin routes need this (or the token) even from loopback: a browser
    // cannot add it to a cross-origin request without a preflight, which is never answered.
    request = request.header(ADMIN_HEADER, "1");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|_| "not a valid URL".to_owned())?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The admin port's JSON, indented for a terminal.
fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
#[path = "webhooks_cli_tests.rs"]
mod tests;
