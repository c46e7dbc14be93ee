#![forbid(unsafe_code)]
//! `fincode-sidecar`: the binary only wires the crates together.
//!
//! Commands: `run` (the default), `check`, `preflight`, `demo`, `webhooks`, `audit`, `store`,
//! `support-bundle`, `status`. Exit codes: 0 success, 1 runtime failure (a port taken, say)
//! or a failed preflight item, 2 invalid configuration or usage.

mod admin;
mod audit_cli;
mod audit_trail;
mod demo;
mod fd_limit;
mod panic_hook;
mod preflight;
mod reload;
mod run;
mod status;
mod store_cli;
mod support_bundle;
mod webhooks_cli;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fincode_config::{Config, ConfigError, Env, Severity};

/// mimalloc rather than glibc's malloc: the proxy allocates and frees small buffers on
/// every request from every worker thread, and glibc's arenas showed up as lock
/// contention and `malloc_consolidate` in the load benchmark's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), for hosts
/// whose THP mode is `always`: there the kernel backs any 2 MiB-aligned stretch of the
/// allocator's memory with a huge page at its first touch, and a sidecar whose working set
/// is a few MiB becomes resident in 2 MiB steps, in every pod. (In `madvise` mode the
/// `no_thp` build of mimalloc already keeps them away.) The cost is a few more TLB misses,
/// which `benches/load.sh` did not show (`benches/README.md`). Best effort: a kernel
/// without the call keeps its default.
fn no_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Where `run` and `check` look for the config when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/fincode-sidecar/config.toml";

#[derive(Parser, Debug)]
#[command(
    name = "fincode-sidecar",
    version,
    about = "Makes a merchant app's FinCode integration production-grade."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file for the default `run` command.
    #[arg(long, env = "FINCODE_SIDECAR_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the sidecar (the default).
    Run,
    /// Validate the config and the environment it names; exit 0 if valid, 2 if not.
    Check,
    /// Run FinCode's pre-launch checklist against the live setup, beside the running
    /// sidecar: every item pass, fail or manual. Exit 0 when nothing fails, 1 on a
    /// failure, 2 for an invalid config.
    Preflight(preflight::PreflightArgs),
    /// Start a FinCode sandbox and the sidecar on loopback, and print curl lines to try.
    Demo,
    /// Webhook tools: check or make signatures; list, show and replay stored events.
    Webhooks {
        #[command(subcommand)]
        command: webhooks_cli::WebhooksCommand,
    },
    /// Audit trail tools: verify a trail offline, find records, print the checkpoint public key.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Webhook store tools: `status` prints the queue, read from the store `--config` names,
    /// whether or not the sidecar is running.
    Store {
        #[command(subcommand)]
        command: store_cli::StoreCommand,
    },
    /// Gather what FinCode support asks for about one transaction (its calls, their
    /// errors, its webhooks) from the audit trail and the webhook store, as plain text
    /// to paste into an email. Exit 0 found, 1 nothing found or unreadable, 2 usage.
    SupportBundle(support_bundle::SupportBundleArgs),
    /// One screen for launch day from the running sidecar's admin port: readiness,
    /// success rate, latency, errors, retries, breaker, webhooks, audit. Exit 1 when the
    /// admin port cannot be reached.
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    panic_hook::install();
    no_huge_pages();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Preflight(args) => preflight::run(&args, &cli.config),
        Command::Run => match runtime() {
            Ok(rt) => rt.block_on(run::run_from_file(&cli.config)),
            Err(code) => code,
        },
        Command::Demo => match runtime() {
            Ok(rt) => rt.block_on(demo::demo()),
            Err(code) => code,
        },
        Command::Webhooks { command } => webhooks_cli::run(command),
        Command::Audit { command } => audit_cli::run(command),
        Command::Store { command } => store_cli::run(command, &cli.config),
        Command::SupportBundle(args) => support_bundle::run(&args, &cli.config),
        Command::Status(args) => status::run(&args, &cli.config),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    report_runtime(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    )
}

/// The runtime of a one-shot command (`store status`, `status`, `webhooks`...): one
/// thread is plenty for a few requests or queries.
pub(crate) fn cli_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    report_runtime(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

fn report_runtime(
    built: std::io::Result<tokio::runtime::Runtime>,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    built.map_err(|error| {
        eprintln!("error: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

/// `check`: prints every problem (errors and warnings) and a summary line.
fn check(path: &std::path::Path) -> ExitCode {
    let env = Env::from_process();
    match Config::load(path, &env) {
        Ok((config, warnings)) => {
            // Unset secret variables are warnings here: `check` often runs where the
            // secrets are not (CI, a laptop); `run` treats them as errors.
            let missing = config.check_environment(&env);
            for problem in warnings.iter().chain(&missing) {
                println!("{}", problem.to_string().replacen("error:", "warning:", 1));
            }
            println!(
                "{}: valid ({} warning(s))",
                path.display(),
                warnings.len() + missing.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{error}");
            let errors = config_errors(&error);
            println!("{}: invalid ({errors} error(s))", path.display());
            ExitCode::from(2)
        }
    }
}

/// The errors (not warnings) that make a config unusable, for the summary line of
/// `check` and the one-shot commands: at least one, as a file that cannot be read or
/// parsed lists no problems but is one error all the same.
pub(crate) fn config_errors(error: &ConfigError) -> usize {
    error
        .problems()
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count()
        .max(1)
}
