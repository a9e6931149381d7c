//! `POST <base>/signatures`: signed URLs for ittybit's SDKs (PROTOCOL.md §6).
//!
//! Body `{filename, folder?, expiry?, method?}` (method `get` | `put`, default `get`; expiry
//! default now + 1 h) → `{domain, filename, folder, expiry, method, signature, url}`.

use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::{Deserialize, Serialize};

use crate::auth::{SignedMethod, Signer};
use crate::body::{BoxError, ResponseBody};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};
use crate::path::FilePath;
use crate::response::Answer;

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The request body. Fields it does not know are ignored, so that a client sending one more
/// field (an SDK newer than this crate) still gets its URL.
#[derive(Deserialize)]
struct CreateSignature {
    filename: String,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    expiry: Option<u64>,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Serialize)]
struct SignatureObject {
    domain: String,
    filename: String,
    folder: Option<String>,
    expiry: u64,
    method: SignedMethod,
    signature: String,
    url: String,
}

/// Answers a `POST /signatures` whose bearer key the auth layer has verified.
pub(crate) async fn create<B>(
    cfg: &Config,
    req: Request<B>,
    answer: &Answer<'_>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    sign(cfg, req)
        .await
        .map(|obj| answer.data(StatusCode::OK, &obj, Some("signature"), None))
}

async fn sign<B>(cfg: &Config, req: Request<B>) -> Result<SignatureObject, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let base = cfg.base_url(req.headers());
    let bytes = super::read_small(req.into_body(), MAX_BODY).await?;
    let body: CreateSignature = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("the body must be a JSON object {{filename, folder?, expiry?, method?}}: {e}"),
        )
    })?;
    let method = match body.method.as_deref() {
        None => SignedMethod::Get,
        Some(m) => SignedMethod::from_param(&m.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::new(ErrorKind::BadRequest, "method must be \"get\" or \"put\"")
        })?,
    };
    let path = FilePath::from_parts(body.folder.as_deref(), &body.filename)?;
    let now = crate::auth::unix_now();
    let expiry = body
        .expiry
        .unwrap_or_else(|| now.saturating_add(cfg.signature_ttl.as_secs()));
    let signer = Signer::new(cfg.signing_key()?.clone(), base.clone());
    let signed = signer.sign(&path, method, expiry);
    Ok(SignatureObject {
        domain: origin(&base),
        filename: path.filename().to_owned(),
        folder: path.folder().map(str::to_owned),
        expiry,
        method,
        signature: signed.signature,
        url: signed.url,
    })
}

/// `scheme://host[:port]` of a base URL.
fn origin(base: &str) -> String {
    match base.find("://") {
        Some(i) => {
            let after = &base[i + 3..];
            let end = after.find('/').map_or(base.len(), |j| i + 3 + j);
            base[..end].to_owned()
        }
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins() {
        assert_eq!(super::origin("http://a:8080/files"), "http://a:8080");
        assert_eq!(super::origin("https://x.y"), "https://x.y");
        assert_eq!(super::origin("weird"), "weird");
    }
}
