//! The emulated FinCode API under `/api/v6/services`, plus the `sandbox/*` debug routes.
//!
//! Handlers never use axum's `Json` extractor: its rejections are plain text, and FinCode answers
//! malformed input with its own 422 JSON shape, which clients (and the sidecar) parse.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{any, get, post, put};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper::body::{Frame, SizeHint};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::{FaultAction, FaultDecision, FaultPhase};
use crate::lock;
use crate::server::ConnAbort;
use crate::state::{App, CounterCells, LOCKOUT_THRESHOLD, LoggedRequest, SeenRequest};
use crate::tokens::{IssuedPair, RefreshError};

/// Where FinCode mounts every service.
pub(crate) const API_PREFIX: &str = "/api/v6/services";

/// Largest JSON body a FinCode route reads; FinCode's own payloads are a few KiB.
const MAX_JSON_BODY: usize = 1024 * 1024;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-fincode-request-id");
const AUTH_TOKEN: &str = "x-auth-token";
const IDEMPOTENCY_KEY: &str = "x-idempotency-key";

/// Builds the TLS-side router: every route, wrapped in the observe/fault middleware.
pub(crate) fn router(app: Arc<App>) -> Router {
    let path = |suffix: &str| format!("{API_PREFIX}{suffix}");
    Router::new()
        .route(&path("/securitymanagement/login"), put(login))
        .route(&path("/securitymanagement/refresh-token"), put(refresh))
        .route(
            &path("/securitymanagement/logout"),
            put(logout).post(logout),
        )
        .route(
            &path("/transactionmanagement/create-transaction"),
            post(create_transaction),
        )
        .route(
            &path("/transactionmanagement/transactions"),
            get(list_transactions),
        )
        .route(
            &path("/transactionmanagement/transactions/{id}"),
            get(get_transaction),
        )
        .route(&path("/sandbox/echo"), any(echo))
        .route(&path("/sandbox/echo/{*rest}"), any(echo))
        .route(&path("/sandbox/ping"), get(ping))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

// === responses ===

/// FinCode's error code for a status, as its docs list them.
pub(crate) fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "AUTH_REQUIRED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        422 | 400 => "VALIDATION_ERROR",
        429 => "RATE_LIMIT_EXCEEDED",
        503 => "SERVICE_UNAVAILABLE",
        _ => "SERVER_ERROR",
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(status, Bytes::from(bytes))
}

fn bytes_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `{"status":"FAILED","code":..,"message":..}` with the code FinCode uses for `status`.
pub(crate) fn fincode_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"status": "FAILED", "code": error_code(status), "message": message}),
    )
}

pub(crate) fn validation_error(message: &str) -> Response {
    fincode_error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn success(message: &str, data: &Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"status": "SUCCESS", "message": message, "data": data}),
    )
}

/// Reads and parses a JSON body, answering FinCode's 422 for anything unreadable.
pub(crate) async fn read_json(body: Body) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|_| validation_error("request body could not be read or is too large"))?;
    serde_json::from_slice(&bytes).map_err(|e| validation_error(&format!("malformed JSON: {e}")))
}

// === middleware ===

/// Counts and logs every request, applies fault rules, and stamps a request id on the response.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    CounterCells::bump(&app.counters.requests_total);
    let (mut parts, body) = request.into_parts();

    let body_len = Arc::new(AtomicU64::new(0));
    app.log_request(LoggedRequest {
        head: SeenRequest {
            method: parts.method.as_str().to_owned(),
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.to_string(), ToString::to_string),
            version: format!("{:?}", parts.version),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body_len: 0,
        },
        body_len: body_len.clone(),
    });
    let body = Body::new(CountingBody {
        inner: body,
        counted: body_len,
    });

    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path();
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path).to_owned();
    let abort = parts.extensions.remove::<ConnAbort>();
    let request = Request::from_parts(parts, body);

    let before = decide(&app, &method, &path, FaultPhase::Before);
    let response = if let Some(faulted) = apply(before, abort.as_ref()).await {
        faulted
    } else {
        let real = next.run(request).await;
        let after = decide(&app, &method, &path, FaultPhase::After);
        if let Some(FaultAction::Stall { hold, .. }) = after.action {
            // FinCode acted on the request; its answer's head leaves, the body does not.
            tokio::time::sleep(after.delay).await;
            stall(real, hold).await
        } else {
            apply(after, abort.as_ref()).await.unwrap_or(real)
        }
    };
    with_shifted_date(&app, with_request_id(response))
}

