//! Upload sessions (PROTOCOL.md §7): ittybit's earlier upload API, by which an app hands a
//! browser a one-time upload URL.
//!
//! | request | answer |
//! |---|---|
//! | `POST <base>/uploads` (bearer) `{resumable?, conditions?, alias?, metadata?}` | 200, `data: {id, url, expiry}` |
//! | `POST <base>/store/single?key=K`, `multipart/form-data` with a part `file` | 200, `data`: the [`MediaObject`] |
//! | `PUT <base>/store/resumable?key=K`, `X-Upload-Index: i`, the part's bytes | 200, `data: {index, etag}` |
//! | `POST <base>/store/resumable?key=K`, `{"parts": [{index, etag}, …]}` | 200, `data`: the [`MediaObject`] |
//!
//! These endpoints always answer in the envelope (`{meta, data, error, links}`) that the
//! clients of this API read, whatever `Accept-Version` says.
//!
//! - **Keys** ([`SessionKey`]) are HMACs over the session id, expiry and kind, verified with
//!   any key of the app's key set; a tampered key is 403 `key_invalid`, an expired one 410
//!   `upload_gone`. A key works only on the endpoint of its kind: a simple session's key on
//!   `/store/resumable`, or a resumable one's on `/store/single`, is 403 `key_invalid` (the
//!   key is not valid *for this request*; PROTOCOL.md names no code for it), checked before
//!   its expiry. The session itself (conditions, alias, metadata) is a record in the
//!   [`Storage`] (`sessions/<id>`), so any process sharing the
//!   storage serves it.
//! - **Single use**: the upload that completes first creates the record
//!   `sessions/<id>/done` (create-only, exactly once across processes) before its file is
//!   published; every later use is 410 `upload_gone`. An upload refused by its conditions
//!   (422) does not spend the key.
//! - **Multipart** bodies stream through [`multer`] into the storage (bounded memory); the
//!   part named `file` (else the first part with a filename) is stored, other parts are read
//!   and ignored, each within [`MAX_OTHER_PART`](multipart::MAX_OTHER_PART) (64 KiB; 413
//!   `file_too_large`), all within the request limit. A form's structure is bounded before
//!   `multer` buffers it ([`FormScanner`](multipart::FormScanner)): a part's header block
//!   over 16 KiB, a preamble over 16 KiB, more than 64 parts or more than 32 headers in a
//!   part is 400 `multipart_invalid` (PROTOCOL.md names no code for it). A
//!   `Content-Type: multipart/form-data` without a boundary (what ittybit's XHR snippet makes
//!   browsers send) is read from the body's first line.
//! - **`Content-Digest`** (PROTOCOL.md §3, RFC 9530): on a form it covers the whole content,
//!   the multipart body as sent, as RFC 9530 defines it; a digest of the file part's bytes
//!   alone (what a client that hashes the file it attaches sends) is accepted too. On a
//!   part it covers the part's bytes (and then equals its etag). It is verified before the
//!   file or part is kept: a mismatch, or a malformed header (refused before the body is
//!   read), is 400 `digest_mismatch`, nothing is kept and the key stays unspent.
//! - **Parts** are kept as private uploads of the storage, one record each
//!   (`sessions/<id>/parts/<i>`: upload, size, SHA-256 etag); a retried part replaces the
//!   previous one. Assembly copies each listed part once into a new upload, in ascending
//!   index order, then publishes it as any upload is published (a `rename` on
//!   [`FsStorage`](crate::storage::FsStorage)). An **empty assembly body** assembles every
//!   uploaded part, numbered from 0 without gaps: ittybit's reference snippet puts its JSON
//!   inside `headers`, so its request arrives without a body.
//! - **Limits on parts** (see `budget.rs`): a session's parts together are held to the
//!   file-size limit as they arrive: a part takes a hold of its `Content-Length` (else of
//!   all the room left) before its first byte is read, and is refused with 413
//!   `file_too_large` when the session's holds would pass the limit (a retried index
//!   replaces its predecessor's hold). A session with parts counts as one upload in
//!   progress for [`max_incomplete_uploads`](crate::Uploads::max_incomplete_uploads), beside
//!   the storage's resumable uploads: the first part of one more session than the cap
//!   allows is 429 `too_many_uploads`, and so is a `Content-Range` chunk that would start
//!   one more resumable upload. An assembly refused for good (413 past the
//!   file-size limit, 422 by the conditions) frees the session's parts at once.
//!
//!   The storage's records offer create-only writes but no compare-and-swap, so the checks
//!   are made *after* the hold is created: of racing parts, at least the last to count sees
//!   every hold, so the holds never sum past the limit together (both may be refused).
//!   What remains racy: two *first* parts of one session racing may each see the other's
//!   hold and skip the cap check, passing the cap by one session; two retries of one index
//!   racing may leave the loser's bytes (and hold, which then counts against the session)
//!   until the session is swept; a part without `Content-Length` holds all the room left
//!   while it streams, so such parts sent in parallel may be refused 413.
//! - **Media URL**: the file is published at `<alias>` when the session has one (create-only:
//!   an existing file there is 409 `alias_taken`), else at `<media id>/original`;
//!   `<media id>/original` of an aliased media is resolved through the record
//!   `media/<media id>`. Both deliver the bytes like any file.
//! - **Expiry**: session records, and the parts of sessions that were never completed, are
//!   swept by [`sweep`](crate::service::sweep) one upload TTL after the key expired.

mod api;
mod budget;
#[doc(hidden)]
pub mod key;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod multipart;
mod parts;

#[doc(hidden)]
pub use key::{KeyError, SessionKey};
#[doc(hidden)]
pub use model::{CreateSession, MediaObject, PartRef, SourceObject};

pub(crate) use api::{create, resolve_media, single};
pub(crate) use parts::{complete, put_part};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::storage::StorageExt;
use crate::storage::{RecordKey, Storage, StorageResult, UploadId};
use model::{PartRecord, SessionRecord};

/// Discards sessions whose key expired more than `grace` ago: their part uploads, part
/// records, `done` marker and session record. Returns the ids of the discarded sessions.
#[doc(hidden)]
pub async fn sweep_sessions(
    storage: &Arc<dyn Storage>,
    grace: Duration,
) -> StorageResult<Vec<String>> {
    let root = RecordKey::new("sessions").expect("a valid record key");
    let now = crate::auth::unix_now();
    let mut by_session: BTreeMap<String, Vec<RecordKey>> = BTreeMap::new();
    for k in storage.list_records(&root).await? {
        if let Some(id) = k.as_str().split('/').nth(1)
            && key::is_session_id(id)
        {
            by_session.entry(id.to_owned()).or_default().push(k);
        }
    }
    let mut swept = Vec::new();
    for (id, keys) in by_session {
        let session_key = root.join(&id).expect("a valid record key");
        let expired = match storage.get_record(&session_key).await? {
            Some(b) => serde_json::from_slice::<SessionRecord>(&b.value)
                .map_or(true, |r| r.expiry.saturating_add(grace.as_secs()) < now),
            None => true, // parts of a session whose record is gone
        };
        if !expired {
            continue;
        }
        for k in keys.iter().filter(|k| **k != session_key) {
            if let Some(b) = storage.get_record(k).await?
                && let Ok(part) = serde_json::from_slice::<PartRecord>(&b.value)
            {
                storage.abort(&UploadId(part.upload)).await?;
            }
            storage.delete_record(k).await?;
        }
        storage.delete_record(&session_key).await?;
        tracing::info!(session = %id, "expired upload session swept");
        swept.push(id);
    }
    Ok(swept)
}
