//! The audit trail of webhooks, through the real parts: the listener on a loopback socket,
//! the dispatcher delivering over HTTP to a stand-in app (a real local server), the admin
//! routes, and a real audit writer whose segment files are read back byte for byte.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_audit::{AuditLog, Auditor, WriterConfig};
use fincode_config::{Config, Secrets};
use fincode_redact::Redactor;
use fincode_store::{EventStore, SqliteStore, Status};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    Webhooks,
    admin::ADMIN_HEADER,
    verify::{Algorithm, Encoding, Scheme, sign},
};

const SECRET: &str = "whaudit-webhook-secret";
const ADMIN_TOKEN: &str = "whaudit-admin-token-4411";
const REFERENCE: &str = "PCN-AUDIT-778120";
const TRANSACTION: &str = "TXN-AUDIT-55190";
const NAME: &str = "Adaeze Okonkwo-Whaudit";
/// A reference whose event the stand-in app refuses, so it becomes a dead letter.
const DEAD_REFERENCE: &str = "PCN-AUDIT-DEAD-31";
const FORGED_REFERENCE: &str = "PCN-FORGED-90210";

fn event(reference: &str, transaction: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "eventType": "TRANSACTION_STATUS",
            "Reference": reference,
            "transactionId": transaction,
            "Status": "PAID",
            "amountSent": 250_000,
            "beneficiaryFullName": NAME,
            "beneficiaryAccountNumber": "0123456789",
        })
        .to_string(),
    )
}

