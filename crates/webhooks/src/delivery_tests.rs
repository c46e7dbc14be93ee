//! Delivery over real loopback sockets: the `webhook-id` the app sees, the one timeout
//! an attempt runs under, and confirm-by-query's answers.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_config::KeyTemplate;
use fincode_store::{Claimed, EventStore, NewEvent, SqliteStore};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use tokio::sync::Notify;

use crate::{
    WebhookMetrics,
    delivery::{Confirm, HttpDelivery},
    dispatcher::{Attempt, Clock, Deliver, Dispatcher, Policy},
};

const SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How a stand-in server answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 200 with this JSON body.
    Json(&'static str),
    /// 200 headers, then a body that never ends.
    Stall,
}

/// A loopback server answering every request with `answer`, recording each request's
/// headers.
async fn server(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let record = record.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                record.lock().unwrap().push(req.headers().clone());
                async move {
                    let body: http_body_util::combinators::BoxBody<Bytes, Infallible> = match answer
                    {
                        Answer::Json(text) => {
                            Full::new(Bytes::from_static(text.as_bytes())).boxed()
                        }
                        Answer::Stall => {
                            let first = futures_util::stream::iter([Ok::<_, Infallible>(
                                Frame::data(Bytes::from_static(b"{\"data\":")),
                            )]);
                            let never = futures_util::stream::pending();
                            StreamBody::new(futures_util::StreamExt::chain(first, never)).boxed()
                        }
                    };
                    let mut response = Response::new(body);
                    *response.status_mut() = StatusCode::OK;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

fn new_event(key: &str, order: Option<&str>) -> NewEvent {
    NewEvent {
        dedupe_key: key.to_owned(),
        order_key: order.map(str::to_owned),
        correlation_id: format!("corr-{key}"),
        body: Bytes::from(format!(
            r#"{{"eventType":"TRANSACTION_STATUS","Reference":"{key}","Status":"PAID"}}"#
        )),
        headers: Vec::new(),
        received_at: SystemTime::now(),
    }
}

fn open_store(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap())
}

async fn claim_one(store: &Arc<dyn EventStore>) -> Claimed {
    let mut due = store
        .claim_due(
            SystemTime::now() + Duration::from_secs(1),
            1,
            Duration::from_secs(30),
            "test",
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    due.remove(0)
}

fn delivery(app: SocketAddr, timeout: Duration, confirm: Option<Confirm>) -> HttpDelivery {
    HttpDelivery::new(
        format!("http://{app}/hooks").parse().unwrap(),
        SecretString::from(SIGNING),
        timeout,
        confirm,
    )
}

fn confirm_through(egress: SocketAddr) -> Confirm {
    Confirm {
        egress: format!("http://{egress}"),
        path: KeyTemplate::parse("/transactions/{Reference}").unwrap(),
        status_pointer: "/data/status".to_owned(),
    }
}

/// Two sidecars with fresh databases (two pods without volumes) each deliver their
/// first event: the app, deduplicating on `webhook-id` as told, must see two ids.
#[tokio::test]
async fn webhook_ids_are_unique_across_fresh_stores_and_stable_across_attempts() {
    let (app, seen) = server(Answer::Json("{}")).await;
    let deliver = delivery(app, Duration::from_secs(5), None);
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, second) = (open_store(&one), open_store(&two));
    first.insert(new_event("A", None)).await.unwrap();
    second.insert(new_event("B", None)).await.unwrap();
    let a = claim_one(&first).await;
    let b = claim_one(&second).await;
    for event in [&a.event, &a.event, &b.event] {
        assert_eq!(
            deliver.deliver(event).await,
            Attempt::Delivered { status: 200 }
        );
    }
    let ids: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids[0], ids[1],
        "the same event keeps its id on every attempt"
    );
    assert_ne!(ids[0], ids[2], "two events never share an id: {ids:?}");
    for id in &ids {
        let uuid = id.strip_prefix("evt_").unwrap();
        let uuid = uuid::Uuid::parse_str(uuid).unwrap();
        assert_eq!(uuid.get_version_num(), 7, "{id}");
    }
}

/// FinCode (through the egress port) answers the confirm query's headers and then never
/// finishes the body: the attempt still ends, within its one timeout.
#[tokio::test]
async fn a_confirm_body_that_never_ends_is_cut_by_the_attempt_timeout() {
    let (app, _) = server(Answer::Json("{}")).await;
    let (egress, _) = server(Answer::Stall).await;
    let deliver = delivery(
        app,
        Duration::from_millis(300),
        Some(confirm_through(egress)),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    store.insert(new_event("PCN-STALL", None)).await.unwrap();
    let event = claim_one(&store).await;
    let started = std::time::Instant::now();
    let attempt = tokio::time::timeout(Duration::from_secs(10), deliver.deliver(&event.event))
        .await
        .expect("the attempt outlived every timeout (and so its lease)");
    assert!(
        matches!(
            attempt,
            Attempt::Failed {
                reason: "timeout",
                ..
            }
        ),
        "{attempt:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// FinCode now reports a later status than the event's: the event is superseded. It is
/// recorded as such, not retried for half an hour, and does not hold back the next event
/// of its ordering key.
#[tokio::test]
async fn a_superseded_event_does_not_block_its_ordering_key() {
    let (app, delivered) = server(Answer::Json("{}")).await;
    let (egress, _) = server(Answer::Json(r#"{"data":{"status":"CAPTURED"}}"#)).await;
    let deliver = Arc::new(delivery(
        app,
        Duration::from_secs(5),
        Some(confirm_through(egress)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let dispatcher = Dispatcher::new(
        store.clone(),
        deliver,
        Policy {
            dedupe_retention: Duration::from_hours(1),
            ..Policy::for_tests(10)
        },
        WebhookMetrics::register(&mut Registry::default()),
        Arc::new(Notify::new()),
        Clock::new(),
        None,
    );
    store
        .insert(new_event("PCN-ORDER-1", Some("PCN-ORDER")))
        .await
        .unwrap();
    store
        .insert(new_event("PCN-ORDER-2", Some("PCN-ORDER")))
        .await
        .unwrap();
    let first = claim_one(&store).await;
    dispatcher.attempt(first.clone()).await;
    assert!(delivered.lock().unwrap().is_empty(), "not delivered");
    let recorded = store.get(first.event.id).await.unwrap().unwrap();
    assert_eq!(recorded.last_error.as_deref(), Some("superseded"));
    let wait = recorded
        .next_attempt_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(wait > Duration::from_mins(29), "retried in {wait:?}");
    let next = claim_one(&store).await;
    assert_eq!(
        next.event.dedupe_key, "PCN-ORDER-2",
        "the next event of the key is not held back"
    );
}
