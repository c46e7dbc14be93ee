//! What clap itself accepts and refuses for `webhooks verify` and `webhooks sign`; what the
//! library does with the parsed arguments is tested in `fincode_webhooks::cli`.

use clap::Parser;
use fincode_webhooks::cli::{SchemeName, SignatureArgs};

use super::SignatureFlags;

/// The binary's shape, to check what clap itself refuses.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    flags: SignatureFlags,
}

#[test]
fn clap_refuses_an_unknown_scheme_with_exit_2() {
    let parse = |scheme: &str| {
        Cli::try_parse_from([
            "webhooks",
            "--scheme",
            scheme,
            "--secret-env",
            "S",
            "--body-file",
            "/dev/null",
        ])
    };
    let error = parse("hmac-md5-hex").unwrap_err();
    assert_eq!(error.exit_code(), 2);
    for (name, scheme) in [
        ("hmac-sha256-hex", SchemeName::HmacSha256Hex),
        ("hmac-sha256-base64", SchemeName::HmacSha256Base64),
        ("hmac-sha512-hex", SchemeName::HmacSha512Hex),
        ("hmac-sha512-base64", SchemeName::HmacSha512Base64),
        ("standard-webhooks", SchemeName::StandardWebhooks),
        ("stripe", SchemeName::Stripe),
        ("shared-secret", SchemeName::SharedSecret),
    ] {
        let args = SignatureArgs::from(parse(name).unwrap().flags);
        assert_eq!(args.tolerance_secs, 300);
        assert_eq!(args.scheme, scheme, "{name}");
    }
    let cli = Cli::try_parse_from([
        "webhooks",
        "--scheme",
        "stripe",
        "--secret-env",
        "S",
        "--body-file",
        "b",
        "--header",
        "a: 1",
        "--header",
        "b: 2",
        "--now",
        "5",
    ])
    .unwrap();
    let args = SignatureArgs::from(cli.flags);
    assert_eq!(args.headers, ["a: 1", "b: 2"]);
    assert_eq!(args.now, Some(5));
}
