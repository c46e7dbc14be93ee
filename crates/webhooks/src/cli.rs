//! `webhooks verify` and `webhooks sign`: the operator's tools for debugging signatures.
//!
//! When FinCode (or the sandbox, or an app checking the sidecar's deliveries) and the sidecar
//! disagree about a signature, an operator saves the body and headers of one delivery and asks
//! "does this verify with the secret we have?" (`verify`), or "what would a correct signature
//! be?" (`sign`). Both run the same code as the listener and the dispatcher
//! ([`crate::verify`]), so the answer is the sidecar's answer, not a reimplementation's.
//!
//! The secret comes from an environment variable (`--secret-env`), never from the command line
//! (where `ps` and shell history would see it), and is never printed: not in results, not in
//! errors. The one scheme whose "signature" is the secret itself, `shared-secret`, can be
//! verified but not signed, for that reason.
//!
//! These functions take plain [`SignatureArgs`] and return an [`Outcome`] rather than parse
//! flags, print or exit: the binary does those (its `webhooks_cli` holds the clap
//! definitions), and tests can look at the result.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fincode_config::Env;
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use crate::verify::{self, Algorithm, Encoding, Scheme, Verifier};

/// Default header of the `hmac-*` schemes.
const DEFAULT_HMAC_HEADER: &str = "x-fincode-signature";
/// Default header of the `shared-secret` scheme.
const DEFAULT_SHARED_SECRET_HEADER: &str = "x-webhook-secret";

/// The signature scheme to verify or sign with (the binary's `--scheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeName {
    /// HMAC-SHA256 of the body, hex.
    HmacSha256Hex,
    /// HMAC-SHA256 of the body, base64.
    HmacSha256Base64,
    /// HMAC-SHA512 of the body, hex.
    HmacSha512Hex,
    /// HMAC-SHA512 of the body, base64.
    HmacSha512Base64,
    /// Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature; whsec_ secret).
    StandardWebhooks,
    /// Stripe-style `t=<unix>,v1=<hex>`.
    Stripe,
    /// A header equal to the secret.
    SharedSecret,
}

/// What `webhooks verify` and `webhooks sign` were asked to do: plain data, which the
/// binary fills from its command line (flag names and defaults live there).
#[derive(Clone, Debug)]
pub struct SignatureArgs {
    /// The signature scheme (`--scheme`).
    pub scheme: SchemeName,
    /// The environment variable holding the secret (`--secret-env`): its bytes for hmac-*,
    /// stripe and shared-secret; the "whsec_..." string for standard-webhooks.
    pub secret_env: String,
    /// Text before the encoded signature, such as "sha256=" (`--prefix`, hmac-* only).
    pub prefix: Option<String>,
    /// The signature header (`--signature-header`); `None` is the scheme's default:
    /// x-fincode-signature for hmac-*, stripe-signature for stripe, x-webhook-secret for
    /// shared-secret (standard-webhooks' names are fixed).
    pub signature_header: Option<String>,
    /// Received headers, each 'Name: value' (`--header`, verify only).
    pub headers: Vec<String>,
    /// The file holding the raw body, byte for byte as received or to be sent (`--body-file`).
    pub body_file: PathBuf,
    /// The time to check or sign at, in unix seconds (`--now`); `None` is the clock.
    pub now: Option<u64>,
    /// How far the signed timestamp may be from now, either way, in seconds
    /// (`--tolerance-secs`; verify with standard-webhooks or stripe).
    pub tolerance_secs: u64,
    /// The webhook-id to sign with (`--id`, sign with standard-webhooks); `None` mints a
    /// random "msg_<32 hex digits>".
    pub id: Option<String>,
}

/// What a command prints and its exit code: 0 valid or signed, 1 invalid, 2 usage error.
///
/// `output` has no trailing newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The process exit code.
    pub code: u8,
    /// What to print on stdout (results) or stderr (usage errors, code 2).
    pub output: String,
}

