//! Wake-ups: a dedicated connection LISTENs for the NOTIFY every insert sends, so a
//! replica's dispatcher hears of an event another replica stored without waiting for
//! its next poll. Polling stays the fallback: a notification lost while this connection
//! was down costs at most one poll interval (and a reconnect wakes once, for them).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fincode_backoff::Backoff;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel every insert notifies, with the schema as payload (so stores in other
/// schemas of the same database are not woken).
pub(super) const CHANNEL: &str = "fincode_webhook_events";

/// Waits between reconnection attempts: from 100 ms up to 10 s.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_CAP: Duration = Duration::from_secs(10);

/// Listens until the task is aborted (the store dropped), reconnecting with backoff.
/// Never panics, never gives up: a database that comes back is heard again.
pub(super) async fn listen_forever(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: String,
    wake: Arc<Notify>,
) {
    let mut backoff = Backoff::full_jitter(RECONNECT_BASE, RECONNECT_CAP).streak();
    loop {
        match listen_once(&config, &tls, &schema, &wake, || backoff.reset()).await {
            Ok(()) => tracing::warn!(
                "the webhook store's LISTEN connection closed; reconnecting (polling covers the gap)"
            ),
            Err(error) => tracing::warn!(
                %error,
                "the webhook store's LISTEN connection failed; reconnecting (polling covers the gap)"
            ),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection's life: LISTEN, then wake on each notification for `schema` until the
/// connection ends. `listening` is called once the LISTEN is in force.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    schema: &str,
    wake: &Notify,
    listening: impl FnOnce(),
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The LISTEN is answered through the connection, so drive both at once.
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = Some(listening);
    loop {
        tokio::select! {
            done = &mut listen, if listening.is_some() => {
                done?;
                if let Some(listening) = listening.take() {
                    listening();
                }
                // Events stored while this connection was down were not heard.
                wake.notify_one();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    if note.payload() == schema {
                        wake.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}

/// Sends a NOTIFY on [`CHANNEL`] (payload: the schema) after each wake of `inserted`,
/// which inserts signal after their commit. Signals that arrive while one NOTIFY is being
/// sent collapse into one more, so a burst of inserts costs a few NOTIFYs, each sent
/// after the commits it stands for. Failures are logged and forgotten: polling covers
/// a missed wake-up.
pub(super) async fn notify_forever(pool: Pool, schema: String, inserted: Arc<Notify>) {
    // The schema is a checked plain identifier: safe as a literal. One simple query of
    // two statements is one implicit transaction (rolled back whole on an error, so no
    // connection goes back to the pool inside a failed transaction). No flush wait: the
    // transaction writes nothing worth keeping.
    let sql = format!("SET LOCAL synchronous_commit TO off; NOTIFY {CHANNEL}, '{schema}'");
    loop {
        inserted.notified().await;
        let sent = match pool.get().await {
            Ok(client) => client.batch_execute(&sql).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "could not send the webhook store's NOTIFY; other replicas will poll");
        }
    }
}
