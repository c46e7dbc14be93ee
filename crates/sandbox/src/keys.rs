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
use sha2::Sha256;

use crate::SandboxError;

/// File name of the public key (SPKI PEM) inside the state directory.
pub(crate) const PUBLIC_KEY_FILE: &str = "fincode_public_key.pem";
/// File name of the private key (PKCS#8 PEM); reused on restart when present.
pub(crate) const PRIVATE_KEY_FILE: &str = "fincode_private_key.pem";

/// A key generated earlier in this process. RSA-2048 generation costs hundreds of milliseconds,
/// and a test binary starts many sandboxes, each in a fresh temporary directory.
static GENERATED: OnceLock<RsaPrivateKey> = OnceLock::new();

/// The private half of the login key; decrypts `currentPassword`.
pub(crate) struct LoginKey {
    private: RsaPrivateKey,
}

// === impl LoginKey ===

impl LoginKey {
    /// Reuses `<state_dir>/fincode_private_key.pem` if present, else generates and writes it,
    /// and (re)writes the public key PEM either way.
    pub(crate) async fn load_or_generate(state_dir: &Path) -> Result<Self, SandboxError> {
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
        let public_pem = RsaPublicKey::from(&private)
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SandboxError::Key(format!("encoding public key: {e}")))?;
        let public_path = state_dir.join(PUBLIC_KEY_FILE);
        tokio::fs::write(&public_path, public_pem)
            .await
            .map_err(|e| SandboxError::io(format!("writing {}", public_path.display()), e))?;
        Ok(Self { private })
    }

    /// Decrypts a base64 RSA-OAEP(SHA-256, MGF1-SHA-256) ciphertext; `None` if anything about it
    /// is wrong, because FinCode answers every such case with the same 401.
    pub(crate) fn decrypt_password(&self, ciphertext_b64: &str) -> Option<String> {
        let ciphertext = STANDARD.decode(ciphertext_b64.trim()).ok()?;
        let plain = self
            .private
            .decrypt(Oaep::new::<Sha256>(), &ciphertext)
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
/// SHA-256 and MGF1-SHA-256 under the tenant public key, then standard base64.
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
        .encrypt(&mut OsRng, Oaep::new::<Sha256>(), password.as_bytes())
        .map_err(|e| SandboxError::Key(format!("encrypting password: {e}")))?;
    Ok(STANDARD.encode(ciphertext))
}