// === impl Outcome ===

impl Outcome {
    /// Exit code of a valid signature or a successful signing.
    pub const SUCCESS: u8 = 0;
    /// Exit code of a signature that does not verify.
    pub const INVALID: u8 = 1;
    /// Exit code of a usage error.
    pub const USAGE: u8 = 2;

    fn success(output: String) -> Self {
        Self {
            code: Self::SUCCESS,
            output,
        }
    }

    fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: Self::USAGE,
            output: format!("error: {message}"),
        }
    }
}

/// Checks the body and headers with the secret: prints `valid` (exit 0) or
/// `invalid: <reason>` (exit 1), or a usage error (exit 2: bad flag for the scheme, variable unset
/// or empty, unusable secret, unreadable body file, malformed `--header`).
pub fn verify(args: &SignatureArgs, env: &Env) -> Outcome {
    match verify_inner(args, env) {
        Ok(Ok(())) => Outcome::success("valid".to_owned()),
        Ok(Err(rejection)) => Outcome {
            code: Outcome::INVALID,
            output: format!("invalid: {rejection}"),
        },
        Err(usage) => usage,
    }
}

/// Signs the body with the secret: prints the header line(s) to send, `Name: value` one per line
/// (exit 0), or a usage error (exit 2).
pub fn sign(args: &SignatureArgs, env: &Env) -> Outcome {
    match sign_inner(args, env) {
        Ok(lines) => Outcome::success(lines),
        Err(usage) => usage,
    }
}

fn verify_inner(args: &SignatureArgs, env: &Env) -> Result<Result<(), verify::Rejection>, Outcome> {
    if args.id.is_some() {
        return Err(Outcome::usage(
            "--id applies to sign; verify reads the id from --header 'webhook-id: ...'",
        ));
    }
    let scheme = scheme(args)?;
    let secret = secret(args, env)?;
    let verifier = Verifier::new(
        scheme,
        vec![secret],
        Duration::from_secs(args.tolerance_secs),
    )
    .map_err(|error| Outcome::usage(format_args!("{}: {error}", args.secret_env)))?;
    let headers = headers(&args.headers)?;
    let body = body(args)?;
    Ok(verifier.verify(&headers, &body, now(args)?))
}

fn sign_inner(args: &SignatureArgs, env: &Env) -> Result<String, Outcome> {
    if args.scheme == SchemeName::SharedSecret {
        return Err(Outcome::usage(
            "shared-secret has nothing to compute: its header is the secret itself, which this \
             tool never prints; send the value of the variable as the header",
        ));
    }
    if !args.headers.is_empty() {
        return Err(Outcome::usage("--header applies to verify"));
    }
    if args.id.is_some() && args.scheme != SchemeName::StandardWebhooks {
        return Err(Outcome::usage("--id applies to standard-webhooks only"));
    }
    let scheme = scheme(args)?;
    let secret = secret(args, env)?;
    let body = body(args)?;
    let now = now(args)?;
    let id = args.id.clone().unwrap_or_else(random_message_id);
    let headers = verify::sign(&scheme, &secret, &body, now, &id)
        .map_err(|error| Outcome::usage(format_args!("{}: {error}", args.secret_env)))?;
    let lines: Vec<String> = headers
        .iter()
        .map(|(name, value)| {
            // Every value `sign` makes is visible ASCII; lossy only guards against a bug.
            format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
        })
        .collect();
    Ok(lines.join("\n"))
}

