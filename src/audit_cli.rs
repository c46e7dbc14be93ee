//! `fincode-sidecar audit ...`: check a trail offline. Reads the files directly; no
//! running sidecar is needed, so an auditor can run it on a copy.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use fincode_audit::Signer;

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
    },
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

pub(crate) fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { dir, public_key } => verify(&dir, public_key.as_deref()),
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

fn verify(dir: &std::path::Path, public_key: Option<&str>) -> ExitCode {
    if !dir.is_dir() {
        eprintln!(
            "error: {} is not a directory holding an audit trail",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let key = public_key.map(|given| {
        std::fs::read_to_string(given)
            .map_or_else(|_| given.trim().to_owned(), |text| text.trim().to_owned())
    });
    let report = match &key {
        Some(key) => fincode_audit::verify_signed(dir, key, &[]),
        None => fincode_audit::verify(dir),
    };
    match report {
        Ok(report) if report.is_intact() => {
            println!(
                "{}: intact ({} segment(s), {} record(s){})",
                dir.display(),
                report.segments,
                report.records,
                if key.is_some() {
                    ", checkpoints signed by the given key"
                } else {
                    "; no key given, checkpoints not checked"
                }
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for finding in &report.findings {
                println!("{finding}");
            }
            println!(
                "{}: NOT intact: {} finding(s) in {} segment(s), {} record(s)",
                dir.display(),
                report.findings.len(),
                report.segments,
                report.records
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: reading {}: {error}", dir.display());
            ExitCode::from(2)
        }
    }
}
