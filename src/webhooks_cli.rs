//! `fincode-sidecar webhooks ...`: signatures (`verify`, `sign`, offline) and the events
//! of a running sidecar (`list`, `show`, `replay`, through its admin port, so the same
//! commands work whatever the store behind it).

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use fincode_config::Env;
use fincode_webhooks::cli::{self, Outcome, SignatureArgs};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[derive(Subcommand, Debug)]
pub(crate) enum WebhooksCommand {
    /// Check a webhook's signature: prints `valid` (exit 0) or why not (exit 1).
    Verify(SignatureArgs),
    /// Print the header(s) that sign a body.
    Sign(SignatureArgs),
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
        WebhooksCommand::Verify(args) => return print(&cli::verify(&args, &env)),
        WebhooksCommand::Sign(args) => return print(&cli::sign(&args, &env)),
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
