//! The configuration shared by every request of one [`Uploads`](crate::Uploads) stack: what
//! the handler, the upload core, sessions and the API read (its own module, so that they
//! depend on it and not on the service that builds it).

use http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::KeySet;
use crate::path::FilePath;
use crate::response::ResponseStyle;
use crate::storage::Storage;

/// Default per-request body limit: 64 MiB (ittybit's simple-upload limit).
pub const DEFAULT_MAX_REQUEST_SIZE: u64 = 64 << 20;
/// Default file-size limit: 1 GiB (ittybit's default per-file limit).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
/// The largest file-size limit that can be configured: 5 TiB.
pub const MAX_FILE_SIZE_CEILING: u64 = 5 << 40;
/// Default body idle timeout: a request body with no byte for 60 s fails with 408.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a request needs to know about the stack it goes through.
pub(crate) struct Config {
    pub storage: Arc<dyn Storage>,
    /// The API keys (`None`: none configured; requests are authorized by the app's grants).
    pub keys: Option<KeySet>,
    /// Public URL prefix of files, without a trailing `/` (`None`: from the `Host` header).
    pub base_url: Option<String>,
    /// The mount prefix as seen in request URIs: `""` or `/x` (no trailing `/`).
    pub prefix: String,
    pub max_request_size: u64,
    pub max_file_size: u64,
    pub style: ResponseStyle,
    pub signature_ttl: Duration,
    /// The app's conditions on every upload.
    pub conditions: Option<Arc<crate::conditions::Conditions>>,
    pub upload_ttl: Duration,
    /// Lifetime of upload-session keys (`POST /uploads`).
    pub session_ttl: Duration,
    /// The app's hooks.
    pub hooks: Option<Arc<dyn crate::hooks::UploadHooks>>,
    /// A request body with no byte for this long fails with 408 (`None`: never).
    pub body_idle_timeout: Option<Duration>,
    /// At most this many resumable uploads in progress at once; a chunk that would start
    /// one more gets 429 (`None`: no cap).
    pub max_incomplete_uploads: Option<usize>,
    /// Private delivery: a write credential must learn nothing of a published file
    /// (PROTOCOL.md §4).
    pub private: bool,
    /// How files are delivered (scripts and style sheets inert unless the app opts in).
    pub delivery: crate::delivery::DeliveryOptions,
    /// Trim glibc's free memory after a burst ([`Uploads::trim_allocator`](crate::Uploads::trim_allocator)).
    pub trim_allocator: bool,
}

impl Config {
    /// The app's hooks, if any.
    pub fn hooks(&self) -> Option<&dyn crate::hooks::UploadHooks> {
        self.hooks.as_deref()
    }

    /// The public base URL for a request: the configured one, or `http://<Host><prefix>`.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        let mut url = String::new();
        self.push_base_url(&mut url, headers);
        url
    }

    /// Appends [`Config::base_url`] to `url`.
    fn push_base_url(&self, url: &mut String, headers: &HeaderMap) {
        if let Some(base) = &self.base_url {
            url.push_str(base);
            return;
        }
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            })
            .unwrap_or("localhost");
        url.push_str("http://");
        url.push_str(host);
        url.push_str(&self.prefix);
    }

    /// The absolute URL of a file.
    pub fn file_url(&self, headers: &HeaderMap, path: &FilePath) -> String {
        let path = path.to_uri_path();
        let mut url = String::with_capacity(64 + path.len());
        self.push_base_url(&mut url, headers);
        url.push('/');
        url.push_str(&path);
        url
    }

    /// The key that signs URLs and session keys: the first API key.
    ///
    /// # Errors
    /// 403 `forbidden` when no key is configured.
    pub fn signing_key(&self) -> Result<&crate::auth::ApiKey, crate::error::ApiError> {
        self.keys.as_ref().map(KeySet::primary).ok_or_else(|| {
            crate::error::ApiError::new(
                crate::error::ErrorKind::Forbidden,
                "no API key is configured: this stack signs no URLs and opens no upload sessions",
            )
        })
    }

    /// The path under the mount prefix (with its leading `/`), if `path` is under it.
    pub fn strip_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        crate::route::strip_prefix(&self.prefix, path)
    }
}