/// The [`Scheme`] the flags describe; flags that do not apply to it are usage errors rather
/// than silently ignored, because a debugging tool that ignores input misleads.
fn scheme(args: &SignatureArgs) -> Result<Scheme, Outcome> {
    let hmac = |algorithm, encoding| -> Result<Scheme, Outcome> {
        Ok(Scheme::Hmac {
            algorithm,
            encoding,
            header: signature_header(args, DEFAULT_HMAC_HEADER)?,
            prefix: args.prefix.clone().unwrap_or_default(),
        })
    };
    if args.prefix.is_some() && !is_hmac(args.scheme) {
        return Err(Outcome::usage(
            "--prefix applies to the hmac-* schemes only",
        ));
    }
    match args.scheme {
        SchemeName::HmacSha256Hex => hmac(Algorithm::Sha256, Encoding::Hex),
        SchemeName::HmacSha256Base64 => hmac(Algorithm::Sha256, Encoding::Base64),
        SchemeName::HmacSha512Hex => hmac(Algorithm::Sha512, Encoding::Hex),
        SchemeName::HmacSha512Base64 => hmac(Algorithm::Sha512, Encoding::Base64),
        SchemeName::StandardWebhooks => {
            if args.signature_header.is_some() {
                return Err(Outcome::usage(
                    "--signature-header does not apply to standard-webhooks: its headers are \
                     webhook-id, webhook-timestamp and webhook-signature",
                ));
            }
            Ok(Scheme::StandardWebhooks)
        }
        SchemeName::Stripe => Ok(Scheme::Stripe {
            header: signature_header(args, verify::DEFAULT_STRIPE_HEADER.as_str())?,
        }),
        SchemeName::SharedSecret => Ok(Scheme::SharedSecret {
            header: signature_header(args, DEFAULT_SHARED_SECRET_HEADER)?,
        }),
    }
}

const fn is_hmac(scheme: SchemeName) -> bool {
    matches!(
        scheme,
        SchemeName::HmacSha256Hex
            | SchemeName::HmacSha256Base64
            | SchemeName::HmacSha512Hex
            | SchemeName::HmacSha512Base64
    )
}

fn signature_header(args: &SignatureArgs, default: &str) -> Result<HeaderName, Outcome> {
    let name = args.signature_header.as_deref().unwrap_or(default);
    HeaderName::try_from(name.trim()).map_err(|_| {
        Outcome::usage(format_args!(
            "--signature-header {name:?} is not a header name"
        ))
    })
}

fn secret(args: &SignatureArgs, env: &Env) -> Result<SecretString, Outcome> {
    env.get(&args.secret_env)
        .filter(|value| !value.is_empty())
        .map(|value| SecretString::from(value.to_owned()))
        .ok_or_else(|| {
            Outcome::usage(format_args!(
                "the environment variable {} (--secret-env) is unset or empty",
                args.secret_env
            ))
        })
}

fn body(args: &SignatureArgs) -> Result<Vec<u8>, Outcome> {
    std::fs::read(&args.body_file).map_err(|error| {
        Outcome::usage(format_args!(
            "cannot read --body-file {}: {error}",
            args.body_file.display()
        ))
    })
}

fn now(args: &SignatureArgs) -> Result<SystemTime, Outcome> {
    match args.now {
        None => Ok(SystemTime::now()),
        Some(secs) => SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| Outcome::usage(format_args!("--now {secs} is out of range"))),
    }
}

