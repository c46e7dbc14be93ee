use std::time::Duration;

use http::{Request, Response};
use prometheus_client::registry::Registry;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::LoadShedLayer;
use crate::{ErrorKind, SidecarError};

/// An inner service that answers 200 after `delay`.
fn answers_after(
    delay: Duration,
) -> impl Service<Request<()>, Response = Response<()>, Error = SidecarError, Future: Send> + Clone
{
    service_fn(move |_req: Request<()>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, SidecarError>(Response::new(()))
    })
}

#[tokio::test(start_paused = true)]
async fn refuses_beyond_the_cap_at_once_and_frees_permits_when_done() {
    let mut registry = Registry::default();
    let layer = LoadShedLayer::new(2, &mut registry);
    let svc = layer.layer(answers_after(Duration::from_secs(1)));
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(err.detail().contains("limits.max_concurrent_requests"));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    // Both permits are back.
    svc.clone().oneshot(Request::new(())).await.unwrap();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("fincode_shed_total 1"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_new_cap_applies_to_requests_that_arrive_after_it() {
    let layer = LoadShedLayer::new(1, &mut Registry::default());
    let svc = layer.layer(answers_after(Duration::from_secs(1)));
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    svc.clone().oneshot(Request::new(())).await.unwrap_err();
    layer.set_max(2);
    // Two new permits; the first request still holds one of the old cap.
    let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
    let third = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert!(err.detail().starts_with("2 requests"), "{}", err.detail());
    for handle in [first, second, third] {
        handle.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_request_frees_its_permit() {
    let layer = LoadShedLayer::new(1, &mut Registry::default());
    let svc = layer.layer(answers_after(Duration::from_hours(1)));
    let pending = svc.clone().oneshot(Request::new(()));
    let timed_out = tokio::time::timeout(Duration::from_millis(10), pending).await;
    assert!(timed_out.is_err());
    // The dropped future released the permit: a new request is admitted (and
    // times out waiting, rather than being shed).
    let again = tokio::time::timeout(
        Duration::from_millis(10),
        svc.clone().oneshot(Request::new(())),
    )
    .await;
    assert!(again.is_err(), "admitted, not shed");
}
