//! The JSON API endpoints beside uploads and delivery: `POST <base>/signatures`
//! (PROTOCOL.md §6).

pub(crate) mod signatures;

/// Reads a small request body (a JSON document) whole, refusing more than `limit` bytes:
/// 400 `bad_request` when it is larger or cannot be read.
pub(crate) async fn read_small<B>(
    body: B,
    limit: usize,
) -> Result<bytes::Bytes, crate::error::ApiError>
where
    B: http_body::Body,
    B::Error: Into<crate::body::BoxError>,
{
    use http_body_util::BodyExt;
    Ok(http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| {
            crate::error::ApiError::new(
                crate::error::ErrorKind::BadRequest,
                format!("the request body could not be read or is larger than {limit} bytes"),
            )
        })?
        .to_bytes())
}
