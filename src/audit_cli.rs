//! `fincode-sidecar audit ...`: check a trail and find records in it offline. Both read
//! the files directly; no running sidecar is needed, so an auditor can run them on a copy.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};
use fincode_audit::{Query, Resource, SignedCheckpoint, Signer};

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Check a trail: exit 0 when intact, 1 with every finding (segment, line, seq, what).
    Verify {
        /// The trail's directory (`audit.dir`).
        dir: PathBuf,
        /// The signer's public key (Base64 of the raw Ed25519 key, as `audit public-key`
        /// prints it), given directly or as a file holding it. With it, every signed
        /// checkpoint is checked too.
        #[arg(long)]
        public_key: Option<String>,
        /// A log file holding the sidecar's `audit checkpoint` lines (JSON, container
        /// prefixes allowed). Each logged head must still be in the trail: this is what
        /// shows a tail cut off after the last checkpoint the files still hold. Repeat for
        /// several files. Needs --public-key.
        #[arg(long = "checkpoints", value_name = "LOG_FILE")]
        checkpoints: Vec<PathBuf>,
    },
    /// Print the records about a transaction, reference, customer, idempotency key,
    /// correlation id or time window, one raw JSON line each (answers a data-subject
    /// request). Ids are given in clear and pseudonymised with the key the sidecar used.
    Find(FindArgs),
    /// Print the public key that verifies checkpoints signed with the seed in the
    /// variable `--key-env` names (Base64 of 32 bytes, e.g. from `openssl rand -base64 32`).
    PublicKey {
        /// The environment variable holding the signing seed (`audit.signing_key_env`).
        #[arg(long, default_value = "FINCODE_AUDIT_SIGNING_KEY")]
        key_env: String,
        /// Print a PEM SubjectPublicKeyInfo (for openssl) instead of the raw key in Base64.
        #[arg(long)]
        pem: bool,
    },
}

/// `audit find`'s filters: every one given must match.
#[derive(Args, Debug)]
pub(crate) struct FindArgs {
    /// The trail's directory (`audit.dir`).
    dir: PathBuf,
    /// FinCode's transaction id (matches `transaction_id` and an id in the request path).
    #[arg(long)]
    transaction_id: Option<String>,
    /// The merchant's order reference (matches `reference` and an id in the request path).
    #[arg(long)]
    reference: Option<String>,
    /// The customer code.
    #[arg(long)]
    customer_code: Option<String>,
    /// The request's X-Idempotency-Key.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The correlation id (recorded in clear).
    #[arg(long)]
    correlation_id: Option<String>,
    /// Records at or after this time (RFC 3339 in UTC, e.g. 2026-11-29T20:00:00Z, or a date).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Records at or before this time (RFC 3339 in UTC, or a date: its first instant).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The environment variable holding the pseudonym key (`redact.hash_key_env`).
    #[arg(long, default_value = "FINCODE_REDACT_HASH_KEY")]
    key_env: String,
}

pub(crate) fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            dir,
            public_key,
            checkpoints,
        } => verify(&dir, public_key.as_deref(), &checkpoints),
        AuditCommand::Find(args) => find(&args),
        AuditCommand::PublicKey { key_env, pem } => {
            let Some(seed) = std::env::var(&key_env)
                .ok()
                .filter(|v| !v.trim().is_empty())
            else {
                eprintln!(
                    "error: the variable {key_env} is not set; it holds the audit signing seed"
                );
                return ExitCode::from(2);
            };
            match Signer::from_base64_seed(&seed) {
                Ok(signer) if pem => {
                    print!("{}", signer.public_key_pem());
                    ExitCode::SUCCESS
                }
                Ok(signer) => {
                    println!("{}", signer.public_key_base64());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {key_env}: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn is_trail(dir: &Path) -> bool {
    if dir.is_dir() {
        return true;
    }
    eprintln!(
        "error: {} is not a directory holding an audit trail",
        dir.display()
    );
    false
}

fn verify(dir: &Path, public_key: Option<&str>, logs: &[PathBuf]) -> ExitCode {
    if !is_trail(dir) {
        return ExitCode::from(2);
    }
    if !logs.is_empty() && public_key.is_none() {
        eprintln!(
            "error: --checkpoints needs --public-key: a logged checkpoint is only evidence once its signature is checked"
        );
        return ExitCode::from(2);
    }
    let key = public_key.map(|given| {
        std::fs::read_to_string(given)
            .map_or_else(|_| given.trim().to_owned(), |text| text.trim().to_owned())
    });
    let mut logged = Vec::new();
    for log in logs {
        if let Err(error) = read_checkpoints(log, &mut logged) {
            eprintln!("error: reading {}: {error}", log.display());
            return ExitCode::from(2);
        }
    }
    if !logs.is_empty() {
        println!(
            "read {} checkpoint(s) from {} log file(s)",
            logged.len(),
            logs.len()
        );
    }
    let report = match &key {
        Some(key) => fincode_audit::verify_signed(dir, key, &logged),
        None => fincode_audit::verify(dir),
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: reading {}: {error}", dir.display());
            return ExitCode::from(2);
        }
    };
    let start = match (report.started_at, report.anchored_by) {
        (Some((segment, seq)), Some(retention)) => format!(
            ", from segment {segment} seq {seq}: earlier segments were deleted by retention, recorded at seq {retention}"
        ),
        _ => String::new(),
    };
    if report.is_intact() {
        println!(
            "{}: intact ({} segment(s), {} record(s){start}{})",
            dir.display(),
            report.segments,
            report.records,
            if key.is_some() {
                "; checkpoints signed by the given key"
            } else {
                "; no key given, checkpoints not checked"
            }
        );
        return ExitCode::SUCCESS;
    }
    for finding in &report.findings {
        println!("{finding}");
    }
    println!(
        "{}: NOT intact: {} finding(s) in {} segment(s), {} record(s){start}",
        dir.display(),
        report.findings.len(),
        report.segments,
        report.records
    );
    ExitCode::FAILURE
}

/// Appends the checkpoints logged in `path`, read line by line (a log file can be large).
fn read_checkpoints(path: &Path, out: &mut Vec<SignedCheckpoint>) -> std::io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        out.extend(fincode_audit::checkpoint_from_log_line(
            &String::from_utf8_lossy(&line),
        ));
    }
}