/// With a clock offset set (`PUT /settings {"clock_offset_secs": n}`), the `Date` header
/// shows the sandbox's clock shifted by it, as a FinCode whose clock is off would send;
/// hyper only adds its own `Date` when the response has none.
fn with_shifted_date(app: &App, mut response: Response) -> Response {
    let offset = app.clock_offset_secs.load(Ordering::Relaxed);
    if offset == 0 {
        return response;
    }
    let now = std::time::SystemTime::now();
    let shift = std::time::Duration::from_secs(offset.unsigned_abs());
    let shown = if offset > 0 {
        now.checked_add(shift)
    } else {
        now.checked_sub(shift)
    };
    if let Some(value) = shown.and_then(|t| HeaderValue::try_from(httpdate::fmt_http_date(t)).ok())
    {
        response.headers_mut().insert(http::header::DATE, value);
    }
    response
}

/// Counts body bytes as they stream through, so echo stays unbuffered, while keeping the size
/// hint (a `map_frame` adapter would drop it and turn a `content-length` echo into chunked).
struct CountingBody {
    inner: Body,
    counted: Arc<AtomicU64>,
}

// === impl CountingBody ===

impl hyper::body::Body for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn decide(app: &App, method: &str, path: &str, phase: FaultPhase) -> FaultDecision {
    let mut book = lock(&app.faults);
    if book.is_empty() {
        return FaultDecision::default();
    }
    let decision = book.decide(method, path, phase);
    drop(book);
    for kind in &decision.applied {
        app.counters.fault_applied(*kind);
    }
    decision
}

/// Sleeps for the decided latency, then returns the replacement response, if any.
async fn apply(decision: FaultDecision, abort: Option<&ConnAbort>) -> Option<Response> {
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    match decision.action? {
        FaultAction::Status {
            status,
            retry_after,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = match body {
                Some(body) => json_response(status, &body),
                None => fincode_error(status, "fault injected by fincode-sandbox"),
            };
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            Some(response)
        }
        FaultAction::Stall { hold, status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let body = body.unwrap_or_else(|| json!({}));
            Some(stall(json_response(status, &body), hold).await)
        }
        FaultAction::Reset => match abort {
            Some(abort) => {
                // The connection task drops the socket (with SO_LINGER 0) when notified; this
                // request must never produce a byte, so wait here until we are dropped.
                abort.trigger();
                std::future::pending::<Option<Response>>().await
            }
            // Only in-process tests drive the router without a connection; they get a 500.
            None => Some(fincode_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "connection reset (simulated without a connection)",
            )),
        },
    }
}

/// `response` with its head unchanged (but for the length, which a chunked stall cannot
/// promise up front) and its body held back for `hold`, forever when `None`.
async fn stall(response: Response, hold: Option<std::time::Duration>) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = StalledBody {
        hold: hold.map(|hold| Box::pin(tokio::time::sleep(hold))),
        bytes: Some(bytes),
    };
    Response::from_parts(parts, Body::new(body))
}

/// Sends nothing until `hold` has passed (never when `None`), then `bytes`.
struct StalledBody {
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    bytes: Option<Bytes>,
}

// === impl StalledBody ===

