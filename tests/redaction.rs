//! End-to-end: personal data and secrets that pass through the sidecar never reach its
//! logs (at trace level, bodies logged), its exported spans or its metrics.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;

/// A Luhn-valid test card number.
const PAN: &str = "4539578763621486";
const PAN_SPACED: &str = "4539 5787 6362 1486";
const CVV: &str = "CVV-739";
const BVN: &str = "22381046571";
const NIN: &str = "70123456789";
const EMAIL: &str = "adaeze.okonkwo@example.ng";
const PHONE: &str = "+2348031234567";
const NAME: &str = "Adaeze Okonkwo-Bello";
const ACCOUNT: &str = "0123456789";
const PIN_HEADER: &str = "ENC-PIN-5f1e9a77c2";
const DOB: &str = "1990-04-17";
const APP_SECRET_HEADER: &str = "app-api-key-6b1f0c9e";

fn sensitive_body() -> String {
    serde_json::json!({
        "amount": 25000,
        "currency": "NGN",
        "card": { "pan": PAN, "cvv": CVV, "expiry": "12/29" },
        "note": format!("card {PAN_SPACED} for {EMAIL}, call {PHONE}"),
        "bvn": BVN,
        "nin": NIN,
        "beneficiaryFullName": NAME,
        "beneficiaryAccountNumber": ACCOUNT,
        "email": EMAIL,
        "phone": PHONE,
        "dateOfBirth": DOB,
        "currentPassword": "CANARY-current-password-77",
        "refresh_token": "CANARY-refresh-token-0a1b2c3d",
    })
    .to_string()
}

#[tokio::test]
async fn no_secret_or_personal_data_reaches_logs_spans_or_metrics() {
    let receiver = OtlpReceiver::start().await;
    let sandbox = TestSandbox::start().await;
    let mut sidecar = SidecarBuilder::new(&sandbox)
        .login(
            &sandbox,
            fincode_sandbox::DEMO_EMAIL,
            fincode_sandbox::DEMO_PASSWORD,
        )
        .set("log.bodies", true)
        .set("log.body_level", "debug")
        .set("traces.otlp_endpoint", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "trace")
        .start_ready()
        .await;
    let app = app_client();
    let body = sensitive_body();

    // The echo route sends the body back: the same data on the way in and out.
    let echoed = send(
        &app,
        Request::post(sidecar.url(&format!(
            "/sandbox/echo?email={EMAIL}&card={PAN}&phone={PHONE}"
        )))
        .header("content-type", "application/json")
        .header("password", PIN_HEADER)
        .header("x-api-key", APP_SECRET_HEADER)
        .header("x-customer-email", EMAIL)
        .body(Full::from(body.clone()))
        .unwrap(),
    )
    .await;
    assert_eq!(echoed.status, 200);
    assert_eq!(
        echoed.body,
        body.as_bytes(),
        "the app gets its bytes untouched"
    );

    // A create-transaction with the same data (and a card number in the app's own
    // correlation id), and a lookup by card number in the path.
    let created = send(
        &app,
        Request::post(sidecar.url("/transactionmanagement/create-transaction"))
            .header("content-type", "application/json")
            .header("x-idempotency-key", "canary-1")
            .header("x-request-id", format!("order-{PAN}"))
            .header("password", PIN_HEADER)
            .body(Full::from(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 200);
    get(
        &app,
        &sidecar.url(&format!("/transactionmanagement/transactions/{PAN}")),
    )
    .await;

    let metrics = get(&app, &sidecar.admin_url("/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let spans = receiver.wait_for(6, Duration::from_secs(10)).await;
    assert!(spans.len() >= 6, "{spans:#?}");
    // Returns once the process has exited and all it wrote has been read.
    assert!(sidecar.terminate(Duration::from_secs(30)).await.success());
    let output = sidecar.output();

    // The bodies were logged (so the absence below means redaction, not silence).
    assert!(output.contains(r#""direction":"request""#), "{output}");
    assert!(output.contains(r#""direction":"response""#), "{output}");
    assert!(
        output.contains("453957******1486"),
        "masked PAN in the body log"
    );
    let url = spans
        .iter()
        .find_map(|s| s.attr("url.full").filter(|u| u.contains("/sandbox/echo")))
        .expect("a client span for the echo");
    assert!(url.contains("453957******1486"), "{url}");

    let mut secrets = vec![
        PAN,
        PAN_SPACED,
        CVV,
        BVN,
        NIN,
        EMAIL,
        PHONE,
        NAME,
        ACCOUNT,
        PIN_HEADER,
        DOB,
        APP_SECRET_HEADER,
        "CANARY-current-password-77",
        "CANARY-refresh-token-0a1b2c3d",
        fincode_sandbox::DEMO_PASSWORD,
        fincode_sandbox::DEMO_EMAIL,
    ];
    let tokens: Vec<String> = tokens_seen(&sandbox);
    assert!(!tokens.is_empty(), "the sandbox saw our token");
    secrets.extend(tokens.iter().map(String::as_str));
    assert_no_secrets(&output, &secrets);
    assert_no_secrets(&receiver.raw(), &secrets);
    assert_no_secrets(&metrics, &secrets);
}