fn find(args: &FindArgs) -> ExitCode {
    if !is_trail(&args.dir) {
        return ExitCode::from(2);
    }
    let query = match query(args) {
        Ok(query) => query,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    // A closed pipe (`| head`) stops the printing, not the count.
    let mut write_failed = None;
    let found = fincode_audit::find(&args.dir, &query, |line| {
        if write_failed.is_none()
            && let Err(error) = writeln!(stdout, "{line}")
        {
            write_failed = Some(error);
        }
    });
    let flushed = stdout.flush();
    match found {
        Ok(count) => {
            eprintln!("{count} matching record(s)");
            if let Some(error) = write_failed.or(flushed.err())
                && error.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("error: writing the records: {error}");
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: reading {}: {error}", args.dir.display());
            ExitCode::from(2)
        }
    }
}

/// The query for `args`: clear ids turned into the sidecar's pseudonyms, times parsed.
fn query(args: &FindArgs) -> Result<Query, String> {
    let ids = [
        (Resource::TransactionId, &args.transaction_id),
        (Resource::Reference, &args.reference),
        (Resource::CustomerCode, &args.customer_code),
        (Resource::IdempotencyKey, &args.idempotency_key),
    ];
    let mut query = Query {
        correlation_id: args.correlation_id.clone(),
        since_ms: args.since.as_deref().map(time_ms).transpose()?,
        until_ms: args.until.as_deref().map(time_ms).transpose()?,
        ..Query::default()
    };
    if ids.iter().any(|(_, id)| id.is_some()) {
        let key = std::env::var(&args.key_env)
            .ok()
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                format!(
                    "the variable {} is not set; it holds the key the sidecar pseudonymised ids with (redact.hash_key_env), and ids cannot be looked up without it",
                    args.key_env
                )
            })?;
        let redactor = pseudonymiser(key);
        for (resource, id) in ids {
            if let Some(id) = id {
                query.resources.push((resource, redactor.pseudonym(id)));
            }
        }
    }
    let empty = query.resources.is_empty()
        && query.correlation_id.is_none()
        && query.since_ms.is_none()
        && query.until_ms.is_none();
    if empty {
        return Err("give at least one filter: --transaction-id, --reference, --customer-code, --idempotency-key, --correlation-id, --since or --until".into());
    }
    Ok(query)
}

/// A redactor whose pseudonyms are the sidecar's for the hash key `key` (the value of the
/// variable `redact.hash_key_env` names): exactly what the sidecar does with it, the
/// value's bytes. Its free-text rules are the built-in ones, which `[redact]` only adds
/// header, field and query rules to.
pub(crate) fn pseudonymiser(key: String) -> fincode_redact::Redactor {
    fincode_redact::Redactor::builder()
        .hash_key(key.into_bytes().into())
        .build()
}

/// Milliseconds since the epoch for an RFC 3339 time in UTC (`Z` or no suffix), or
/// for a bare date, its first instant.
pub(crate) fn time_ms(text: &str) -> Result<u64, String> {
    let parsed = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")))
        .map_err(|error| {
            format!("{text:?} is not an RFC 3339 time such as 2026-11-29T20:00:00Z ({error})")
        })?;
    Ok(parsed
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}
