//! The crate's three pieces, each used alone over a real server on loopback: the signature
//! layer in front of the app's own handlers, the upload handler behind the app's own auth
//! (no API key at all; also as `examples/custom_auth.rs` ships it), and the conditions layer
//! at two positions in the stack.

mod common;

/// The example's own middleware (its `main` is not used here).
#[allow(dead_code)]
#[path = "../examples/custom_auth.rs"]
mod custom_auth;

use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::routing::{get, put};
use common::{KEY, now, sandbox, serve, sign_url};
use http::StatusCode;
use serde_json::Value;
use tower_uploads::auth::{ApiKey, AuthPolicy, KeySet, SignatureLayer, SignedMethod, Verifier};
use tower_uploads::conditions::{Conditions, ConditionsLayer};
use tower_uploads::{FsStorage, Grant, Scope, Uploads};

fn policy() -> AuthPolicy {
    AuthPolicy::new(Verifier::new(KeySet::new([ApiKey::new(KEY)])))
}

async fn kind(res: reqwest::Response) -> (StatusCode, Option<String>) {
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
    let body = res.bytes().await.unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = doc
        .pointer("/error/kind")
        .or_else(|| doc.get("kind"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (status, kind)
}

/// The signature layer in front of plain axum handlers: they see the verified grant.
#[tokio::test]
async fn signature_layer_guards_the_apps_own_handlers() {
    let describe = |req: Request| async move {
        match req.extensions().get::<Grant>() {
            Some(g) if g.is_admin() => "api key".to_owned(),
            Some(g) => match g.scope() {
                Scope::File(p) => format!("file {p:?}"),
                other => format!("{other:?}"),
            },
            None => "no grant".to_owned(),
        }
    };
    let app: Router = Router::new()
        .route("/files/{*path}", put(describe).get(describe))
        .route("/health", get(|| async { "ok" }))
        .layer(SignatureLayer::new(policy().prefix("/files")));
    let (addr, _task) = serve(app).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // No credentials: refused before the handler runs.
    let res = http
        .put(format!("{base}/files/a.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        kind(res).await,
        (StatusCode::UNAUTHORIZED, Some("token_missing".into()))
    );
    // A signed URL: the handler sees a grant for that one file.
    let url = sign_url(
        KEY,
        &format!("{base}/files"),
        "d/a b.txt",
        SignedMethod::Put,
        now() + 60,
    );
    let res = http.put(url).body("x").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), r#"file "d/a b.txt""#);
    // A signed URL for another file, or expired: refused.
    let url = sign_url(
        KEY,
        &format!("{base}/files"),
        "other.txt",
        SignedMethod::Put,
        now() + 60,
    );
    let url = url.replace("other.txt", "a.txt");
    let res = http.put(url).body("x").send().await.unwrap();
    assert_eq!(
        kind(res).await,
        (StatusCode::FORBIDDEN, Some("signature_invalid".into()))
    );
    let url = sign_url(
        KEY,
        &format!("{base}/files"),
        "a.txt",
        SignedMethod::Put,
        now() - 5,
    );
    let res = http.put(url).body("x").send().await.unwrap();
    assert_eq!(
        kind(res).await,
        (StatusCode::FORBIDDEN, Some("signature_expired".into()))
    );
    // The API key.
    let res = http
        .put(format!("{base}/files/a.txt"))
        .bearer_auth(KEY)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "api key");
    // Public delivery and routes outside the prefix pass untouched.
    let res = http
        .get(format!("{base}/files/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "no grant");
    let res = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");
}

/// The upload handler behind the app's own auth, with no API key configured: each user
/// writes and reads only under `files/<user>/`; nothing else is stored.
#[tokio::test]
async fn upload_handler_behind_the_apps_own_auth() {
    let (_sandbox, data) = sandbox();
    let uploads = Uploads::new(FsStorage::new(&data).unwrap()).private(true);
    let app: Router = Router::new()
        .fallback_service(uploads.handler())
        .layer(middleware::from_fn(custom_auth::user_grant));
    let (addr, _task) = serve(app).await;
    let base = format!("http://{addr}");
    check_own_auth(&base, &data).await;
}

/// A child process killed when dropped (also when the test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same, with the example's binary.
#[tokio::test]
async fn custom_auth_example() {
    let (_sandbox, data) = sandbox();
    let mut child = Child(
        std::process::Command::new(common::example_binary("custom_auth"))
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    check_own_auth(&base, &data).await;
}

async fn check_own_auth(base: &str, data: &std::path::Path) {
    let http = reqwest::Client::new();
    let put = |path: &str, user: Option<&str>| {
        let mut req = http.put(format!("{base}/{path}")).body("hello");
        if let Some(user) = user {
            req = req.header("x-user", user);
        }
        req.send()
    };
    // Her own folder: stored, with the File object.
    let res = put("files/alice/a.txt", Some("alice")).await.unwrap();
    assert_eq!(res.status(), 201);
    let doc: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(doc["data"]["filesize"], 5);
    // Resumable chunks too.
    for (range, body) in [("bytes 3-5/6", "def"), ("bytes 0-2/6", "abc")] {
        let res = http
            .put(format!("{base}/files/alice/big.bin"))
            .header("x-user", "alice")
            .header("content-range", range)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            res.status() == 202 || res.status() == 201,
            "{range}: {}",
            res.status()
        );
    }
    // Someone else's folder, the folder itself, a path out of it, another user's signed
    // URL shape, an API key: 403 or 401, nothing stored.
    for (path, user, want) in [
        (
            "files/bob/a.txt",
            Some("alice"),
            (StatusCode::FORBIDDEN, Some("forbidden")),
        ),
        (
            "files/alice",
            Some("alice"),
            (StatusCode::FORBIDDEN, Some("forbidden")),
        ),
        (
            "files/alicex/a.txt",
            Some("alice"),
            (StatusCode::FORBIDDEN, Some("forbidden")),
        ),
        (
            "files/alice/..%2Fbob/a.txt",
            Some("alice"),
            (StatusCode::BAD_REQUEST, Some("path_invalid")),
        ),
        (
            "x.txt",
            Some("alice"),
            (StatusCode::FORBIDDEN, Some("forbidden")),
        ),
        (
            "files/alice/b.txt",
            Some("../alice"),
            (StatusCode::UNAUTHORIZED, None),
        ),
        ("files/alice/b.txt", None, (StatusCode::UNAUTHORIZED, None)),
    ] {
        let res = put(path, user).await.unwrap();
        let got = kind(res).await;
        assert_eq!((got.0, got.1.as_deref()), want, "{path} as {user:?}");
    }
    let res = http
        .post(format!("{base}/signatures"))
        .header("x-user", "alice")
        .body(r#"{"filename": "a.txt"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(kind(res).await.0, StatusCode::FORBIDDEN);
    // Files only: the storage's bookkeeping (a private upload's chunk records) aside.
    let stored = common::list_files(data)
        .into_iter()
        .filter(|f| !f.starts_with(common::RESERVED))
        .collect::<Vec<_>>();
    assert_eq!(stored, ["files/alice/a.txt", "files/alice/big.bin"]);
    // Reading (private delivery): hers only.
    let get = |path: &str, user: &str| {
        http.get(format!("{base}/{path}"))
            .header("x-user", user)
            .send()
    };
    let res = get("files/alice/big.bin", "alice").await.unwrap();
    assert_eq!(res.text().await.unwrap(), "abcdef");
    let res = get("files/alice/a.txt", "bob").await.unwrap();
    assert_eq!(
        kind(res).await,
        (StatusCode::FORBIDDEN, Some("forbidden".into()))
    );
}

/// Conditions at two positions: outside the auth (an oversized upload is refused before
/// its credentials are looked at) and inside it (a request without credentials learns
/// nothing of them); in both, the handler enforces the rules the layer attached on the
/// complete file (a `kind` rule) and discards the bytes.
#[tokio::test]
async fn conditions_layer_in_two_positions() {
    let conditions = || {
        Conditions::parse(
            br#"{"operator": "&&", "rules": [
                {"key": "filesize", "operator": "<=", "value": 100},
                {"key": "kind", "operator": "==", "value": "image"}]}"#,
        )
        .unwrap()
    };
    for outside in [true, false] {
        let (_sandbox, data) = sandbox();
        let uploads = Uploads::new(FsStorage::new(&data).unwrap()).key(KEY);
        let app: Router = if outside {
            // Router::layer: the last added runs first.
            Router::new()
                .fallback_service(uploads.handler())
                .layer(SignatureLayer::new(uploads.auth_policy()))
                .layer(ConditionsLayer::new(conditions()))
        } else {
            Router::new()
                .fallback_service(uploads.handler())
                .layer(ConditionsLayer::new(conditions()))
                .layer(SignatureLayer::new(uploads.auth_policy()))
        };
        let (addr, _task) = serve(app).await;
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();

        let big = vec![b'x'; 1000];
        let res = http
            .put(format!("{base}/a.png"))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let want = if outside {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("conditions_failed".into()),
            )
        } else {
            (StatusCode::UNAUTHORIZED, Some("token_missing".into()))
        };
        assert_eq!(kind(res).await, want, "outside: {outside}");
        let res = http
            .put(format!("{base}/a.png"))
            .bearer_auth(KEY)
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(kind(res).await.1.as_deref(), Some("conditions_failed"));
        // Small, but not an image: refused on the complete file.
        let res = http
            .put(format!("{base}/a.png"))
            .bearer_auth(KEY)
            .body("text")
            .send()
            .await
            .unwrap();
        assert_eq!(
            kind(res).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("conditions_failed".into())
            )
        );
        assert!(common::list_files(&data).is_empty(), "outside: {outside}");
        // A PNG passes.
        let png = common::tiny_png(2, 2);
        let res = http
            .put(format!("{base}/a.png"))
            .bearer_auth(KEY)
            .body(png)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "outside: {outside}");
    }
}