impl hyper::body::Body for StalledBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(hold) = self.hold.as_mut() else {
            // Held forever: never woken, until the client gives up and the connection goes.
            return Poll::Pending;
        };
        if hold.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(self.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn with_request_id(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::try_from(uuid::Uuid::now_v7().to_string()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

// === security management ===

async fn login(State(app): State<Arc<App>>, body: Body) -> Response {
    let response = login_inner(&app, body).await;
    counted(
        response,
        &app.counters.logins_ok,
        &app.counters.logins_failed,
    )
}

/// `response`, counted in `ok` when it is a success and in `failed` otherwise.
fn counted(response: Response, ok: &AtomicU64, failed: &AtomicU64) -> Response {
    CounterCells::bump(if response.status().is_success() {
        ok
    } else {
        failed
    });
    response
}

/// The success answer to a login or a refresh: the token pair just issued.
fn token_pair(message: &str, pair: &IssuedPair) -> Response {
    success(
        message,
        &json!({"token": pair.token, "refresh_token": pair.refresh_token, "expires_in": pair.expires_in}),
    )
}

async fn login_inner(app: &App, body: Body) -> Response {
    let value = match read_json(body).await {
        Ok(value) => value,
        Err(response) => return response,
    };
    let email = value.get("email").and_then(Value::as_str);
    let ciphertext = value.get("currentPassword").and_then(Value::as_str);
    let (Some(email), Some(ciphertext)) = (email, ciphertext) else {
        return validation_error("email and currentPassword are required");
    };
    let Some(expected) = app.users.get(email) else {
        return fincode_error(StatusCode::NOT_FOUND, "User not found");
    };
    if lock(&app.failures).get(email).copied().unwrap_or(0) >= LOCKOUT_THRESHOLD {
        return fincode_error(StatusCode::FORBIDDEN, "Account locked");
    }
    let password_ok = app
        .login_key
        .decrypt_password(ciphertext)
        .is_some_and(|password| password == *expected);
    if !password_ok {
        *lock(&app.failures).entry(email.to_owned()).or_insert(0) += 1;
        return fincode_error(StatusCode::UNAUTHORIZED, "Invalid email or password");
    }
    lock(&app.failures).remove(email);
    token_pair("Login successful", &app.tokens.issue_pair(email))
}

async fn refresh(State(app): State<Arc<App>>, body: Body) -> Response {
    let response = match read_json(body).await {
        Err(response) => response,
        Ok(value) => match value.get("refresh_token").and_then(Value::as_str) {
            None => validation_error("refresh_token is required"),
            Some(token) => match app.tokens.refresh(token) {
                Ok(pair) => token_pair("Token refreshed", &pair),
                Err(RefreshError::AlreadyUsed) => {
                    fincode_error(StatusCode::FORBIDDEN, "Token Already Used")
                }
                Err(RefreshError::Invalid) => {
                    fincode_error(StatusCode::UNAUTHORIZED, "Invalid or expired refresh token")
                }
            },
        },
    };
    counted(
        response,
        &app.counters.refreshes_ok,
        &app.counters.refreshes_failed,
    )
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match auth_token(&headers) {
        Some(token) if app.tokens.logout(token) => {
            CounterCells::bump(&app.counters.logouts);
            success("Logged out", &json!({}))
        }
        _ => auth_required(),
    }
}

fn auth_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTH_TOKEN)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn auth_required() -> Response {
    fincode_error(StatusCode::UNAUTHORIZED, "Authentication required")
}

/// `None` when the request carries a valid token, else FinCode's 401 to send instead.
fn auth_rejection(app: &App, headers: &HeaderMap) -> Option<Response> {
    match auth_token(headers) {
        Some(token) if app.tokens.is_valid(token) => None,
        _ => Some(auth_required()),
    }
}

// === transaction management ===

async fn create_transaction(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(response) = auth_rejection(&app, &headers) {
        return response;
    }
    let Some(key) = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return validation_error("X-Idempotency-Key header is required");
    };
    let request = match read_json(body).await {
        Ok(value) => value,
        Err(response) => return response,
    };
    let Value::Object(fields) = &request else {
        return validation_error("request body must be a JSON object");
    };

    let mut ledger = lock(&app.ledger);
    if let Some(stored) = ledger.by_key.get(key) {
        // Compared as JSON values: key order and whitespace are not a different request.
        if stored.request != request {
            return validation_error("idempotency key reused with a different body");
        }
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        let body = stored.body.clone();
        drop(ledger);
        CounterCells::bump(&app.counters.idempotent_replays);
        return bytes_response(status, body);
    }

    let number = ledger.transactions.len() as u64 + 1;
    let mut transaction = fields.clone();
    transaction.insert("id".to_owned(), json!(format!("TXN-{number}")));
    transaction.insert(
        "reference".to_owned(),
        json!(format!("PCN{:010}", app.reference_base + number)),
    );
    transaction.insert("status".to_owned(), json!("PENDING"));
    transaction.insert(
        "createdAt".to_owned(),
        json!(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64
        ),
    );
    let transaction = Value::Object(transaction);
    let body = Bytes::from(
        serde_json::to_vec(&json!({
            "status": "SUCCESS",
            "message": "Transaction created",
            "data": transaction,
        }))
        .unwrap_or_default(),
    );
    ledger.transactions.push(transaction);
    ledger.by_key.insert(
        key.to_owned(),
        crate::state::StoredResponse {
            request,
            status: 200,
            body: body.clone(),
        },
    );
    drop(ledger);

    CounterCells::bump(&app.counters.transactions_created);
    *lock(&app.counters.side_effects)
        .entry(key.to_owned())
        .or_insert(0) += 1;
    bytes_response(StatusCode::OK, body)
}

async fn get_transaction(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = auth_rejection(&app, &headers) {
        return response;
    }
    let ledger = lock(&app.ledger);
    // Also found by `reference`, which is what webhooks carry.
    let found = ledger.transactions.iter().find(|t| {
        t.get("id").and_then(Value::as_str) == Some(id.as_str())
            || t.get("reference").and_then(Value::as_str) == Some(id.as_str())
    });
    match found {
        Some(transaction) => success("Transaction found", transaction),
        None => fincode_error(StatusCode::NOT_FOUND, "Transaction not found"),
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    page: Option<usize>,
    size: Option<usize>,
}

async fn list_transactions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if let Some(response) = auth_rejection(&app, &headers) {
        return response;
    }
    let Ok(Query(params)) = Query::<ListParams>::try_from_uri(request.uri()) else {
        return validation_error("page and size must be non-negative integers");
    };
    // Zero-based pages, Spring style; size capped so a typo cannot dump everything.
    let page = params.page.unwrap_or(0);
    let size = params.size.unwrap_or(20).clamp(1, 100);
    let ledger = lock(&app.ledger);
    let items: Vec<Value> = ledger
        .transactions
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .cloned()
        .collect();
    let total = ledger.transactions.len();
    drop(ledger);
    success(
        "Transactions",
        &json!({"items": items, "page": page, "size": size, "total": total}),
    )
}

// === debug routes ===

/// Streams the body straight back: the request body becomes the response body, never buffered,
/// so a multi-megabyte echo tests the client's streaming rather than our memory.
async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) else {
        return validation_error("malformed query string");
    };
    let mut extra = Vec::new();
    for (name, value) in pairs.iter().filter(|(k, _)| k == "respond_header") {
        let parsed = value.split_once(':').and_then(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some(header) => extra.push(header),
            None => return validation_error(&format!("bad respond_header {name}={value}")),
        }
    }

    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, content_type.clone());
    }
    headers.insert(
        HeaderName::from_static("x-echo-method"),
        HeaderValue::from_str(parts.method.as_str()).unwrap_or(HeaderValue::from_static("?")),
    );
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    if let Ok(value) = HeaderValue::from_str(uri) {
        headers.insert(HeaderName::from_static("x-echo-uri"), value);
    }
    if let Ok(value) = HeaderValue::try_from(format!("{:?}", parts.version)) {
        headers.insert(HeaderName::from_static("x-echo-version"), value);
    }
    for (name, value) in extra {
        headers.append(name, value);
    }
    response
}

async fn ping() -> Response {
    bytes_response(
        StatusCode::OK,
        Bytes::from_static(br#"{"status":"SUCCESS","data":"pong"}"#),
    )
}

async fn not_found() -> Response {
    fincode_error(StatusCode::NOT_FOUND, "No such endpoint")
}

async fn method_not_allowed() -> Response {
    fincode_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response()
}
