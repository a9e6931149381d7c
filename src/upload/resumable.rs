//! Resumable uploads, ittybit's frontend: `PUT` with `Content-Range` (PROTOCOL.md §4). It
//! reads the header into a [`ChunkSpec`] (or a status query) and hands the chunk to the
//! protocol-neutral core (`chunk.rs`); the handler renders its outcome: `202` with the
//! ranges, or `201` with the File object.

use http::{Request, StatusCode, header};
use http_body::Body;
use std::sync::Arc;

use super::chunk::{ChunkSpec, receive_chunk, status};
use super::{Outcome, check_conditions, conditions_of, content_length, too_large};
use crate::body::BoxError;
use crate::conditions::Facts;
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::headers::content_range::{self, ContentRange};
use crate::path::FilePath;

/// Answers a chunk or a status query whose credentials the auth layer has verified.
pub(crate) async fn put_chunk<B>(
    cfg: &Arc<Config>,
    req: Request<B>,
    path: &FilePath,
) -> Result<Outcome, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let header_value = req
        .headers()
        .get(header::CONTENT_RANGE)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let range = content_range::parse(&header_value)?;
    match range {
        ContentRange::Status { total } => {
            if total > cfg.max_file_size {
                return Err(too_large(cfg.max_file_size, "declared total"));
            }
            if content_length(req.headers())?.unwrap_or(0) > 0 {
                return Err(ApiError::new(
                    ErrorKind::RangeInvalid,
                    "a status query (`bytes */total`) has an empty body",
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
            let conditions = conditions_of(cfg, req.extensions());
            let (parts, _) = req.into_parts();
            status(cfg, &parts, path, total, &conditions).await
        }
        ContentRange::Chunk { start, end, total } => {
            range.validate()?;
            if total > cfg.max_file_size {
                return Err(too_large(cfg.max_file_size, "declared total"));
            }
            check_conditions(
                &conditions_of(cfg, req.extensions()),
                &Facts::declared(Some(total)),
            )?;
            let mut max_len = range.max_len().min(cfg.max_request_size);
            let len = content_length(req.headers())?;
            if let Some(len) = len {
                if len > cfg.max_request_size {
                    return Err(too_large(cfg.max_request_size, "chunk"));
                }
                max_len = len;
            } else if end - start > cfg.max_request_size {
                return Err(too_large(cfg.max_request_size, "chunk"));
            }
            // 400/416 before a byte is read
            let spec = spec_of(range, len, max_len)?;
            receive_chunk(cfg, path, spec, req).await
        }
    }
}

/// The [`ChunkSpec`] of a `Content-Range` chunk: from `start`, the range its
/// `Content-Length` settles, or, without one, both readings of the header that fit
/// (inclusive and exclusive end), the body's length choosing.
fn spec_of(range: ContentRange, len: Option<u64>, max_len: u64) -> Result<ChunkSpec, ApiError> {
    let ContentRange::Chunk { start, end, total } = range else {
        return Err(content_range::RangeError::Invalid.into());
    };
    let candidates = match len {
        Some(len) => vec![range.resolve(len)?],
        None => [
            (end < total).then(|| start..end + 1),
            (start < end && end <= total).then_some(start..end),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    let settle = move |len: u64| range.resolve(len).map_err(ApiError::from);
    Ok(ChunkSpec::new(start, total, max_len, candidates, settle))
}
