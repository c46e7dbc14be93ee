//! One process per database file, enforced by an exclusive lock on `<file>.lock`.
//!
//! SQLite itself lets two processes share a file, but this store must not: at open it
//! voids every lease (whoever held one was this sidecar's previous run, killed
//! mid-delivery), which is only true while one process uses the file. A rolling update
//! on a shared volume starts the new pod before the old one stops; without the lock the
//! new pod would void the old one's live leases and deliver those events a second time.
//!
//! The lock is advisory (`flock`-style, via `File::try_lock`), held as long as the
//! store holds the file, and released by the operating system when the process dies,
//! so a crash never leaves a stale lock behind. The lock file itself stays (deleting it
//! would race with a process opening it) and holds nothing.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// `<file>.lock` beside the database.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = OsString::from(database.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock for `database`, or fails naming the file and the fix when
/// another process holds it. The lock lasts as long as the returned file is open.
pub(super) fn lock_exclusively(database: &Path) -> Result<File, StoreError> {
    let path = lock_path(database);
    let open_error = |detail: String| StoreError::open(database.display().to_string(), detail);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| {
            open_error(format!(
                "cannot create the lock file {}: {error}; the directory must be writable by \
                 the sidecar's user, or set store.sqlite_path \
                 (FINCODE_SIDECAR__STORE__SQLITE_PATH) to a file in a writable directory",
                path.display()
            ))
            .caused_by(error)
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(open_error(format!(
            "another process is using it (it holds the lock {}); an SQLite store serves \
             one sidecar process at a time. Stop the other sidecar first (in Kubernetes, \
             deploy a pod with this volume with strategy Recreate, not RollingUpdate), give \
             each replica its own file, or share a Postgres store (store.url) between \
             replicas",
            path.display()
        ))),
        Err(TryLockError::Error(error)) => Err(open_error(format!(
            "cannot lock {}: {error}; put the file on a local disk that supports file locks",
            path.display()
        ))
        .caused_by(error)),
    }
}
