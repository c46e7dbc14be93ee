//! A stand-in for the merchant app's webhook endpoint: records what the sidecar delivers
//! and answers with a status the test sets (503 to play "the app is down").

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One delivery as the app received it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// The app's webhook endpoint on a loopback port.
pub struct TestApp {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    arrived: Arc<Mutex<Vec<Delivery>>>,
    seen: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let arrived: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let shared = (
            status.clone(),
            delay_ms.clone(),
            arrived.clone(),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (status, delay_ms, arrived, seen) = shared.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let Ok(body) = body
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                            else {
                                return Ok(Response::new(Full::new(Bytes::new())));
                            };
                            arrived.lock().unwrap().push(Delivery {
                                headers: parts.headers.clone(),
                                body: body.clone(),
                            });
                            let delay = delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let code = status.load(Ordering::SeqCst);
                            if code == 200 {
                                seen.lock().unwrap().push(Delivery {
                                    headers: parts.headers,
                                    body,
                                });
                            }
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::from_u16(code).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            status,
            delay_ms,
            arrived,
            seen,
            task,
        }
    }

    /// Where the sidecar delivers.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks/fincode", self.addr)
    }

    /// What the app answers from now on (200 records the delivery).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Takes `delay` to answer each delivery from now on (a slow app).
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every delivery attempt that reached the app, whatever it answered (or whether it
    /// answered at all), in arrival order.
    pub fn arrivals(&self) -> Vec<Delivery> {
        self.arrived.lock().unwrap().clone()
    }

    /// Deliveries accepted so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` deliveries were accepted (panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.deliveries();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} deliveries after {within:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
