//! The process's panic hook. It lives in the binary because it decides what the process
//! writes to stderr when logging is not set up yet; library crates only log through
//! `tracing`.

/// Replaces the default panic hook, which prints the panic's message to stderr, with one
/// that logs where the panic happened and withholds the message.
///
/// A panic message is formatted from whatever values were at hand (`unwrap` on an error
/// that quotes a header, an index into a body), so it can carry a token or a card number
/// past every redaction rule. The location is what an engineer needs to find the bug; the
/// catch-panic layer answers the app and keeps the process serving.
pub(crate) fn install() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let logging = tracing::dispatcher::get_default(|dispatch| {
            !dispatch.is::<tracing::subscriber::NoSubscriber>()
        });
        if logging {
            tracing::error!(
                %location,
                thread,
                "panicked (message withheld: it may hold request data)"
            );
        } else {
            // Before logging is set up (config loading, one-shot commands) a panic must
            // still leave a trace.
            eprintln!(
                "fincode-sidecar panicked at {location} in thread {thread} (message withheld: it may hold request data)"
            );
        }
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a subscriber writes, for asserting on log output.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_with_its_location_and_never_its_message() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        install();
        let canary = "4111111111111111-x-auth-token-canary";
        let outcome = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| panic!("bad header {canary}"))
        });
        let _ = std::panic::take_hook();
        assert!(outcome.is_err());
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("panicked"), "{logged}");
        assert!(logged.contains("panic_hook.rs"), "{logged}");
        assert!(!logged.contains(canary), "{logged}");
    }

    #[test]
    fn a_panic_before_logging_is_set_up_still_leaves_its_location_on_stderr() {
        const CHILD: &str = "FINCODE_TELEMETRY_PANIC_CHILD";
        let canary = "4111111111111111-before-logging-canary";
        if std::env::var_os(CHILD).is_some() {
            // In the child: no subscriber anywhere, as in config loading or a one-shot command.
            install();
            panic!("bad value {canary}");
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic_hook::tests::a_panic_before_logging_is_set_up_still_leaves_its_location_on_stderr",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "the child should have panicked");
        assert!(
            stderr.contains("fincode-sidecar panicked at") && stderr.contains("panic_hook.rs"),
            "{stderr}"
        );
        assert!(
            !stderr.contains(canary) && !stdout.contains(canary),
            "{stderr}{stdout}"
        );
    }
}
