//! The tenant RSA key FinCode uses for password encryption at login.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::Sha256;

use crate::SandboxError;

/// File name of the public key (SPKI PEM) inside the state directory.
pub(crate) const PUBLIC_KEY_FILE: &str = "fincode_public_key.pem";
/// File name of the same public key as FinCode's dashboard hands it out: the bare Base64 of the
/// DER SubjectPublicKeyInfo, no PEM armour, no line breaks.
pub(crate) const PUBLIC_KEY_BASE64_FILE: &str = "fincode_public_key.b64";
/// File name of the private key (PKCS#8 PEM); reused on restart when present.
pub(crate) const PRIVATE_KEY_FILE: &str = "fincode_private_key.pem";

/// A key generated earlier in this process. RSA-2048 generation costs hundreds of milliseconds,
/// and a test binary starts many sandboxes, each in a fresh temporary directory.
static GENERATED: OnceLock<RsaPrivateKey> = OnceLock::new();

/// The hash MGF1 uses inside the RSA-OAEP (SHA-256) that protects `currentPassword`.
///
/// FinCode's server is Java: its guide's `Cipher.getInstance("RSA/ECB/OAEPWithSHA-256AndMGF1Padding")`
/// with no parameter spec runs, in Java's default provider, with MGF1-SHA1. A client that lets
/// MGF1 follow the digest (most non-Java libraries) fails there, and so it fails here by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OaepMgf1 {
    /// MGF1-SHA1, as FinCode's Java server decrypts (the default).
    #[default]
    Sha1,
    /// MGF1-SHA256, for trying a client against a server configured the other way.
    Sha256,
}

// === impl OaepMgf1 ===

impl OaepMgf1 {
    fn padding(self) -> Oaep {
        match self {
            Self::Sha1 => Oaep::new_with_mgf_hash::<Sha256, Sha1>(),
            Self::Sha256 => Oaep::new::<Sha256>(),
        }
    }
}

impl std::str::FromStr for OaepMgf1 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            _ => Err(format!("expected \"sha1\" or \"sha256\", found {text:?}")),
        }
    }
}

/// The private half of the login key; decrypts `currentPassword`.
pub(crate) struct LoginKey {
    private: RsaPrivateKey,
    mgf1: OaepMgf1,
}

// === impl LoginKey ===

impl LoginKey {
    /// Reuses `<state_dir>/fincode_private_key.pem` if present, else generates and writes it,
    /// and (re)writes the public key files (PEM and bare Base64 DER) either way.
    pub(crate) async fn load_or_generate(
        state_dir: &Path,
        mgf1: OaepMgf1,
    ) -> Result<Self, SandboxError> {
        let private_path = state_dir.join(PRIVATE_KEY_FILE);
        let private = match tokio::fs::read_to_string(&private_path).await {
            Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem)
                .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
                .map_err(|e| {
                    SandboxError::Key(format!("reading {}: {e}", private_path.display()))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let private = tokio::task::spawn_blocking(generate)
                    .await
                    .map_err(|e| SandboxError::Key(format!("key generation task: {e}")))??;
                let pem = private
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| SandboxError::Key(format!("encoding private key: {e}")))?;
                write_private(&private_path, pem.as_bytes())?;
                private
            }
            Err(e) => {
                return Err(SandboxError::io(
                    format!("reading {}", private_path.display()),
                    e,
                ));
            }
        };
        let public = RsaPublicKey::from(&private);
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SandboxError::Key(format!("encoding public key: {e}")))?;
        let public_der = public
            .to_public_key_der()
            .map_err(|e| SandboxError::Key(format!("encoding public key: {e}")))?;
        for (name, contents) in [
            (PUBLIC_KEY_FILE, public_pem),
            (
                PUBLIC_KEY_BASE64_FILE,
                STANDARD.encode(public_der.as_bytes()),
            ),
        ] {
            let path = state_dir.join(name);
            tokio::fs::write(&path, contents)
                .await
                .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(Self { private, mgf1 })
    }

    /// Decrypts a base64 RSA-OAEP(SHA-256, MGF1 per [`OaepMgf1`]) ciphertext; `None` if anything
    /// about it is wrong, because FinCode answers every such case with the same 401.
    pub(crate) fn decrypt_password(&self, ciphertext_b64: &str) -> Option<String> {
        let ciphertext = STANDARD.decode(ciphertext_b64.trim()).ok()?;
        let plain = self
            .private
            .decrypt(self.mgf1.padding(), &ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn generate() -> Result<RsaPrivateKey, SandboxError> {
    if let Some(key) = GENERATED.get() {
        return Ok(key.clone());
    }
    let key = RsaPrivateKey::new(&mut OsRng, 2048)
        .map_err(|e| SandboxError::Key(format!("generating RSA-2048: {e}")))?;
    let _ = GENERATED.set(key.clone());
    Ok(key)
}

fn write_private(path: &Path, pem: &[u8]) -> Result<(), SandboxError> {
    std::fs::write(path, pem)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| SandboxError::io(format!("restricting {}", path.display()), e))?;
    }
    Ok(())
}

/// Encrypts `password` the way a FinCode client must for `currentPassword`: RSA-OAEP with
/// SHA-256 and MGF1-SHA1 (what FinCode's Java server decrypts, see [`OaepMgf1`]) under the
/// tenant public key, then standard base64.
///
/// Meant for tests that log in to the sandbox directly, without the sidecar.
///
/// ```no_run
/// # async fn demo(sandbox: &fincode_sandbox::Sandbox) -> Result<(), Box<dyn std::error::Error>> {
/// let pem = std::fs::read_to_string(sandbox.public_key_path())?;
/// let current_password = fincode_sandbox::encrypt_password_for_tests(&pem, "demo-password")?;
/// # Ok(()) }
/// ```
pub fn encrypt_password_for_tests(
    public_key_pem: &str,
    password: &str,
) -> Result<String, SandboxError> {
    let public = RsaPublicKey::from_public_key_pem(public_key_pem)
        .map_err(|e| SandboxError::Key(format!("parsing public key PEM: {e}")))?;
    let ciphertext = public
        .encrypt(&mut OsRng, OaepMgf1::Sha1.padding(), password.as_bytes())
        .map_err(|e| SandboxError::Key(format!("encrypting password: {e}")))?;
    Ok(STANDARD.encode(ciphertext))
}
