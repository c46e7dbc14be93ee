//! End-to-end tests over real sockets: rustls clients that trust (or not) the sandbox CA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fincode_sandbox::{
    Counters, DEMO_EMAIL, DEMO_PASSWORD, FaultRule, Sandbox, SandboxConfig,
    encrypt_password_for_tests,
};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A started sandbox plus HTTP/1.1, HTTP/2 and admin clients.
struct TestClient {
    sandbox: Sandbox,
    h1: HttpsClient,
    h2: HttpsClient,
    admin: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn https_client(roots: rustls::RootCertStore, http2: bool) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(roots))
        .https_only();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector)
}

impl TestClient {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox::start(SandboxConfig {
            state_dir: dir.path().to_owned(),
            static_tokens: vec!["static-from-config".to_owned()],
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox starts");
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(sandbox.ca_cert_path()).expect("ca.pem");
        roots.add(ca).expect("add CA");
        Self {
            h1: https_client(roots.clone(), false),
            h2: https_client(roots, true),
            admin: Client::builder(TokioExecutor::new()).build_http(),
            sandbox,
            _dir: dir,
        }
    }

    async fn send(
        client: &HttpsClient,
        uri: String,
        method: Method,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper_util::client::legacy::Error> {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = client
            .request(request.body(Full::new(body.into())).expect("request"))
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A FinCode API call over HTTP/1.1.
    async fn api(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_api(method, path, headers, body)
            .await
            .expect("request succeeds")
    }

    async fn try_api(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper_util::client::legacy::Error> {
        let uri = format!("{}{path}", self.sandbox.base_url());
        Self::send(&self.h1, uri, method, headers, body).await
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Reply {
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.sandbox.admin_url()))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let response = self.admin.request(request).await.expect("admin call");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    async fn counters(&self) -> Counters {
        serde_json::from_slice(&self.admin(Method::GET, "/counters", Value::Null).await.body)
            .expect("counters")
    }

    async fn login(&self, password: &str) -> Reply {
        let pem = std::fs::read_to_string(self.sandbox.public_key_path()).expect("public key");
        let encrypted = encrypt_password_for_tests(&pem, password).expect("encrypt");
        let body = json!({"email": DEMO_EMAIL, "currentPassword": encrypted}).to_string();
        self.api(Method::PUT, "/securitymanagement/login", &[], body)
            .await
    }

    /// Waits (bounded) for a server-side counter that races the client's view of an error.
    async fn eventually(&self, what: &str, check: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counters = self.sandbox.counters();
            if check(&counters) {
                return counters;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {counters:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn login_refresh_is_single_use_and_logout_revokes() {
    let t = TestClient::start().await;
    assert_eq!(t.login("wrong").await.status, StatusCode::UNAUTHORIZED);
    let login = t.login(DEMO_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.headers["content-type"], "application/json");
    let data = &login.json()["data"];
    let refresh_token = data["refresh_token"].as_str().expect("refresh token");

    let body = json!({"refresh_token": refresh_token}).to_string();
    let refreshed = t
        .api(
            Method::PUT,
            "/securitymanagement/refresh-token",
            &[],
            body.clone(),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let reused = t
        .api(Method::PUT, "/securitymanagement/refresh-token", &[], body)
        .await;
    assert_eq!(reused.status, StatusCode::FORBIDDEN);
    assert_eq!(reused.json()["message"], "Token Already Used");
    assert_eq!(reused.json()["code"], "FORBIDDEN");

    let token = refreshed.json()["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let auth = [("x-auth-token", token.as_str())];
    let list = "/transactionmanagement/transactions";
    assert_eq!(
        t.api(Method::GET, list, &auth, "").await.status,
        StatusCode::OK
    );
    let logout = t
        .api(Method::POST, "/securitymanagement/logout", &auth, "")
        .await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(
        t.api(Method::GET, list, &auth, "").await.status,
        StatusCode::UNAUTHORIZED
    );

    let c = t.counters().await;
    assert_eq!((c.logins_ok, c.logins_failed), (1, 1));
    assert_eq!((c.refreshes_ok, c.refreshes_failed, c.logouts), (1, 1, 1));
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_get_401_and_refresh_recovers() {
    let t = TestClient::start().await;
    let login = t.login(DEMO_PASSWORD).await.json();
    let token = login["data"]["token"].as_str().expect("token").to_owned();
    let list = "/transactionmanagement/transactions";
    let auth = [("x-auth-token", token.as_str())];
    assert_eq!(
        t.api(Method::GET, list, &auth, "").await.status,
        StatusCode::OK
    );

    let expired = t.admin(Method::POST, "/tokens/expire", Value::Null).await;
    assert_eq!(expired.status, StatusCode::OK);
    let denied = t.api(Method::GET, list, &auth, "").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(denied.json()["code"], "AUTH_REQUIRED");

    let body = json!({"refresh_token": login["data"]["refresh_token"]}).to_string();
    let refreshed = t
        .api(Method::PUT, "/securitymanagement/refresh-token", &[], body)
        .await
        .json();
    let fresh = refreshed["data"]["token"].as_str().expect("token");
    let auth = [("x-auth-token", fresh)];
    assert_eq!(
        t.api(Method::GET, list, &auth, "").await.status,
        StatusCode::OK
    );

    // Settings shorten tokens issued afterwards; minted static tokens work and are long-lived.
    let settings = json!({"token_lifetime_secs": 0});
    assert_eq!(
        t.admin(Method::PUT, "/settings", settings).await.status,
        StatusCode::OK
    );
    let short = t.login(DEMO_PASSWORD).await.json();
    assert_eq!(short["data"]["expires_in"], 0);
    let short_token = short["data"]["token"].as_str().expect("token");
    let auth = [("x-auth-token", short_token)];
    assert_eq!(
        t.api(Method::GET, list, &auth, "").await.status,
        StatusCode::UNAUTHORIZED
    );

    let minted = t
        .admin(Method::POST, "/tokens", json!({"lifetime_secs": 600}))
        .await
        .json();
    let static_token = minted["token"].as_str().expect("token");
    for token in [static_token, "static-from-config"] {
        let auth = [("x-auth-token", token)];
        assert_eq!(
            t.api(Method::GET, list, &auth, "").await.status,
            StatusCode::OK
        );
    }
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn create_transaction_over_the_wire_is_idempotent() {
    let t = TestClient::start().await;
    let token = t.sandbox.mint_static_token(Duration::from_hours(1));
    let path = "/transactionmanagement/create-transaction";
    let headers = [
        ("x-auth-token", token.as_str()),
        ("x-idempotency-key", "wire-1"),
    ];
    let body = r#"{"amount":"25.00","currency":"GBP","beneficiaryFullName":"A B"}"#;
    let first = t.api(Method::POST, path, &headers, body).await;
    let second = t.api(Method::POST, path, &headers, body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, second.body, "identical bytes on replay");
    assert_ne!(
        first.headers["x-fincode-request-id"], second.headers["x-fincode-request-id"],
        "each response has its own request id"
    );
    let changed = t
        .api(Method::POST, path, &headers, r#"{"amount":"1"}"#)
        .await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_key = t
        .api(
            Method::POST,
            path,
            &[("x-auth-token", token.as_str())],
            body,
        )
        .await;
    assert_eq!(no_key.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_token = t
        .api(Method::POST, path, &[("x-idempotency-key", "wire-2")], body)
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    let c = t.counters().await;
    assert_eq!(c.side_effects.len(), 1);
    assert_eq!(c.side_effects["wire-1"], 1);
    assert_eq!((c.transactions_created, c.idempotent_replays), (1, 1));
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn echo_streams_five_mebibytes_over_http1_and_http2() {
    let t = TestClient::start().await;
    let payload: Bytes = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect::<Vec<u8>>()
        .into();
    for (client, version) in [(&t.h1, "HTTP/1.1"), (&t.h2, "HTTP/2.0")] {
        let uri = format!(
            "{}/sandbox/echo/some/path?respond_header=X-Custom:hello&x=1",
            t.sandbox.base_url()
        );
        let reply = TestClient::send(
            client,
            uri,
            Method::POST,
            &[("content-type", "application/octet-stream")],
            payload.clone(),
        )
        .await
        .expect("echo");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), payload.len());
        assert!(reply.body == payload, "byte-exact over {version}");
        assert_eq!(reply.headers["x-echo-version"], version);
        assert_eq!(reply.headers["x-echo-method"], "POST");
        assert_eq!(
            reply.headers["x-echo-uri"],
            "/api/v6/services/sandbox/echo/some/path?respond_header=X-Custom:hello&x=1"
        );
        assert_eq!(reply.headers["x-custom"], "hello");
        if version == "HTTP/1.1" {
            let length = payload.len().to_string();
            assert_eq!(
                reply.headers["content-length"],
                length.as_str(),
                "size hint kept"
            );
        }
        assert_eq!(reply.headers["content-type"], "application/octet-stream");
        assert!(reply.headers.contains_key("x-fincode-request-id"));
    }
    let seen = t.sandbox.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].version, "HTTP/1.1");
    assert_eq!(seen[1].version, "HTTP/2.0");
    assert!(seen.iter().all(|r| r.body_len == payload.len() as u64));
    let from_admin: Vec<Value> =
        serde_json::from_slice(&t.admin(Method::GET, "/requests", Value::Null).await.body)
            .expect("requests");
    assert_eq!(from_admin[0]["method"], "POST");
    assert!(from_admin[0]["headers"][0].is_array());
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn status_faults_apply_exactly_times_with_retry_after() {
    let t = TestClient::start().await;
    let rule = json!({"kind": "status", "status": 503, "times": 3, "retry_after": "2",
                      "path_prefix": "/sandbox/ping"});
    let added = t.admin(Method::POST, "/faults", rule).await;
    assert_eq!(added.status, StatusCode::CREATED);
    for _ in 0..3 {
        let reply = t.api(Method::GET, "/sandbox/ping", &[], "").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers["retry-after"], "2");
        assert_eq!(reply.json()["code"], "SERVICE_UNAVAILABLE");
    }
    assert_eq!(
        t.api(Method::GET, "/sandbox/ping", &[], "").await.status,
        StatusCode::OK
    );
    let listed = t.admin(Method::GET, "/faults", Value::Null).await.json();
    assert_eq!(listed[0]["applied"], 3);

    let bad = t
        .admin(Method::POST, "/faults", json!({"kind": "latency"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        t.admin(Method::DELETE, "/faults", Value::Null).await.status,
        StatusCode::OK
    );
    assert_eq!(t.counters().await.faults_applied.status, 3);
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn latency_fault_delays_and_custom_body_is_served() {
    let t = TestClient::start().await;
    t.sandbox
        .add_fault(FaultRule::latency(Duration::from_millis(300)).times(1));
    t.sandbox.add_fault(
        FaultRule::status(429).times(1).method("GET").body(
            json!({"status": "FAILED", "code": "RATE_LIMIT_EXCEEDED", "message": "slow down"}),
        ),
    );
    let started = Instant::now();
    let reply = t.api(Method::GET, "/sandbox/ping", &[], "").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["message"], "slow down");
    let faults = t.counters().await.faults_applied;
    assert_eq!((faults.latency, faults.status, faults.reset), (1, 1, 0));
    t.sandbox.clear_faults();
    assert_eq!(
        t.api(Method::GET, "/sandbox/ping", &[], "").await.status,
        StatusCode::OK
    );
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn reset_fault_drops_the_connection_without_a_response() {
    let t = TestClient::start().await;
    t.sandbox.add_fault(FaultRule::reset().times(1));
    let outcome = t.try_api(Method::GET, "/sandbox/ping", &[], "").await;
    let error = outcome.err().expect("expected a reset, got a response");
    let chain = format!("{:?}", std::error::Error::source(&error));
    assert!(chain.contains("ConnectionReset"), "not an RST: {chain}");
    assert_eq!(
        t.api(Method::GET, "/sandbox/ping", &[], "").await.status,
        StatusCode::OK
    );

    // After the handler: the transaction exists although the client never heard back.
    let token = t.sandbox.mint_static_token(Duration::from_hours(1));
    t.sandbox.add_fault(
        FaultRule::reset()
            .times(1)
            .path_prefix("/transactionmanagement")
            .after_handler(),
    );
    let path = "/transactionmanagement/create-transaction";
    let headers = [
        ("x-auth-token", token.as_str()),
        ("x-idempotency-key", "lost-1"),
    ];
    assert!(t.try_api(Method::POST, path, &headers, "{}").await.is_err());
    let retry = t.api(Method::POST, path, &headers, "{}").await;
    assert_eq!(retry.status, StatusCode::OK);
    let c = t.counters().await;
    assert_eq!(c.side_effects["lost-1"], 1);
    assert_eq!((c.idempotent_replays, c.faults_applied.reset), (1, 2));
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_and_counted() {
    let t = TestClient::start().await;
    let mut stream = tokio::net::TcpStream::connect(t.sandbox.https_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /api/v6/services/sandbox/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    assert!(
        response.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let c = t.counters().await;
    assert_eq!(
        (
            c.plain_http_attempts,
            c.requests_total,
            c.tls_handshake_failures
        ),
        (1, 0, 0)
    );
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn untrusted_clients_fail_the_handshake_and_are_counted() {
    let t = TestClient::start().await;
    let stranger = https_client(rustls::RootCertStore::empty(), false);
    let uri = format!("{}/sandbox/ping", t.sandbox.base_url());
    let outcome = TestClient::send(&stranger, uri, Method::GET, &[], "").await;
    assert!(outcome.is_err());
    let c = t
        .eventually("a handshake failure", |c| c.tls_handshake_failures == 1)
        .await;
    assert_eq!((c.connections, c.requests_total), (0, 0));
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn admin_reset_clears_counters_log_faults_and_connections_are_reused() {
    let t = TestClient::start().await;
    for _ in 0..5 {
        assert_eq!(
            t.api(Method::GET, "/sandbox/ping", &[], "").await.status,
            StatusCode::OK
        );
    }
    t.sandbox.add_fault(FaultRule::status(500));
    let c = t.counters().await;
    assert_eq!(
        (c.requests_total, c.connections),
        (5, 1),
        "pooled connection reused"
    );
    assert_eq!(
        t.admin(Method::POST, "/reset", Value::Null).await.status,
        StatusCode::OK
    );
    assert_eq!(t.counters().await, Counters::default());
    assert!(t.sandbox.requests().is_empty());
    assert_eq!(
        t.api(Method::GET, "/sandbox/ping", &[], "").await.status,
        StatusCode::OK
    );
    let health = t.admin(Method::GET, "/healthz", Value::Null).await;
    assert_eq!(health.status, StatusCode::OK);
    t.sandbox.shutdown().await;
}

#[tokio::test]
async fn restart_reuses_the_login_key_and_admin_must_be_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SandboxConfig {
        state_dir: dir.path().to_owned(),
        ..SandboxConfig::default()
    };
    let first = Sandbox::start(config.clone()).await.expect("start");
    let pem = std::fs::read_to_string(first.public_key_path()).expect("pem");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    first.shutdown().await;
    std::fs::remove_file(dir.path().join("fincode_public_key.pem")).expect("remove");
    let second = Sandbox::start(config.clone()).await.expect("restart");
    assert_eq!(
        std::fs::read_to_string(second.public_key_path()).expect("pem"),
        pem
    );
    assert!(second.base_url().starts_with("https://127.0.0.1:"));
    assert!(second.admin_url().starts_with("http://127.0.0.1:"));
    second.shutdown().await;

    let exposed = SandboxConfig {
        admin_addr: "0.0.0.0:0".parse().expect("addr"),
        ..config
    };
    assert!(Sandbox::start(exposed).await.is_err());
}
