//! The plain-HTTP admin API: faults, counters, the request log, token controls, webhooks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post, put};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::api::{fincode_error, json_response, read_json, validation_error};
use crate::faults::FaultRule;
use crate::lock;
use crate::state::App;
use crate::webhooks::{self, SendWebhooks};

/// Static tokens minted without an explicit lifetime last a day.
const DEFAULT_STATIC_LIFETIME_SECS: u64 = 86_400;

pub(crate) fn router(app: Arc<App>, ca_file: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/counters", get(counters))
        .route("/requests", get(requests))
        .route(
            "/faults",
            post(add_faults).get(list_faults).delete(clear_faults),
        )
        .route("/reset", post(reset))
        .route("/settings", put(settings))
        .route("/tokens", post(mint_token))
        .route("/tokens/expire", post(expire_tokens))
        .route("/tokens/consume-refresh", post(consume_refresh_tokens))
        .route(
            "/webhooks/send",
            post(move |body: Body| send_webhooks(body, ca_file.clone())),
        )
        .fallback(|| async { fincode_error(StatusCode::NOT_FOUND, "No such admin route") })
        .with_state(app)
}

fn ok() -> Response {
    json_response(StatusCode::OK, &json!({"status": "SUCCESS"}))
}

fn to_json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => fincode_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

/// Parses a JSON body into `T`, answering 422 with serde's reason on failure.
async fn parse<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response> {
    let value = read_json(body).await?;
    serde_json::from_value(value).map_err(|e| validation_error(&e.to_string()))
}

async fn healthz() -> Response {
    ok()
}

async fn counters(State(app): State<Arc<App>>) -> Response {
    to_json(&app.counters.snapshot())
}

async fn requests(State(app): State<Arc<App>>) -> Response {
    to_json(&app.seen_requests())
}

/// One rule, or an array of rules appended in order.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<FaultRule>),
    Many(Vec<FaultRule>),
}

async fn add_faults(State(app): State<Arc<App>>, body: Body) -> Response {
    let rules = match parse::<OneOrMany>(body).await {
        Ok(OneOrMany::One(rule)) => vec![*rule],
        Ok(OneOrMany::Many(rules)) => rules,
        Err(response) => return response,
    };
    for rule in &rules {
        if let Err(reason) = rule.validate() {
            return validation_error(&reason);
        }
    }
    let mut book = lock(&app.faults);
    for rule in rules {
        book.push(rule);
    }
    let listed = book.list();
    drop(book);
    let mut response = to_json(&listed);
    *response.status_mut() = StatusCode::CREATED;
    response
}

async fn list_faults(State(app): State<Arc<App>>) -> Response {
    let listed = lock(&app.faults).list();
    to_json(&listed)
}

async fn clear_faults(State(app): State<Arc<App>>) -> Response {
    lock(&app.faults).clear();
    ok()
}

async fn reset(State(app): State<Arc<App>>) -> Response {
    app.reset();
    ok()
}

/// The field names are the JSON API (`*_secs` says the unit to whoever writes the body).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::struct_field_names)]
struct Settings {
    token_lifetime_secs: Option<u64>,
    refresh_token_lifetime_secs: Option<u64>,
    /// Shifts the API's `Date` header by this many seconds (0 restores the real clock).
    clock_offset_secs: Option<i64>,
}

async fn settings(State(app): State<Arc<App>>, body: Body) -> Response {
    let settings = match parse::<Settings>(body).await {
        Ok(settings) => settings,
        Err(response) => return response,
    };
    app.tokens.set_lifetimes(
        settings.token_lifetime_secs.map(Duration::from_secs),
        settings
            .refresh_token_lifetime_secs
            .map(Duration::from_secs),
    );
    if let Some(offset) = settings.clock_offset_secs {
        app.clock_offset_secs
            .store(offset, std::sync::atomic::Ordering::Relaxed);
    }
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    lifetime_secs: Option<u64>,
}

async fn mint_token(State(app): State<Arc<App>>, body: Body) -> Response {
    // An empty body means "the default lifetime".
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return validation_error("request body could not be read");
    };
    let lifetime = if bytes.iter().all(u8::is_ascii_whitespace) {
        DEFAULT_STATIC_LIFETIME_SECS
    } else {
        match serde_json::from_slice::<MintRequest>(&bytes) {
            Ok(request) => request
                .lifetime_secs
                .unwrap_or(DEFAULT_STATIC_LIFETIME_SECS),
            Err(error) => return validation_error(&error.to_string()),
        }
    };
    let token = app.tokens.mint_static(Duration::from_secs(lifetime));
    json_response(StatusCode::OK, &json!({"token": token}))
}

async fn consume_refresh_tokens(State(app): State<Arc<App>>) -> Response {
    app.tokens.consume_refresh_tokens();
    ok()
}

async fn expire_tokens(State(app): State<Arc<App>>) -> Response {
    app.tokens.expire_access_tokens();
    ok()
}

/// Sends the batch and answers once every request has finished. `https` URLs trust the
/// webpki roots and the sandbox's own CA (`ca_file`).
async fn send_webhooks(body: Body, ca_file: PathBuf) -> Response {
    let batch = match parse::<SendWebhooks>(body).await {
        Ok(batch) => batch,
        Err(response) => return response,
    };
    if let Err(reason) = batch.validate() {
        return validation_error(&reason);
    }
    let sent = webhooks::send(Some(&ca_file), batch).await;
    json_response(StatusCode::OK, &json!({"sent": sent}))
}
