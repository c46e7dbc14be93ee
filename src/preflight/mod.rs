//! `fincode-sidecar preflight`: FinCode's pre-launch checklist as an executable report.
//!
//! Every line of the checklist FinCode hands merchants (Security Review, Error Handling,
//! Webhook Setup, Compliance, Production Credentials, Monitoring & Logging, Support, Launch
//! Day) becomes one [`Item`] with a verdict:
//!
//! - `pass`: checked, here and now, against the live setup;
//! - `fail`: checked and wrong; the reason names the config key and the fix;
//! - `manual`: nothing a program can check (terms shown to users, the go-live email): the
//!   reason says what the operator must do and which sidecar feature helps.
//!
//! The live checks run beside the running sidecar, with the same config file and
//! environment: the credentials are read from the variables the config names; a login and
//! a refresh (or, with a static token, an authenticated `GET`) are made with a session of
//! preflight's own, logged out afterwards; FinCode's `Date` header is compared with the
//! local clock; the redactor `run` would build scrubs a canary request; the audit trail is
//! probed for writing and verified; one `GET` goes through the running sidecar's egress
//! port as the app's calls do; its `/metrics` and `/readyz` are read on `listen.admin`; the
//! webhook store is opened. Preflight never sends FinCode a request that creates anything:
//! only `PUT` login/refresh/logout and `GET`s of the transaction list.
//!
//! Exit codes: 0 when nothing fails (manual items do not fail), 1 on any `fail`, 2 when the
//! config does not load or the usage is wrong. `--format markdown` is the integration
//! completion evidence a merchant attaches to the go-live request to FinCode; `json` is the
//! stable machine form (an array of `{id, section, item, status, reason}`).

mod checks;
mod report;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use fincode_config::Env;

use self::checks::Status;

/// `preflight`'s options (the config comes from the global `--config`).
#[derive(Args, Debug)]
pub(crate) struct PreflightArgs {
    /// How to print the report: `text` for a terminal, `json` for machines, `markdown` for
    /// the go-live request to FinCode.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Hold the setup to production standards: a base URL that is not
    /// `https://{tenant}.fincode.tech` fails instead of being a manual item.
    #[arg(long)]
    production: bool,
    /// The Prometheus rules file loaded in production (e.g. `deploy/prometheus/alerts.yaml`):
    /// checked to parse and to hold the checklist's three alerts. Without it, the alert
    /// items are manual.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
}

/// The report's output formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned lines for a terminal.
    Text,
    /// One JSON array of `{id, section, item, status, reason}`.
    Json,
    /// A Markdown document for the go-live email.
    Markdown,
}

/// Runs `preflight` with the config at `path`.
pub(crate) fn run(args: &PreflightArgs, path: &std::path::Path) -> ExitCode {
    let env = Env::from_process();
    let config = match crate::store_cli::load_config(path, &env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = checks::Options {
        production: args.production,
        alerts: args.alerts.clone(),
    };
    let items = runtime.block_on(checks::run(&config, &env, &options));
    let meta = report::Meta {
        config_path: path.display().to_string(),
        config_digest: crate::audit_trail::config_digest(&config),
        upstream: config.upstream.base_url.to_string(),
        production: args.production,
        generated_at: std::time::SystemTime::now(),
    };
    let text = match args.format {
        Format::Text => report::text(&items, &meta),
        Format::Json => report::json(&items),
        Format::Markdown => report::markdown(&items, &meta),
    };
    print!("{text}");
    if items.iter().any(|item| item.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
