//! A fixed-rate HTTP/1.1 load generator for `benches/load.sh`: p50/p99 latency at a
//! moderate, steady request rate, which `wrk` (a closed loop that only saturates) cannot
//! give.
//!
//! Open loop, as wrk2 does it: request `i` is *due* at `start + i / rate`, whatever
//! happened to the requests before it, and its latency is measured from when it was due,
//! not from when a connection got round to sending it. A proxy that stalls therefore
//! shows the stall in every request that waited behind it (no coordinated omission).
//! `--connections` keep-alive connections share the schedule; a request whose connection
//! is busy waits, and that wait is part of its latency.
//!
//! The one exception is the client's own lateness: tokio's timer wakes on a 1 ms tick,
//! so a request due at a moment an idle connection is waiting for is sent up to a
//! millisecond late. No proxy is to blame for that wait, and counting it (as this client
//! did before) added 0.5-1.5 ms to every request of every proxy alike, which buried the
//! tens of microseconds the p99 target compares. So a request whose connection was idle
//! when it fell due counts from when it was sent; one that waited for its connection (the
//! proxy was slow with the one before) still counts from when it was due.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/sandbox/ping \
//!     --rate 2000 --duration 10s --connections 32
//! ```
//!
//! `--body-file F` sends a POST with that body instead of a GET, and `--header 'Name: value'`
//! (repeatable) adds headers (`benches/load.sh`'s create-transaction mix).
//!
//! Prints one line: `requests N errors E rate R p50_ms A p90_ms B p99_ms C p999_ms D max_ms M`.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

#[derive(Parser)]
struct Args {
    /// `http://host:port/path` (plain HTTP: the proxies under test take plain HTTP).
    #[arg(long)]
    url: http::Uri,
    /// Requests per second, all connections together.
    #[arg(long)]
    rate: u32,
    /// How long to send for (`10s`, `30s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Keep-alive connections sharing the schedule.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Unmeasured time at the same rate first, so pools and caches are warm.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Send a POST with this file's bytes as the body (a GET without it).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// What every request of the run is: method, path, headers and body.
struct Template {
    method: http::Method,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Template {
    fn from_args(args: &Args, authority: &str, path: String) -> Result<Self, String> {
        let mut headers = http::HeaderMap::new();
        let host = http::HeaderValue::from_str(authority).map_err(|e| format!("--url: {e}"))?;
        headers.insert(http::header::HOST, host);
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("--header {header:?}: expected `Name: value`"))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("--header {header:?}: {e}"))?;
            let value = http::HeaderValue::from_str(value.trim())
                .map_err(|e| format!("--header {header:?}: {e}"))?;
            headers.append(name, value);
        }
        let (method, body) = match &args.body_file {
            Some(file) => {
                let body = std::fs::read(file)
                    .map_err(|e| format!("--body-file {}: {e}", file.display()))?;
                (http::Method::POST, Bytes::from(body))
            }
            None => (http::Method::GET, Bytes::new()),
        };
        Ok(Self {
            method,
            path,
            headers,
            body,
        })
    }

    fn request(&self) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .body(Full::new(self.body.clone()))?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The shared schedule: which request is next, and when the run ends.
struct Schedule {
    start: Instant,
    interval: Duration,
    next: AtomicU64,
    /// Requests due before this index are warm-up: sent, not measured.
    measured_from: u64,
    total: u64,
}

impl Schedule {
    /// The next request's index and when it is due; `None` once the run is over.
    fn take(&self) -> Option<(u64, Instant)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if index >= self.total {
            return None;
        }
        let offset = self.interval.saturating_mul(u32::try_from(index).ok()?);
        Some((index, self.start + offset))
    }
}

async fn run(args: &Args) -> Result<(), String> {
    if args.rate == 0 || args.connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    if args.url.scheme_str() != Some("http") {
        return Err("--url must be http://".into());
    }
    let authority = args
        .url
        .authority()
        .ok_or("--url needs host:port")?
        .to_string();
    let path = args
        .url
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let template = Arc::new(Template::from_args(args, &authority, path)?);
    let interval = Duration::from_secs(1) / args.rate;
    let per_second = u64::from(args.rate);
    let measured_from = per_second * args.warmup.as_millis() as u64 / 1000;
    let total = measured_from + per_second * args.duration.as_millis() as u64 / 1000;
    let schedule = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(100),
        interval,
        next: AtomicU64::new(0),
        measured_from,
        total,
    });
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (schedule, authority, template) =
            (schedule.clone(), authority.clone(), template.clone());
        workers.push(tokio::spawn(async move {
            worker(&schedule, &authority, &template).await
        }));
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total as usize), 0u64);
    for worker in workers {
        let (mut worker_latencies, worker_errors) =
            worker.await.map_err(|error| format!("worker: {error}"))?;
        latencies.append(&mut worker_latencies);
        errors += worker_errors;
    }
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1e3
    };
    println!(
        "requests {} errors {} rate {:.0} p50_ms {:.3} p90_ms {:.3} p99_ms {:.3} p999_ms {:.3} max_ms {:.3}",
        latencies.len(),
        errors,
        latencies.len() as f64 / args.duration.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        at(1.0),
    );
    if errors > 0 {
        return Err(format!("{errors} requests failed"));
    }
    Ok(())
}

/// One keep-alive connection: takes due requests off the schedule until it ends; the
/// measured latencies and the failures.
async fn worker(schedule: &Schedule, authority: &str, template: &Template) -> (Vec<Duration>, u64) {
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let mut sender = None;
    while let Some((index, due)) = schedule.take() {
        // Idle before it was due: the time after `due` until it is sent is this client's
        // timer, not the proxy (see the module docs).
        let idle_at_due = Instant::now() <= due;
        tokio::time::sleep_until(due).await;
        if sender.is_none() {
            sender = connect(authority).await;
        }
        let Some(open) = sender.as_mut() else {
            errors += 1;
            continue;
        };
        let sent = if idle_at_due { Instant::now() } else { due };
        let ok = match template.request() {
            Ok(request) => match open.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        if !ok {
            errors += 1;
            sender = None;
            continue;
        }
        if index >= schedule.measured_from {
            latencies.push(sent.elapsed());
        }
    }
    (latencies, errors)
}

async fn connect(authority: &str) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(authority).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}
