//! `fincode-sidecar status [--admin URL] [--watch [SECS]]`: one screen for launch day,
//! read from the running sidecar's admin port (`/metrics` and `/readyz`, both read-only):
//! readiness, requests and success rate, p50/p99, 4xx/5xx, retries, breaker, token,
//! webhook backlog and dead letters, audit health, each line marked OK, WARN or RED
//! against the thresholds of the shipped alert rules.
//!
//! Without `--watch` it shows totals since the sidecar started and exits (0, or 1 when
//! the admin port cannot be reached). With it, the screen is redrawn every SECS seconds
//! with the figures of the last interval (the difference between two scrapes), until
//! Ctrl-C.

mod prom;
mod screen;

use std::{
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use fincode_config::Env;

use self::{prom::Exposition, screen::Scrape};

/// A scrape that takes longer than this counts as unreachable: the admin port answers
/// at once when the sidecar is healthy.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `--watch` redraws no faster than this (a scrape renders every metric).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The admin port's base URL, e.g. http://127.0.0.1:9090. Without it, the
    /// `listen.admin` address of the config (`--config`) is used, over loopback when it
    /// listens on every address.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// Redraw every SECS seconds (default 2) with the rates over the last interval,
    /// until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub(crate) fn run(args: &StatusArgs, config_path: &Path) -> ExitCode {
    let interval = match args.watch {
        Some(secs) if !secs.is_finite() || secs < MIN_INTERVAL.as_secs_f64() => {
            eprintln!(
                "error: --watch {secs}: give an interval of at least {} s",
                MIN_INTERVAL.as_secs_f64()
            );
            return ExitCode::from(2);
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let admin = match &args.admin {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match crate::store_cli::load_config(config_path, &Env::from_process()) {
            Ok(config) => admin_url(config.listen.admin),
            Err(code) => return code,
        },
    };
    // The admin port serves plain HTTP (it is reached over loopback or the pod network).
    if !admin.starts_with("http://") {
        eprintln!("error: --admin {admin}: give an http:// URL such as http://127.0.0.1:9090");
        return ExitCode::from(2);
    }
    let runtime = match crate::cli_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match interval {
            None => once(&admin).await,
            Some(interval) => {
                tokio::select! {
                    () = watch(&admin, interval) => ExitCode::SUCCESS,
                    _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                }
            }
        }
    })
}

/// The URL of the admin listener bound to `addr`, reached over loopback when it listens
/// on every address.
fn admin_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

async fn once(admin: &str) -> ExitCode {
    match scrape(admin).await {
        Ok(now) => {
            print!(
                "{}",
                screen::render(admin, &now, None, Duration::ZERO, colour())
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Redraws forever; the caller stops it on Ctrl-C. An unreachable admin port is shown
/// as a frame of its own, and the next scrape tries again (a restarting sidecar comes
/// back).
async fn watch(admin: &str, interval: Duration) {
    let mut previous: Option<(Scrape, Instant)> = None;
    let mut stdout = std::io::stdout();
    loop {
        let started = Instant::now();
        let frame = match scrape(admin).await {
            Ok(now) => {
                let frame = match &previous {
                    Some((before, at)) => screen::render(
                        admin,
                        &now,
                        Some(before),
                        started.duration_since(*at),
                        colour(),
                    ),
                    None => screen::render(admin, &now, None, Duration::ZERO, colour()),
                };
                previous = Some((now, started));
                frame
            }
            Err(why) => format!(
                "fincode-sidecar status  {admin}\nRED  {why}\n(trying again every {:.1} s; Ctrl-C stops)\n",
                interval.as_secs_f64()
            ),
        };
        // Clear the terminal before a frame; in a pipe or a file, frames follow each
        // other, separated by a blank line.
        let clear = if colour() { "\x1b[2J\x1b[H" } else { "\n" };
        if write!(stdout, "{clear}{frame}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // Nobody reads any more (a closed pipe): stop.
            return;
        }
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// Colours and screen clearing only on a terminal.
fn colour() -> bool {
    std::io::stdout().is_terminal()
}

/// `/metrics` and `/readyz`; an error when `/metrics` cannot be read.
async fn scrape(admin: &str) -> Result<Scrape, String> {
    let get = |path: &'static str| async move {
        let url = format!("{admin}{path}");
        match tokio::time::timeout(
            SCRAPE_TIMEOUT,
            crate::webhooks_cli::call(http::Method::GET, &url, None),
        )
        .await
        {
            Ok(Ok((status, body))) => {
                Ok((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
            }
            Ok(Err(why)) => Err(format!("{url}: {why}")),
            Err(_) => Err(format!(
                "{url}: no answer within {} s",
                SCRAPE_TIMEOUT.as_secs()
            )),
        }
    };
    let (metrics, ready) = tokio::join!(get("/metrics"), get("/readyz"));
    let unreachable = |why: String| {
        format!(
            "the admin port is unreachable: {why}; is the sidecar running, and is --admin (or listen.admin in --config) its admin port?"
        )
    };
    let (status, text) = metrics.map_err(unreachable)?;
    if status != 200 {
        return Err(format!(
            "{admin}/metrics answered {status}: is this the sidecar's admin port?"
        ));
    }
    Ok(Scrape {
        metrics: Exposition::parse(&text),
        ready: ready.ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_port_on_every_address_is_reached_over_loopback() {
        assert_eq!(
            admin_url(
                "0.0.0.0:9090"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0; 4], 0)))
            ),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            admin_url("[::]:9090".parse().unwrap_or(SocketAddr::from(([0; 4], 0)))),
            "http://[::1]:9090"
        );
        assert_eq!(
            admin_url(
                "10.1.2.3:9191"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0; 4], 0)))
            ),
            "http://10.1.2.3:9191"
        );
    }
}
