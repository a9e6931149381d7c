//! The app's hooks (`tower_uploads::hooks`) over a real server: a completion hook that adds
//! metadata or rejects (nothing kept, the hook's status and message answered), published,
//! chunk and expiry events, and the same on upload sessions.

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_uploads::file::FileObject;
use tower_uploads::hooks::{Accept, ChunkEvent, Completion, ExpiredEvent, Rejection, UploadHooks};

/// Rejects everything under `private/`, tags everything else, and records every event.
#[derive(Default)]
struct Recorder {
    completions: Mutex<Vec<Completion>>,
    published: Mutex<Vec<FileObject>>,
    chunks: Mutex<Vec<ChunkEvent>>,
    expired: Mutex<Vec<ExpiredEvent>>,
}

#[async_trait::async_trait]
impl UploadHooks for Recorder {
    async fn on_complete(&self, c: &Completion) -> Result<Accept, Rejection> {
        self.completions.lock().unwrap().push(c.clone());
        if c.path.as_str().starts_with("private/") {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "the app does not take files under private/",
            ));
        }
        Ok(Accept::with_metadata([
            ("checked_by", Value::from("app")),
            ("size_kib", Value::from(c.file.filesize / 1024)),
        ]))
    }
    async fn on_published(&self, file: &FileObject) {
        self.published.lock().unwrap().push(file.clone());
    }
    async fn on_chunk(&self, e: &ChunkEvent) {
        self.chunks.lock().unwrap().push(e.clone());
    }
    async fn on_expired(&self, e: &ExpiredEvent) {
        self.expired.lock().unwrap().push(e.clone());
    }
}

async fn chunk(server: &TestServer, path: &str, range: &str, body: Vec<u8>) -> (u16, Value) {
    let (s, _, v) = json(
        client()
            .put(server.url(path))
            .header("authorization", server.bearer())
            .header("content-range", range)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (s, v)
}

#[tokio::test]
async fn completion_hook_adds_metadata_or_rejects() {
    let rec = Arc::new(Recorder::default());
    let server = start_with({
        let rec = rec.clone();
        move |u| u.hooks(rec)
    })
    .await;

    // Accepted: the File object carries the hook's metadata, and on_published saw it.
    let res = server.put("docs/a.bin", pattern(4096, 1)).await;
    assert_eq!(res.status(), 201);
    let (_, _, v) = json(res).await;
    let file = data(&v);
    assert_eq!(
        file["metadata"],
        json!({"checked_by": "app", "size_kib": 4}),
        "{v}"
    );
    let published = rec.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, file["id"].as_str().unwrap());
    assert_eq!(published[0].metadata.as_ref().unwrap()["checked_by"], "app");

    // Rejected: the hook's status and message, nothing kept, nothing published.
    let before = server.entries();
    let res = server.put("private/b.bin", pattern(1000, 2)).await;
    let (s, _, v) = json(res).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(kind(&v), Some("upload_rejected"));
    assert!(
        v.to_string().contains("does not take files under private/"),
        "{v}"
    );
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    server.assert_nothing_written(&before, "a rejected simple upload");
    assert_eq!(rec.published.lock().unwrap().len(), 1);
    assert_eq!(server.get("private/b.bin").await.status(), 404);
}

#[tokio::test]
async fn hooks_on_resumable_uploads() {
    let rec = Arc::new(Recorder::default());
    let server = start_with({
        let rec = rec.clone();
        move |u| u.hooks(rec)
    })
    .await;
    let file = pattern(300_000, 3);
    // Two chunks that do not complete, then the last one.
    let (s, _) = chunk(
        &server,
        "big.bin",
        "bytes 100000-199999/300000",
        file[100_000..200_000].to_vec(),
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = chunk(
        &server,
        "big.bin",
        "bytes 0-99999/300000",
        file[..100_000].to_vec(),
    )
    .await;
    assert_eq!(s, 202);
    {
        let chunks = rec.chunks.lock().unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].range, 100_000..200_000);
        assert_eq!((chunks[1].received, chunks[1].total), (200_000, 300_000));
    }
    let (s, v) = chunk(
        &server,
        "big.bin",
        "bytes 200000-299999/300000",
        file[200_000..].to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(data(&v)["metadata"]["checked_by"], "app");
    assert_eq!(
        rec.completions.lock().unwrap().len(),
        1,
        "on_complete runs once per upload"
    );
    assert_eq!(
        rec.chunks.lock().unwrap().len(),
        2,
        "not for the completing chunk"
    );
    assert_eq!(server.read("big.bin").unwrap(), file);

    // A rejected resumable upload is discarded: the status query shows nothing received.
    let (s, _) = chunk(&server, "private/v.bin", "bytes 0-9/20", vec![1; 10]).await;
    assert_eq!(s, 202);
    let (s, v) = chunk(&server, "private/v.bin", "bytes 10-19/20", vec![2; 10]).await;
    assert_eq!((s, kind(&v)), (403, Some("upload_rejected")), "{v}");
    let (s, v) = chunk(&server, "private/v.bin", "bytes */20", vec![]).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(data(&v)["ranges"], json!([]), "{v}");
    assert!(server.wait_bookkeeping_empty(Duration::from_secs(5)).await);
    assert!(server.read("private/v.bin").is_none());
}

