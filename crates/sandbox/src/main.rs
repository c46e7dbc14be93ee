#![forbid(unsafe_code)]
//! `fincode-sandbox`: run the FinCode emulator until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fincode_sandbox::{DEMO_EMAIL, DEMO_PASSWORD, OaepMgf1, Sandbox, SandboxConfig, User};

/// A FinCode API emulator over real TLS, with fault injection and counters.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// HTTPS (FinCode API) listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    https_addr: SocketAddr,
    /// Admin API listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8444")]
    admin_addr: SocketAddr,
    /// Directory for ca.pem and the RSA key PEMs (created if missing).
    #[arg(long, default_value = "./sandbox-state")]
    state_dir: PathBuf,
    /// A login user as email:password; repeatable. Default: the demo user.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<User>,
    /// A static API token to accept; repeatable.
    #[arg(long = "static-token")]
    static_tokens: Vec<String>,
    /// MGF1 hash of the login password's RSA-OAEP (SHA-256): "sha1", as FinCode's Java server
    /// decrypts, or "sha256".
    #[arg(long, default_value = "sha1")]
    oaep_mgf1: OaepMgf1,
}

fn parse_user(raw: &str) -> Result<User, String> {
    match raw.split_once(':') {
        Some((email, password)) if !email.is_empty() && !password.is_empty() => Ok(User {
            email: email.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err("expected email:password".to_owned()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let users = if cli.users.is_empty() {
        vec![User {
            email: DEMO_EMAIL.to_owned(),
            password: DEMO_PASSWORD.to_owned(),
        }]
    } else {
        cli.users
    };
    let sandbox = Sandbox::start(SandboxConfig {
        https_addr: cli.https_addr,
        admin_addr: cli.admin_addr,
        state_dir: cli.state_dir,
        users,
        static_tokens: cli.static_tokens,
        oaep_mgf1: cli.oaep_mgf1,
        ..SandboxConfig::default()
    })
    .await
    .context("starting the sandbox")?;

    println!("base url:   {}", sandbox.base_url());
    println!("admin url:  {}", sandbox.admin_url());
    println!("ca cert:    {}", sandbox.ca_cert_path().display());
    println!("public key: {}", sandbox.public_key_path().display());
    println!(
        "public key (bare base64, as the dashboard shows it): {}",
        sandbox.public_key_base64_path().display()
    );

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    sandbox.shutdown().await;
    Ok(())
}