/// Parses each `--header 'Name: value'`. Errors name the flag by position and never echo the
/// value, which may be a secret (shared-secret) or a signature.
fn headers(lines: &[String]) -> Result<HeaderMap, Outcome> {
    let mut headers = HeaderMap::new();
    for (index, line) in lines.iter().enumerate() {
        let position = index + 1;
        let malformed = || {
            Outcome::usage(format_args!(
                "--header #{position} is not 'Name: value' with a valid header name and value"
            ))
        };
        let (name, value) = line.split_once(':').ok_or_else(malformed)?;
        let name = HeaderName::try_from(name.trim()).map_err(|_| malformed())?;
        // Bytes, not text: a value that is not visible ASCII must reach the verifier, which
        // rejects it the way the listener would.
        let value = HeaderValue::from_bytes(value.trim_matches([' ', '\t']).as_bytes())
            .map_err(|_| malformed())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A fresh Standard Webhooks message id: `msg_` and 32 hex digits (128 random bits).
fn random_message_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("msg_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const HMAC_SECRET: &str = "fincode-test-secret";
    const BODY: &[u8] = br#"{"eventType":"TRANSACTION_STATUS","Reference":"PCN-0001","Status":"PAID","msgCode":"00"}"#;
    /// Python: hmac.new(b"fincode-test-secret", BODY, hashlib.sha256).hexdigest()
    const HMAC_SHA256_HEX: &str =
        "295ab5b574d4c3c3b086ad22893ab361f828ab028e0c73ab25dd4377ac080a9c";

    fn body_file(body: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(body).unwrap();
        file
    }

    fn args(scheme: SchemeName, body: &tempfile::NamedTempFile) -> SignatureArgs {
        SignatureArgs {
            scheme,
            secret_env: "WEBHOOK_SECRET".to_owned(),
            prefix: None,
            signature_header: None,
            headers: Vec::new(),
            body_file: body.path().to_owned(),
            now: None,
            tolerance_secs: 300,
            id: None,
        }
    }

    fn env(secret: &str) -> Env {
        Env::from_pairs([("WEBHOOK_SECRET", secret)])
    }

    fn assert_no_secret(outcome: &Outcome, secret: &str) {
        assert!(
            !outcome.output.contains(secret),
            "the output shows the secret: {}",
            outcome.output
        );
    }

    #[test]
    fn verify_valid_hmac() {
        let body = body_file(BODY);
        let mut a = args(SchemeName::HmacSha256Hex, &body);
        a.prefix = Some("sha256=".to_owned());
        a.headers = vec![format!("X-FinCode-Signature: sha256={HMAC_SHA256_HEX}")];
        let outcome = verify(&a, &env(HMAC_SECRET));
        assert_eq!(
            outcome,
            Outcome {
                code: 0,
                output: "valid".to_owned()
            }
        );
    }

    #[test]
    fn verify_invalid_prints_the_reason() {
        let body = body_file(b"tampered");
        let mut a = args(SchemeName::HmacSha256Hex, &body);
        a.headers = vec![format!("x-fincode-signature: {HMAC_SHA256_HEX}")];
        let outcome = verify(&a, &env(HMAC_SECRET));
        assert_eq!(
            outcome,
            Outcome {
                code: 1,
                output: "invalid: bad signature: no secret matches the signature over the body"
                    .to_owned()
            }
        );
        assert_no_secret(&outcome, HMAC_SECRET);

        a.headers.clear();
        let outcome = verify(&a, &env(HMAC_SECRET));
        assert_eq!(outcome.code, 1);
        assert!(
            outcome.output.starts_with("invalid: missing signature"),
            "{}",
            outcome.output
        );

        a.headers = vec!["x-fincode-signature: zz".to_owned()];
        let outcome = verify(&a, &env(HMAC_SECRET));
        assert_eq!(outcome.code, 1);
        assert!(
            outcome.output.starts_with("invalid: malformed signature"),
            "{}",
            outcome.output
        );
    }

    #[test]
    fn verify_standard_webhooks_spec_vector_at_a_given_time() {
        let body = body_file(SPEC_BODY);
        let mut a = args(SchemeName::StandardWebhooks, &body);
        a.headers = vec![
            "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned(),
            "webhook-timestamp: 1614265330".to_owned(),
            "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned(),
        ];
        a.now = Some(1_614_265_330 + 300);
        assert_eq!(verify(&a, &env(SPEC_SECRET)).output, "valid");

        a.now = Some(1_614_265_330 + 301);
        let outcome = verify(&a, &env(SPEC_SECRET));
        assert_eq!(outcome.code, 1);
        assert!(
            outcome.output.starts_with("invalid: stale timestamp"),
            "{}",
            outcome.output
        );

        a.tolerance_secs = 301;
        assert_eq!(verify(&a, &env(SPEC_SECRET)).code, 0);

        a.now = None; // the clock: years after 2021
        assert_eq!(verify(&a, &env(SPEC_SECRET)).code, 1);
    }

    #[test]
    fn sign_standard_webhooks_reproduces_the_spec_vector() {
        let body = body_file(SPEC_BODY);
        let mut a = args(SchemeName::StandardWebhooks, &body);
        a.now = Some(1_614_265_330);
        a.id = Some("msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned());
        let outcome = sign(&a, &env(SPEC_SECRET));
        assert_eq!(
            outcome,
            Outcome {
                code: 0,
                output: "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\n\
                         webhook-timestamp: 1614265330\n\
                         webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                    .to_owned()
            }
        );
        assert_no_secret(&outcome, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }

    #[test]
    fn sign_standard_webhooks_mints_a_random_id() {
        let body = body_file(b"{}");
        let a = args(SchemeName::StandardWebhooks, &body);
        let first = sign(&a, &env(SPEC_SECRET));
        let second = sign(&a, &env(SPEC_SECRET));
        assert_eq!(first.code, 0);
        let id = first
            .output
            .lines()
            .next()
            .unwrap()
            .strip_prefix("webhook-id: msg_")
            .unwrap();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(first.output.lines().next(), second.output.lines().next());
    }

    #[test]
    fn sign_hmac_and_stripe_known_answers() {
        let body = body_file(BODY);
        let mut a = args(SchemeName::HmacSha256Hex, &body);
        a.prefix = Some("sha256=".to_owned());
        a.signature_header = Some("X-Hub-Signature-256".to_owned());
        assert_eq!(
            sign(&a, &env(HMAC_SECRET)).output,
            format!("x-hub-signature-256: sha256={HMAC_SHA256_HEX}")
        );

        // Python: hmac.new(b"whsec_stripe_style_test_secret", b"1700000000." + BODY,
        //                  hashlib.sha256).hexdigest()
        let mut a = args(SchemeName::Stripe, &body);
        a.now = Some(1_700_000_000);
        let outcome = sign(&a, &env("whsec_stripe_style_test_secret"));
        assert_eq!(
            outcome.output,
            "stripe-signature: t=1700000000,\
             v1=a152410c5fce1d04ae6ca1c9cf5104ffee171e4919e8c6aeccbd3dc1661fd3ee"
        );
        assert_no_secret(&outcome, "whsec_stripe_style_test_secret");
    }

    #[test]
    fn sign_then_verify_round_trips_for_every_signable_scheme() {
        let body = body_file(BODY);
        for (scheme, secret) in [
            (SchemeName::HmacSha256Hex, HMAC_SECRET),
            (SchemeName::HmacSha256Base64, HMAC_SECRET),
            (SchemeName::HmacSha512Hex, HMAC_SECRET),
            (SchemeName::HmacSha512Base64, HMAC_SECRET),
            (SchemeName::StandardWebhooks, SPEC_SECRET),
            (SchemeName::Stripe, "stripe-secret"),
        ] {
            let mut a = args(scheme, &body);
            a.now = Some(1_700_000_000);
            let signed = sign(&a, &env(secret));
            assert_eq!(signed.code, 0, "{scheme:?}: {}", signed.output);
            assert_no_secret(&signed, secret);
            a.headers = signed.output.lines().map(str::to_owned).collect();
            a.now = Some(1_700_000_000 + 60);
            assert_eq!(verify(&a, &env(secret)).output, "valid", "{scheme:?}");
            let outcome = verify(&a, &env("a-different-secret"));
            assert_eq!(
                outcome.code,
                if scheme == SchemeName::StandardWebhooks {
                    2
                } else {
                    1
                }
            );
        }
    }

    #[test]
    fn verify_shared_secret() {
        let body = body_file(b"anything");
        let mut a = args(SchemeName::SharedSecret, &body);
        a.headers = vec!["x-webhook-secret: s3cr3t".to_owned()];
        assert_eq!(verify(&a, &env("s3cr3t")).code, 0);
        let outcome = verify(&a, &env("other"));
        assert_eq!(outcome.code, 1);
        assert_no_secret(&outcome, "other");
    }

    #[test]
    fn usage_errors_exit_2_without_the_secret() {
        let body = body_file(BODY);
        let secret = "sup3r-s3cret";
        let hmac = args(SchemeName::HmacSha256Hex, &body);
        let check = |outcome: Outcome, expect: &str| {
            assert_eq!(outcome.code, 2, "{}", outcome.output);
            assert!(outcome.output.starts_with("error: "), "{}", outcome.output);
            assert!(outcome.output.contains(expect), "{}", outcome.output);
            assert_no_secret(&outcome, secret);
        };

        // The variable unset or empty.
        check(
            verify(&hmac, &Env::from_pairs([("OTHER", secret)])),
            "WEBHOOK_SECRET",
        );
        check(sign(&hmac, &env("")), "unset or empty");
        // The body file unreadable.
        let mut missing = args(SchemeName::HmacSha256Hex, &body);
        missing.body_file = body.path().with_extension("does-not-exist");
        check(verify(&missing, &env(secret)), "--body-file");
        check(sign(&missing, &env(secret)), "--body-file");
        // A malformed --header, whose value is never echoed.
        for header in [
            format!("x-webhook-secret {secret}"),
            format!("bad name: {secret}"),
            format!(": {secret}"),
            format!("x-webhook-secret: {secret}\n"),
        ] {
            let mut a = args(SchemeName::SharedSecret, &body);
            a.headers = vec!["x-ok: 1".to_owned(), header];
            check(verify(&a, &env(secret)), "--header #2");
        }
        // A secret that the scheme cannot use.
        check(
            verify(&args(SchemeName::StandardWebhooks, &body), &env(secret)),
            "secret #1",
        );
        check(
            sign(&args(SchemeName::StandardWebhooks, &body), &env(secret)),
            "secret #1",
        );
        // Flags that do not apply.
        let mut a = args(SchemeName::Stripe, &body);
        a.prefix = Some("sha256=".to_owned());
        check(verify(&a, &env(secret)), "--prefix");
        let mut a = args(SchemeName::StandardWebhooks, &body);
        a.signature_header = Some("x-sig".to_owned());
        check(verify(&a, &env(SPEC_SECRET)), "--signature-header");
        let mut a = args(SchemeName::HmacSha256Hex, &body);
        a.signature_header = Some("not a header".to_owned());
        check(verify(&a, &env(secret)), "--signature-header");
        let mut a = args(SchemeName::StandardWebhooks, &body);
        a.id = Some("msg_1".to_owned());
        check(verify(&a, &env(SPEC_SECRET)), "--id");
        let mut a = args(SchemeName::Stripe, &body);
        a.id = Some("msg_1".to_owned());
        check(sign(&a, &env(secret)), "--id");
        let mut a = args(SchemeName::Stripe, &body);
        a.headers = vec!["x: y".to_owned()];
        check(sign(&a, &env(secret)), "--header");
        let mut a = args(SchemeName::StandardWebhooks, &body);
        a.id = Some("msg 1".to_owned());
        check(sign(&a, &env(SPEC_SECRET)), "message id");
        // shared-secret's "signature" is the secret: not printed.
        check(
            sign(&args(SchemeName::SharedSecret, &body), &env(secret)),
            "shared-secret",
        );
        // An invalid HMAC prefix.
        let mut a = args(SchemeName::HmacSha256Hex, &body);
        a.prefix = Some("sha 256=".to_owned());
        check(verify(&a, &env(secret)), "prefix");
        // A time that cannot be represented.
        let mut a = args(SchemeName::Stripe, &body);
        a.now = Some(u64::MAX);
        check(sign(&a, &env(secret)), "--now");
    }
}