#[tokio::test]
async fn expiry_events() {
    let rec = Arc::new(Recorder::default());
    let server = start_with({
        let rec = rec.clone();
        move |u| u.hooks(rec)
    })
    .await;
    let (s, _) = chunk(&server, "left.bin", "bytes 0-9/100", vec![0; 10]).await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let storage: Arc<dyn tower_uploads::storage::Storage> =
        Arc::new(tower_uploads::FsStorage::new(&server.data).unwrap());
    let hooks: Arc<Recorder> = rec.clone();
    let report =
        tower_uploads::service::sweep_with(&storage, Duration::from_millis(10), Some(&hooks))
            .await
            .unwrap();
    assert_eq!(report.swept, 1);
    let expired = rec.expired.lock().unwrap().clone();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0].path.as_ref().map(|p| p.as_str()),
        Some("left.bin")
    );
}

#[tokio::test]
async fn hooks_on_upload_sessions() {
    let server = start_with(|u| {
        u.on_complete(|c: Completion| async move {
            // Only images, and the session's user is copied into a column of its own.
            if c.file.kind != "image" {
                return Err(Rejection::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "images only",
                ));
            }
            assert!(c.session.as_deref().is_some_and(|s| s.starts_with("ses_")));
            let user = c
                .file
                .metadata
                .as_ref()
                .and_then(|m| m.get("user").cloned());
            Ok(Accept::with_metadata([(
                "owner",
                user.unwrap_or(Value::Null),
            )]))
        })
    })
    .await;
    let res = client()
        .post(server.url("uploads"))
        .header("authorization", server.bearer())
        .body(json!({"metadata": {"user": "u7"}}).to_string())
        .send()
        .await
        .unwrap();
    let (_, _, v) = json(res).await;
    let url = v["data"]["url"].as_str().unwrap().to_owned();
    let form = |name: &str, ct: &str, body: &[u8]| {
        let mut b = format!("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {ct}\r\n\r\n").into_bytes();
        b.extend_from_slice(body);
        b.extend_from_slice(b"\r\n--b--\r\n");
        b
    };
    let post = |body: Vec<u8>| {
        client()
            .post(&url)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
    };
    let (s, _, v) = json(post(form("a.txt", "text/plain", b"text")).await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (415, Some("upload_rejected")),
        "{v}"
    );
    // The key was not spent by the rejected upload.
    let (s, _, v) = json(
        post(form("a.png", "image/png", &tiny_png(2, 2)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["metadata"],
        json!({"user": "u7", "owner": "u7"}),
        "{v}"
    );
}

/// The user that the app's own middleware found, as a request extension.
#[derive(Clone)]
struct User(String);

/// Hooks see the extensions of the request that completed the upload: the app's own auth
/// middleware (here: a `MapRequest` reading `X-User`) hands its user to `on_complete`, which
/// puts it into the metadata — for a simple PUT, the completing chunk of a `Content-Range`
/// upload, and an upload-session form.
#[tokio::test]
async fn hooks_see_the_request_extensions() {
    let (_sandbox, dir) = sandbox();
    let uploads = tower_uploads::Uploads::new(tower_uploads::FsStorage::new(&dir).unwrap())
        .key(KEY)
        .on_complete(|c: Completion| async move {
            let user = c.extensions.get::<User>().map(|u| u.0.clone());
            Ok(Accept::with_metadata([(
                "uploaded_by",
                user.map(Value::from).unwrap_or(Value::Null),
            )]))
        });
    let service = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<hyper::body::Incoming>| {
            if let Some(user) = req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
                let user = User(user.to_owned());
                req.extensions_mut().insert(user);
            }
            req
        })
        .service(uploads.service());
    let (addr, _task) = serve(service).await;
    let url = |p: &str| format!("http://{addr}/{p}");
    let put = |p: &str, user: &str, range: Option<&str>, body: Vec<u8>| {
        let mut req = client()
            .put(url(p))
            .header("authorization", format!("Bearer {KEY}"))
            .header("x-user", user)
            .body(body);
        if let Some(r) = range {
            req = req.header("content-range", r);
        }
        req.send()
    };

    let (s, _, v) = json(put("a.bin", "alice", None, pattern(100, 1)).await.unwrap()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(data(&v)["metadata"], json!({"uploaded_by": "alice"}));

    let file = pattern(200, 2);
    let (s, _, _) = json(
        put(
            "b.bin",
            "alice",
            Some("bytes 0-99/200"),
            file[..100].to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 202);
    let (s, _, v) = json(
        put(
            "b.bin",
            "bob",
            Some("bytes 100-199/200"),
            file[100..].to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        data(&v)["metadata"],
        json!({"uploaded_by": "bob"}),
        "the completing request's user"
    );

    let res = client()
        .post(url("uploads"))
        .header("authorization", format!("Bearer {KEY}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let (_, _, v) = json(res).await;
    let session = v["data"]["url"].as_str().unwrap().to_owned();
    let mut form =
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.bin\"\r\n\r\n"
            .to_vec();
    form.extend_from_slice(&pattern(50, 3));
    form.extend_from_slice(b"\r\n--b--\r\n");
    let res = client()
        .post(&session)
        .header("content-type", "multipart/form-data; boundary=b")
        .header("x-user", "carol")
        .body(form)
        .send()
        .await
        .unwrap();
    let (s, _, v) = json(res).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["metadata"],
        json!({"uploaded_by": "carol"}),
        "{v}"
    );
}
