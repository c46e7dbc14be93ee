#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
//! The audit trail's chain: append-only JSONL segments in which every line carries its
//! sequence number (`seq`) and the SHA-256 of the previous line's exact bytes (`prev`),
//! so that editing, removing, reordering or inserting a line breaks the chain where it
//! happened, and [`verify`] names the segment and the sequence number.
//!
//! The chain runs across segments: the first line of a segment is a `segment` header whose
//! `prev` is the hash of the previous segment's last line, so a whole segment cannot be
//! dropped or replaced unnoticed either. The first line of the first segment links to
//! [`GENESIS`].
//!
//! A crash can leave a torn last line (bytes without the closing newline). It is never
//! silently dropped: [`ChainWriter::open`] cuts it off and appends a `recovery` record
//! carrying its length and hash, so the loss is itself on the record.
//!
//! A chain alone can be rewritten consistently by someone who recomputes every hash, or
//! cut short. [`ChainWriter::checkpoint`] signs the head with Ed25519 and records it in the
//! chain; the caller also logs it, so an independent copy exists. [`verify_signed`] checks
//! every checkpoint's signature and that the trail still holds each signed head, its own
//! and those collected from the logs.
//!
//! [`AuditLog`] is the writer: a bounded queue the request path never waits on (or, for
//! `audit.fail_closed`, a commit that resolves once the record is on disk), a thread that
//! writes batches and syncs them together (group commit, [`SYNC_EVERY`]), checkpoints
//! every N records or T seconds and at rotation and stop, rotation by size and age,
//! retention that deletes whole old segments and records it
//! ([`ChainWriter::apply_retention`]), and `gap` records counting what a full queue or an
//! unwritable trail lost.
//!
//! [`Auditor`] is the one door records go through: it stamps time and actor, and passes
//! every value through the redactor, resource ids becoming keyed pseudonyms, which
//! [`find`] computes again from a clear id to look records up.

mod chain;
mod checkpoint;
mod find;
mod inbox;
pub mod json;
mod record;
mod verify;
mod writer;

pub use self::chain::{ChainError, ChainWriter, GENESIS, SEGMENT_PREFIX, segment_path};
pub use self::checkpoint::{Checkpoint, KeyError, Signer, public_key_pem, verify_signature};
pub use self::find::{Query, Resource, find};
pub use self::record::{Auditor, Fraction, Kind, Record, push_rfc3339, trim_id};
pub use self::verify::{
    Finding, Report, SignedCheckpoint, checkpoint_from_log_line, checkpoints_from_log, verify,
    verify_signed,
};
pub use self::writer::{
    AuditLog, CheckpointSink, Fsync, SYNC_EVERY, Unavailable, WriterConfig, WriterStats,
};

#[cfg(test)]
mod tests;