/// The stand-in app: 503 for the dead reference's event, 200 for anything else.
async fn app() -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let refuse = String::from_utf8_lossy(&body).contains(DEAD_REFERENCE);
                let mut response = Response::new(Full::new(Bytes::new()));
                if refuse {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

struct Sent {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
}

impl Sent {
    /// POSTs `body` signed (or, with `tamper`, signed over other bytes), with `extra`
    /// headers; returns the status.
    async fn post(&self, body: Bytes, tamper: bool, extra: &[(&'static str, &'static str)]) -> u16 {
        let scheme = Scheme::Hmac {
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            header: HeaderName::from_static("x-fincode-signature"),
            prefix: String::new(),
        };
        let signed = if tamper {
            b"other bytes".as_slice()
        } else {
            &body
        };
        let headers = sign(
            &scheme,
            &SecretString::from(SECRET),
            signed,
            SystemTime::now(),
            "m",
        )
        .unwrap();
        let mut request = Request::post(&self.url).body(Full::new(body)).unwrap();
        request.headers_mut().extend(headers);
        for (name, value) in extra {
            request.headers_mut().insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        self.client
            .request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn records(dir: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(dir.join("audit-00000001.jsonl")).unwrap();
    let records = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (text, records)
}

fn with_action<'a>(records: &'a [Value], action: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["action"] == action).collect()
}

async fn admin_replay(
    admin: &crate::admin::Admin,
    path: &str,
    peer: &str,
    headers: &[(&'static str, &'static str)],
) -> StatusCode {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    admin
        .handle(&Method::POST, path, None, &map, peer.parse().unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One event's life, told in order.
async fn every_webhook_event_and_admin_replay_is_in_the_trail_with_no_clear_identifier() {
    let trail_dir = tempfile::tempdir().unwrap();
    let redactor = Redactor::builder()
        .hash_key(b"whaudit-pseudonym-key-0123456789".to_vec().into())
        .build();
    let (log, writer) = AuditLog::start(
        WriterConfig::new(trail_dir.path().to_path_buf()),
        None,
        Box::new(|_, _| {}),
    )
    .unwrap();
    let auditor = Auditor::new(log.clone(), redactor.clone(), Some("app".to_owned()), false);

    let app = app().await;
    let mut config =
        Config::with_base_url("https://acme.fincode.tech/api/v6/services".parse().unwrap());
    config.webhooks.enabled = true;
    config.webhooks.secret_envs = vec!["T_SECRET".to_owned()];
    config.webhooks.deliver_to = Some(format!("http://{app}/hooks").parse().unwrap());
    config.webhooks.signing_secret_env = Some("T_SIGNING".to_owned());
    config.webhooks.admin_token_env = Some("T_ADMIN".to_owned());
    config.webhooks.max_attempts = 1;
    config.webhooks.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    // What `Config::secrets` resolves from T_SECRET, T_SIGNING and T_ADMIN.
    let secret = |value: &str| SecretString::from(value.to_owned());
    let secrets = Secrets {
        webhook_secrets: vec![secret(SECRET)],
        webhook_signing_secret: Some(secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        admin_token: Some(secret(ADMIN_TOKEN)),
        ..Secrets::default()
    };
    let store_dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(&store_dir.path().join("events.db")).unwrap());
    let webhooks = Webhooks::from_config(
        &config,
        &secrets,
        config.listen.egress,
        store.clone(),
        redactor,
        &mut prometheus_client::registry::Registry::default(),
        Some(auditor.clone()),
    )
    .unwrap()
    .unwrap();
    let admin = webhooks.admin();
    let (listener, dispatcher) = webhooks.into_parts();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = socket.local_addr().unwrap();
    let shutdown = fincode_server::CancellationToken::new();
    tokio::spawn(listener.serve(
        fincode_server::Server::new("webhooks", &config.listeners.webhooks),
        socket,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let sent = Sent {
        client: Client::builder(TokioExecutor::new()).build_http(),
        url: format!("http://{listen}/webhooks/fincode"),
    };

    // Received, then the same again (a duplicate), a forgery relayed by the trusted
    // proxy, and an event the app will refuse.
    assert_eq!(
        sent.post(event(REFERENCE, TRANSACTION), false, &[]).await,
        200
    );
    assert_eq!(
        sent.post(event(REFERENCE, TRANSACTION), false, &[]).await,
        200
    );
    let forged = event(FORGED_REFERENCE, "TXN-FORGED-1");
    let xff = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(sent.post(forged, true, &xff).await, 401);
    assert_eq!(
        sent.post(event(DEAD_REFERENCE, "TXN-AUDIT-DEAD"), false, &[])
            .await,
        200
    );

    // One delivery round, as the dispatcher's loop makes it: event 1 is delivered, event
    // 2 refused once, and with max_attempts = 1 dead.
    let due = store
        .claim_due(SystemTime::now(), 10, Duration::from_secs(30), "test")
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    for claimed in due {
        dispatcher.attempt(claimed).await;
    }
    let dead = store.list(Some(Status::Dead), 10).await.unwrap();
    let [dead] = dead.as_slice() else {
        panic!("one dead letter: {dead:?}")
    };
    let dead_id = dead.id;
    let replay_one = format!("/webhooks/events/{dead_id}/replay");

    // Admin replays: refused without credentials, refused with a wrong token, done from
    // loopback with the admin header, done with the token from elsewhere.
    let all_dead = "/webhooks/dead/replay";
    assert_eq!(
        admin_replay(&admin, all_dead, "10.0.0.7:5000", &[]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_replay(
            &admin,
            &replay_one,
            "10.0.0.7:5001",
            &[("authorization", "Bearer guessed-token")]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_replay(
            &admin,
            &replay_one,
            "127.0.0.1:5002",
            &[(ADMIN_HEADER, "1")]
        )
        .await,
        StatusCode::OK
    );
    let bearer = [("authorization", "Bearer whaudit-admin-token-4411")];
    assert_eq!(
        admin_replay(&admin, all_dead, "10.0.0.8:5003", &bearer).await,
        StatusCode::OK
    );

    shutdown.cancel();
    log.stop();
    writer.join().unwrap();
    let (text, records) = records(trail_dir.path());
    assert!(
        fincode_audit::verify(trail_dir.path()).unwrap().is_intact(),
        "the chain holds"
    );

    let reference = auditor.pseudonym(REFERENCE);
    let transaction = auditor.pseudonym(TRANSACTION);

    let received = with_action(&records, "webhook.received");
    assert_eq!(received.len(), 2, "{text}");
    let first = received[0];
    assert_eq!(first["kind"], "webhook");
    assert_eq!(first["outcome"], "success");
    assert_eq!(first["status"], 200);
    assert_eq!(first["event_id"], 1);
    assert_eq!(first["event_type"], "TRANSACTION_STATUS");
    assert_eq!(first["resources"]["reference"], reference.as_str());
    assert_eq!(first["resources"]["transaction_id"], transaction.as_str());
    assert!(
        first["actor"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{first}"
    );
    assert_eq!(first["actor"]["id"], "app");
    let correlation = first["correlation_id"].as_str().unwrap();
    assert!(!correlation.is_empty());
    assert_eq!(received[1]["event_id"], dead_id);
    assert_eq!(
        received[1]["resources"]["reference"],
        auditor.pseudonym(DEAD_REFERENCE).as_str()
    );

    let duplicate = with_action(&records, "webhook.duplicate");
    assert_eq!(duplicate.len(), 1, "{text}");
    assert_eq!(duplicate[0]["event_id"], 1, "names the event it repeats");
    assert_eq!(duplicate[0]["outcome"], "success");
    assert_eq!(duplicate[0]["status"], 200);
    assert_eq!(duplicate[0]["resources"]["reference"], reference.as_str());

    let rejected = with_action(&records, "webhook.rejected");
    assert_eq!(rejected.len(), 1, "{text}");
    let rejected = rejected[0];
    assert_eq!(rejected["error"], "bad_signature");
    assert_eq!(rejected["status"], 401);
    assert_eq!(rejected["outcome"], "failure");
    assert!(
        rejected.get("resources").is_none() && rejected.get("event_type").is_none(),
        "nothing from an unverified body: {rejected}"
    );
    assert_eq!(
        rejected["actor"]["peer"], "203.0.113.9:0",
        "the source the allow-list judges, from the trusted proxy's X-Forwarded-For"
    );
    assert!(
        rejected["via"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{rejected}"
    );
    assert!(!text.contains(&auditor.pseudonym(FORGED_REFERENCE)));

    let delivered = with_action(&records, "webhook.delivered");
    assert_eq!(delivered.len(), 1, "{text}");
    let delivered = delivered[0];
    assert_eq!(delivered["event_id"], 1);
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["status"], 200);
    assert_eq!(delivered["outcome"], "success");
    assert_eq!(
        delivered["correlation_id"], correlation,
        "tied to its receipt"
    );
    assert_eq!(delivered["resources"]["reference"], reference.as_str());
    assert_eq!(
        delivered["resources"]["transaction_id"],
        transaction.as_str()
    );
    assert!(delivered["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(delivered["delivered_after_ms"].is_u64());

    let dead = with_action(&records, "webhook.dead");
    assert_eq!(dead.len(), 1, "{text}");
    assert_eq!(dead[0]["event_id"], dead_id);
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["status"], 503);
    assert_eq!(dead[0]["error"], "app_status");
    assert_eq!(dead[0]["outcome"], "failure");

    let admin = with_action(&records, "admin.replay");
    assert_eq!(admin.len(), 4, "{text}");
    assert!(admin.iter().all(|r| r["kind"] == "admin"));
    let [no_credential, guessed, loopback, token] = admin.as_slice() else {
        unreachable!()
    };
    assert_eq!(no_credential["actor"]["peer"], "10.0.0.7:5000");
    assert_eq!(no_credential["error"], "forbidden");
    assert_eq!(no_credential["status"], 403);
    assert_eq!(no_credential["outcome"], "failure");
    assert!(no_credential.get("authenticated_by").is_none());
    assert_eq!(guessed["actor"]["peer"], "10.0.0.7:5001");
    assert_eq!(
        guessed["error"], "unauthorized",
        "a wrong token was offered"
    );
    assert_eq!(guessed["event_id"], dead_id);
    assert_eq!(guessed["status"], 403);
    assert_eq!(loopback["actor"]["peer"], "127.0.0.1:5002");
    assert_eq!(loopback["authenticated_by"], "loopback");
    assert_eq!(loopback["event_id"], dead_id);
    assert_eq!(loopback["status"], 200);
    assert_eq!(loopback["outcome"], "success");
    assert_eq!(token["actor"]["peer"], "10.0.0.8:5003");
    assert_eq!(token["authenticated_by"], "token");
    assert_eq!(
        token["count"], 0,
        "the dead letter was already pending again"
    );
    assert_eq!(token["outcome"], "success");

    let replayed = with_action(&records, "webhook.replayed");
    assert_eq!(replayed.len(), 1, "{text}");
    assert_eq!(replayed[0]["kind"], "webhook");
    assert_eq!(replayed[0]["event_id"], dead_id);
    assert_eq!(replayed[0]["outcome"], "success");

    // No byte of the trail names the customer or carries a credential.
    for clear in [
        REFERENCE,
        TRANSACTION,
        NAME,
        DEAD_REFERENCE,
        FORGED_REFERENCE,
        "0123456789",
        ADMIN_TOKEN,
        "guessed-token",
        SECRET,
    ] {
        assert!(!text.contains(clear), "{clear} is in the trail:\n{text}");
    }
    assert!(text.contains(&reference));
}
