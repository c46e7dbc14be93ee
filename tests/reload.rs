//! Hot reload with rollback, end to end: the real binary against the sandbox, reloaded by
//! SIGHUP and by a Kubernetes ConfigMap-style symlink swap; an invalid file is refused and
//! the running config keeps serving.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use support::*;

const PING: &str = "/sandbox/ping";
const WAITS: &str = "fincode_rate_limit_waits_total";
const RELOADS: &str = "fincode_config_reloads_total";

/// A sidecar config with only the global rate limit in play, at `per_second` (0 = off).
fn limited(sandbox: &TestSandbox, token: &str, per_second: u32) -> SidecarBuilder {
    SidecarBuilder::new(sandbox)
        .static_token(token)
        .set("log.level", "info")
        .set("rate_limit.per_second", per_second)
        .set("rate_limit.burst", 1)
        .set("rate_limit.routes", toml::Table::new())
        .set("rate_limit.max_wait", "10s")
}

/// Waits until the sidecar's output holds `needle` `times` times.
async fn wait_for_output(sidecar: &Sidecar, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while sidecar.output().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{times}) in:\n{}",
            sidecar.output()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// App traffic that runs until stopped: `workers` loops of GETs, every answer recorded.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<u16>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, done, failed, url) =
                    (stop.clone(), done.clone(), failed.clone(), url.to_owned());
                tokio::spawn(async move {
                    let app = app_client();
                    while !stop.load(Ordering::Relaxed) {
                        let status = get(&app, &url).await.status;
                        if status != 200 {
                            failed.lock().unwrap().push(status.as_u16());
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            done,
            failed,
            workers,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the workers (each finishes its call) and returns the failed statuses.
    async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        self.failed.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_reload_applies_under_load_without_a_failed_request() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let sidecar = limited(&sandbox, &token, 0).start_ready().await;

    let load = Load::start(&sidecar.url(PING), 4);
    eventually(
        Duration::from_secs(10),
        "the load to be under way",
        async || load.done() >= 50,
    )
    .await;
    assert_eq!(metric_value(&sidecar.scrape().await, WAITS), 0.0);

    // 20 requests a second, one at a time: the four workers now queue for their turn.
    let new = limited(&sandbox, &token, 20).to_toml();
    std::fs::write(sidecar.config_path(), new).unwrap();
    sidecar.signal("HUP");
    wait_for_output(&sidecar, "\"config reloaded\"", 1).await;

    let before = load.done();
    let started = Instant::now();
    // Deliberate: a measuring window of real time, as the binary paces by the clock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = load.done() - before;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = load.finish().await;

    assert!(
        failed.is_empty(),
        "failed requests under reload: {failed:?}"
    );
    // At most rate x time + the burst + the four already admitted, with slack for the
    // edges of the window; unlimited, the same loop serves hundreds.
    #[allow(clippy::cast_precision_loss)]
    let ceiling = 20.0 * elapsed + 10.0;
    #[allow(clippy::cast_precision_loss)]
    let served_f = served as f64;
    assert!(
        served_f <= ceiling,
        "{served} requests in {elapsed:.2}s after limiting to 20/s"
    );
    let metrics = sidecar.scrape().await;
    assert!(metric_value_labelled(&metrics, WAITS, "local") > 0.0);
    assert_eq!(metric_value_labelled(&metrics, RELOADS, "success"), 1.0);
    assert_eq!(metric_value_labelled(&metrics, RELOADS, "failure"), 0.0);
    let output = sidecar.output();
    assert!(output.contains("rate_limit.per_second"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let trail = tempfile::tempdir().unwrap();
    let audited = |builder: SidecarBuilder| {
        builder
            .set("audit.enabled", true)
            .set("audit.dir", trail.path().display().to_string())
            .set("audit.signing_key_env", "TEST_AUDIT_SIGNING_KEY")
            .set("redact.hash_key_env", "TEST_REDACT_HASH_KEY")
            .env(
                "TEST_REDACT_HASH_KEY",
                "reload-test-hash-key-0123456789abcdef0123",
            )
            .env(
                "TEST_AUDIT_SIGNING_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
    };
    let sidecar = audited(limited(&sandbox, &token, 10)).start_ready().await;
    let path = sidecar.config_path().to_owned();
    let base = || audited(limited(&sandbox, &token, 0));

    // Three ways to be wrong: a value of the wrong type, a route the proxy does not
    // know (valid TOML, valid schema), and a secret variable that is not set.
    let bad = [
        (
            base().set("rate_limit.per_second", "fast"),
            "rate_limit.per_second",
        ),
        (
            base().route_rate_limit("/no/such/route", 1, 1),
            "rate_limit.routes",
        ),
        (
            base().set("auth.token_env", "TEST_NOT_SET_ANYWHERE"),
            "auth.token_env",
        ),
    ];
    for (n, (builder, key)) in bad.into_iter().enumerate() {
        std::fs::write(&path, builder.to_toml()).unwrap();
        sidecar.signal("HUP");
        wait_for_output(&sidecar, "config reload refused", n + 1).await;
        let refused = sidecar
            .output()
            .lines()
            .filter(|l| l.contains("config reload refused"))
            .nth(n)
            .unwrap()
            .to_owned();
        assert!(refused.contains(key), "{key} not named in {refused}");
        assert!(!refused.contains(&token), "the token leaked: {refused}");
    }
    let metrics = sidecar.scrape().await;
    assert_eq!(metric_value_labelled(&metrics, RELOADS, "failure"), 3.0);
    assert_eq!(metric_value_labelled(&metrics, RELOADS, "success"), 0.0);

    // The old limit (10/s, burst 1) still holds: 15 calls take over a second.
    let app = app_client();
    assert_eq!(get(&app, &sidecar.admin_url("/readyz")).await.status, 200);
    let started = Instant::now();
    for _ in 0..15 {
        assert_eq!(get(&app, &sidecar.url(PING)).await.status, 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "the refused config took effect: 15 calls in {:?}",
        started.elapsed()
    );

    // A good file after the bad ones is applied (the rollback is not a latch).
    std::fs::write(&path, base().to_toml()).unwrap();
    sidecar.signal("HUP");
    wait_for_output(&sidecar, "\"config reloaded\"", 1).await;
    let started = Instant::now();
    for _ in 0..15 {
        assert_eq!(get(&app, &sidecar.url(PING)).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_millis(1200));

    // Every attempt is in the audit trail, by outcome, with key names and no values.
    let reloads: Vec<serde_json::Value> = audit_records(trail.path())
        .into_iter()
        .filter(|r| r["action"] == "config.reload")
        .collect();
    let outcomes: Vec<&str> = reloads
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failure", "failure", "failure", "success"]);
    let text = serde_json::to_string(&reloads).unwrap();
    assert!(text.contains("rate_limit.per_second"), "{text}");
    assert!(text.contains("config_sha256"), "{text}");
    assert!(!text.contains("fast"), "a value reached the trail: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configmap_symlink_swap_is_picked_up_without_a_signal() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    // The layout the kubelet mounts: config.toml -> ..data/config.toml, ..data -> a
    // timestamped directory; an update writes a new directory and renames a new ..data
    // symlink over the old one.
    let mount = tempfile::tempdir().unwrap();
    let version = |name: &str, text: String| {
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    };
    version("..2026_11_30_v1", limited(&sandbox, &token, 5).to_toml());
    std::os::unix::fs::symlink("..2026_11_30_v1", mount.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", mount.path().join("config.toml")).unwrap();
    let sidecar = limited(&sandbox, &token, 5).start_at(mount.path().join("config.toml"));
    sidecar.wait_ready(Duration::from_secs(20)).await;

    // v2 turns the global limit off and changes a key that needs a restart.
    version(
        "..2026_11_30_v2",
        limited(&sandbox, &token, 0)
            .set("upstream.request_timeout", "7s")
            .to_toml(),
    );
    std::os::unix::fs::symlink("..2026_11_30_v2", mount.path().join("..data_tmp")).unwrap();
    std::fs::rename(mount.path().join("..data_tmp"), mount.path().join("..data")).unwrap();
    wait_for_output(&sidecar, "\"config reloaded", 1).await;

    let output = sidecar.output();
    let line = output
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap();
    assert!(line.contains("file_changed"), "{line}");
    assert!(line.contains("rate_limit.per_second"), "{line}");
    assert!(line.contains("upstream.request_timeout"), "{line}");
    assert!(line.contains("restart"), "{line}");
    let metrics = sidecar.scrape().await;
    assert_eq!(
        metric_value(&metrics, "fincode_config_restart_pending_keys"),
        1.0
    );

    // 5/s with a burst of 1 would hold 20 calls for 4 s and count waits; off, none wait.
    let waits = metric_value(&metrics, WAITS);
    let app = app_client();
    for _ in 0..20 {
        assert_eq!(get(&app, &sidecar.url(PING)).await.status, 200);
    }
    assert_eq!(metric_value(&sidecar.scrape().await, WAITS), waits);
}
