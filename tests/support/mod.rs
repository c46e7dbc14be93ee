//! The one end-to-end harness: a FinCode sandbox in-process over real TLS, the real
//! `fincode-sidecar` binary as a child process, and small HTTP clients.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

mod app;
mod otlp;
#[allow(unused_imports)]
pub use app::{Delivery, TestApp};
#[allow(unused_imports)]
pub use otlp::{OtlpReceiver, ReceivedSpan};

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fincode_sandbox::{Sandbox, SandboxConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_fincode-sidecar");

/// A sandbox with its own temporary state directory.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
}

impl TestSandbox {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a sandbox whose only login is `email` / `password`, after `adjust` has changed
    /// the rest of its config.
    pub async fn with_user(
        email: &str,
        password: &str,
        adjust: impl FnOnce(&mut SandboxConfig),
    ) -> Self {
        Self::start_with(|config| {
            config.users = vec![fincode_sandbox::User {
                email: email.to_owned(),
                password: password.to_owned(),
            }];
            adjust(config);
        })
        .await
    }

    /// Starts a sandbox after `adjust` has changed its config (users, lifetimes...).
    pub async fn start_with(adjust: impl FnOnce(&mut SandboxConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SandboxConfig {
            state_dir: dir.path().join("sandbox"),
            ..SandboxConfig::default()
        };
        adjust(&mut config);
        let sandbox = Sandbox::start(config).await.expect("sandbox starts");
        Self { sandbox, dir }
    }

    /// FinCode sends `event`, signed with `secret`, to the sidecar's webhook port; the sidecar
    /// acknowledges it with 200, delivers it to `app`, and its `webhook.delivered` record lands
    /// in the audit trail in `trail`.
    pub async fn deliver_and_record(
        &self,
        sidecar: &Sidecar,
        app: &TestApp,
        trail: &Path,
        secret: &str,
        event: serde_json::Value,
    ) {
        let sent = self
            .send_webhooks(fincode_sandbox::SendWebhooks {
                url: sidecar.webhook_url("/webhooks/fincode"),
                signing: hmac_signing(secret),
                events: vec![event],
                copies: 1,
                concurrency: 1,
                ..fincode_sandbox::SendWebhooks::default()
            })
            .await;
        assert_eq!(sent[0].status, Some(200));
        app.wait_for(1, Duration::from_secs(10)).await;
        trail_record_lands(trail, "the delivery's audit record", "webhook.delivered").await;
    }
}

impl std::ops::Deref for TestSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// Builds a sidecar config as a TOML table, starting from loopback ephemeral ports.
pub struct SidecarBuilder {
    table: toml::Table,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl SidecarBuilder {
    /// A config pointing at `sandbox`, trusting its CA.
    pub fn new(sandbox: &Sandbox) -> Self {
        let mut builder = Self::bare(&sandbox.base_url());
        builder = builder.set(
            "upstream.ca_file",
            sandbox.ca_cert_path().display().to_string(),
        );
        builder
    }

    /// A config pointing at `base_url`, nothing trusted beyond the webpki roots.
    pub fn bare(base_url: &str) -> Self {
        let text = format!(
            r#"
[listen]
egress = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstream]
base_url = "{base_url}"
connect_timeout = "2s"
request_timeout = "5s"
[limits]
max_request_body_bytes = 8388608
[log]
level = "debug"
"#
        );
        Self {
            table: text.parse().unwrap(),
            env: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Sets a dotted key, e.g. `set("upstream.request_timeout", "1s")`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut table = &mut self.table;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// A per-route rate limit: `rate_limit.routes."<route>"` at `per_second` with `burst`.
    pub fn route_rate_limit(self, route: &str, per_second: i64, burst: i64) -> Self {
        self.set(
            "rate_limit.routes",
            toml::Table::from_iter([(
                route.to_owned(),
                toml::Value::Table(toml::Table::from_iter([
                    ("per_second".to_owned(), toml::Value::Integer(per_second)),
                    ("burst".to_owned(), toml::Value::Integer(burst)),
                ])),
            )]),
        )
    }

    /// A config pointing at `sandbox` in static-token mode, with a fresh token the sandbox
    /// minted for an hour.
    pub fn with_static_token(sandbox: &Sandbox) -> Self {
        let token = sandbox.mint_static_token(Duration::from_hours(1));
        Self::new(sandbox).static_token(&token)
    }

    /// Static-token mode with `token` in the environment.
    pub fn static_token(self, token: &str) -> Self {
        self.set("auth.mode", "static")
            .set("auth.token_env", "TEST_FINCODE_API_TOKEN")
            .env("TEST_FINCODE_API_TOKEN", token)
    }

    /// Login mode with `email` / `password` in the environment and the sandbox's key.
    pub fn login(self, sandbox: &Sandbox, email: &str, password: &str) -> Self {
        self.set("auth.mode", "login")
            .set("auth.email_env", "TEST_FINCODE_EMAIL")
            .set("auth.password_env", "TEST_FINCODE_PASSWORD")
            .set(
                "auth.public_key_file",
                sandbox.public_key_path().display().to_string(),
            )
            .env("TEST_FINCODE_EMAIL", email)
            .env("TEST_FINCODE_PASSWORD", password)
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The config file this builder writes.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).unwrap()
    }

    /// Writes the config and returns a one-shot command of the binary (`preflight`,
    /// `check`...) with `args`, then `--config <file>`, run with this builder's environment.
    /// The file lives as long as the builder.
    pub fn command(&self, args: &[&str]) -> Command {
        let path = self.config_path();
        std::fs::write(&path, self.to_toml()).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Writes the config and starts the binary; waits until it logs that it is ready.
    pub fn start(self) -> Sidecar {
        let path = self.config_path();
        std::fs::write(&path, self.to_toml()).unwrap();
        self.start_at(path)
    }

    /// Starts the binary on the config file at `path`, already written (a ConfigMap-style
    /// symlink, say); waits until it logs that it is ready.
    /// Starts the sidecar and waits (20 s at most) until its readiness probe says ready.
    pub async fn start_ready(self) -> Sidecar {
        let sidecar = self.start();
        sidecar.wait_ready(Duration::from_secs(20)).await;
        sidecar
    }

    pub fn start_at(self, path: PathBuf) -> Sidecar {
        let process = Process::spawn(&path, &self.env);
        Sidecar {
            process,
            config: path,
            env: self.env,
            _dir: self.dir,
        }
    }

    /// Turns webhooks on: signed with `scheme` (`hmac` by default) and the secret in
    /// `WEBHOOK_SECRET`, delivered to `deliver_to` signed with [`SIGNING_SECRET`], events in
    /// `sqlite_path`, fast retries. Adjust with `set` afterwards.
    pub fn webhooks(self, deliver_to: &str, secret: &str, sqlite_path: &Path) -> Self {
        self.set("webhooks.enabled", true)
            .set("webhooks.listen", "127.0.0.1:0")
            .set("webhooks.secret_envs", vec!["WEBHOOK_SECRET".to_owned()])
            .set("webhooks.deliver_to", deliver_to)
            .set("webhooks.signing_secret_env", "SIDECAR_SIGNING_SECRET")
            .set("webhooks.backoff_base", "50ms")
            .set("webhooks.backoff_cap", "200ms")
            .set("store.sqlite_path", sqlite_path.display().to_string())
            .env("WEBHOOK_SECRET", secret)
            .env("SIDECAR_SIGNING_SECRET", SIGNING_SECRET)
    }
}

impl SidecarBuilder {
    /// Removes a dotted key, e.g. `unset("store.sqlite_path")`.
    pub fn unset(mut self, key: &str) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut table = &mut self.table;
        for part in parts {
            let Some(inner) = table.get_mut(part).and_then(toml::Value::as_table_mut) else {
                return self;
            };
            table = inner;
        }
        table.remove(last);
        self
    }

    /// Keeps webhook events in Postgres at `url` (no password, no query), in `schema`,
    /// instead of the SQLite file [`Self::webhooks`] set: what replicas sharing one
    /// stream of webhooks run.
    pub fn postgres_store(self, url: &str, schema: &str) -> Self {
        self.unset("store.sqlite_path")
            .set("store.url", url)
            .set("store.tls", "disable")
            .set("store.schema", schema)
            .set("store.pool_size", 8)
    }
}

/// The sidecar's own Standard Webhooks secret in tests (what the app verifies with).
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One run of the binary and what it printed.
struct Process {
    child: Child,
    output: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr into `output`; finished once the process
    /// has exited and everything it wrote has been read.
    readers: [std::thread::JoinHandle<()>; 2],
    egress: SocketAddr,
    admin: SocketAddr,
    webhooks: Option<SocketAddr>,
}

impl Process {
    fn spawn(config: &Path, env: &[(String, String)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("sidecar binary runs");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let readers = [
            spawn_reader(stdout, output.clone(), Some(ready_tx)),
            spawn_reader(stderr, output.clone(), None),
        ];
        let Ok(line) = ready_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("sidecar did not become ready:\n{}", output.lock().unwrap());
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |key: &str| -> Option<SocketAddr> { json[key].as_str()?.parse().ok() };
        Self {
            egress: addr("egress").unwrap(),
            admin: addr("admin").unwrap(),
            webhooks: addr("webhooks"),
            child,
            output,
            readers,
        }
    }

    /// Whether everything the process wrote is in `output` (both pipes read to the end).
    fn output_complete(&self) -> bool {
        self.readers
            .iter()
            .all(std::thread::JoinHandle::is_finished)
    }
}

fn spawn_reader(
    stream: impl std::io::Read + Send + 'static,
    output: Arc<Mutex<String>>,
    ready: Option<std::sync::mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = ready
                .as_ref()
                .filter(|_| line.contains("fincode-sidecar ready"))
            {
                let _ = tx.send(line.clone());
            }
            let mut out = output.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    })
}

/// The running sidecar binary. Killed on drop.
pub struct Sidecar {
    process: Process,
    config: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.process.egress)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.process.admin)
    }

    /// The webhook listener's URL for `path` (webhooks must be on).
    pub fn webhook_url(&self, path: &str) -> String {
        let addr = self.process.webhooks.expect("webhooks are enabled");
        format!("http://{addr}{path}")
    }

    pub fn egress_addr(&self) -> SocketAddr {
        self.process.egress
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.process.admin
    }

    /// The webhook listener's address (webhooks must be on).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.process.webhooks.expect("webhooks are enabled")
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Sends `signal` (`HUP`, `TERM`...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `kill -9`: no drain, no flush, nothing.
    pub fn kill(&mut self) {
        self.process.child.kill().unwrap();
        self.process.child.wait().unwrap();
    }

    /// Starts the binary again with the same config file and environment (new ports).
    pub fn restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        self.process = Process::spawn(&self.config, &self.env);
    }

    /// Polls `/readyz` until it answers 200 (panics after `within`).
    pub async fn wait_ready(&self, within: Duration) {
        let client = app_client();
        let deadline = Instant::now() + within;
        loop {
            if get(&client, &self.admin_url("/readyz")).await.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar not ready:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The admin port's `/metrics` exposition.
    pub async fn scrape(&self) -> String {
        let response = get(&app_client(), &self.admin_url("/metrics")).await;
        assert_eq!(response.status, 200);
        String::from_utf8(response.body.to_vec()).unwrap()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.process.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status. Async so that an in-process sandbox
    /// keeps serving (the sidecar logs out and drains against it while stopping).
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(within).await
    }

    /// Waits for the process to exit on its own (after a signal sent earlier), and for
    /// everything it wrote to be read: [`Self::output`] is then complete.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap()
                && self.process.output_complete()
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not exit within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// Waits until `condition` holds, checking every 10 ms; panics after `within`, naming `what`
/// never happened. The one way these tests wait for an event (a request reaching FinCode,
/// a log line, a metric) rather than sleeping and hoping it came.
pub async fn eventually(
    within: Duration,
    what: impl std::fmt::Display,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The app's HTTP client.
pub type AppClient = Client<HttpConnector, Full<Bytes>>;

/// A plain-HTTP client, as the app uses to call the sidecar.
pub fn app_client() -> AppClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (HTTP/2 prior knowledge) client.
pub fn app_client_h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A client that talks to the sandbox directly over TLS, trusting its CA.
pub fn direct_client(
    ca: &Path,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A response with its body collected.
#[derive(Debug)]
pub struct Collected {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json error of the given kind and returns its body.
    pub fn assert_problem(&self, status: u16, kind: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            self.header("x-sidecar-error"),
            Some(kind),
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert_eq!(problem["type"], format!("urn:fincode-sidecar:error:{kind}"));
        assert!(problem["title"].is_string());
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(
            problem["correlation_id"].as_str(),
            self.header("x-request-id"),
            "the problem names the request's correlation id"
        );
        problem
    }
}

pub async fn send<C>(client: &Client<C, Full<Bytes>>, req: Request<Full<Bytes>>) -> Collected
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response: Response<hyper::body::Incoming> =
        client.request(req).await.expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The app's create-transaction call through the sidecar, with or without an
/// idempotency key.
pub fn create_transaction(
    sidecar: &Sidecar,
    key: Option<&str>,
    body: &'static str,
) -> Request<Full<Bytes>> {
    let mut request = Request::post(sidecar.url("/transactionmanagement/create-transaction"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("x-idempotency-key", key);
    }
    request.body(Full::from(body)).unwrap()
}

pub async fn get<C>(client: &Client<C, Full<Bytes>>, url: &str) -> Collected
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    send(client, Request::get(url).body(Full::default()).unwrap()).await
}

/// Deterministic pseudo-random bytes (no RNG dependency, reproducible failures).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The secret canary: asserts that no secret, nor any 12-byte window of one, appears in
/// `haystack` (the sidecar's output, exported spans, metrics...). Windows catch a secret
/// that was truncated or split rather than printed whole.
pub fn assert_no_secrets(haystack: &str, secrets: &[&str]) {
    const WINDOW: usize = 12;
    for secret in secrets {
        assert!(!secret.is_empty());
        let bytes = secret.as_bytes();
        let windows: Vec<&[u8]> = if bytes.len() <= WINDOW {
            vec![bytes]
        } else {
            bytes.windows(WINDOW).collect()
        };
        for window in windows {
            let window = String::from_utf8_lossy(window);
            if let Some(at) = haystack.find(window.as_ref()) {
                let start = at.saturating_sub(80);
                let end = (at + 80).min(haystack.len());
                panic!(
                    "secret fragment {window:?} leaked; context: {:?}",
                    haystack.get(start..end).unwrap_or("<non-utf8 boundary>")
                );
            }
        }
    }
}

/// Every `X-Auth-Token` value the sandbox saw: the tokens the sidecar used.
pub fn tokens_seen(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .requests()
        .iter()
        .flat_map(|r| {
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-auth-token"))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The sum of every series of the metric `name` in an exposition (any labels).
pub fn metric_value(text: &str, name: &str) -> f64 {
    metric_series(text, name).map(|(_, value)| value).sum()
}

/// The sum of the series of `name` that have some label equal to `value`.
pub fn metric_value_labelled(text: &str, name: &str, value: &str) -> f64 {
    let label = format!("=\"{value}\"");
    metric_series(text, name)
        .filter(|(labels, _)| labels.contains(&label))
        .map(|(_, value)| value)
        .sum()
}

/// `(labels, value)` of each sample of `name`.
fn metric_series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = rest.rsplit_once(' ')?;
        (labels.is_empty() || labels.starts_with('{'))
            .then(|| Some((labels, value.parse().ok()?)))
            .flatten()
    })
}

/// Runs a one-shot command of the binary (`check`, `webhooks ...`) to completion: its exit
/// code and everything it printed, stdout then stderr.
pub fn run_binary(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// Whether any file of the audit trail in `dir` holds `needle` (read as it is, a line
/// still being written included), to wait for a record to land.
pub fn trail_contains(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        std::fs::read(entry.unwrap().path())
            .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
    })
}

/// Waits (10 s at most) until a record holding `needle` lands in the audit trail in `dir`:
/// the trail is written after the answer, asynchronously.
pub async fn trail_record_lands(dir: &Path, what: &str, needle: &str) {
    eventually(Duration::from_secs(10), what, async || {
        trail_contains(dir, needle)
    })
    .await;
}

/// Every record of every segment of the audit trail in `dir`, in order.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How FinCode signs webhooks under the sidecar's default scheme (`hmac`, SHA-256, hex, in
/// `x-fincode-signature`), with `secret`, for the sandbox's webhook sender.
pub fn hmac_signing(secret: &str) -> fincode_sandbox::WebhookSigning {
    fincode_sandbox::WebhookSigning::Hmac {
        secret: secret.to_owned(),
        algorithm: "sha256".to_owned(),
        encoding: "hex".to_owned(),
        header: None,
        prefix: None,
    }
}

/// Writes `request` as raw bytes to `addr` and returns everything read back until the
/// peer closes (or 5 s pass): for requests a well-behaved client could not send.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}
