//! Integration tests over a real server on loopback: paths (PROTOCOL.md §1), authorization
//! (§2), simple uploads (§3), responses and `POST /signatures` (§6), delivery (§8), and the
//! layer form inside an axum app.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_uploads::auth::{SignedMethod, signature};
use tower_uploads::path::FilePath;
use tower_uploads::{FsStorage, Uploads};

/// A raw `PUT` request with the bearer key and a small body.
fn raw_put(target: &str, auth: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut req = format!("PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn raw_get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `file_` / `med_` + at least 12 alphanumerics.
fn assert_id(v: &Value, prefix: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("id not a string: {v}"));
    let rest = s
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{s} lacks {prefix}"));
    assert!(
        rest.len() >= 12 && rest.bytes().all(|b| b.is_ascii_alphanumeric()),
        "bad id {s}"
    );
}

/// RFC 3339 in UTC with a `Z`.
fn assert_rfc3339_z(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("time not a string: {v}"));
    assert!(s.ends_with('Z'), "{s} does not end in Z");
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// §1 Paths
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_refused_and_write_nothing() {
    let srv = start().await;
    assert_eq!(srv.put("keep/existing.txt", "keep").await.status(), 201);
    let before = srv.entries();
    let outside = srv.sandbox.path().parent().expect("tmp").to_path_buf();
    let escape = format!(
        "escape-{}",
        srv.sandbox.path().file_name().unwrap().to_string_lossy()
    );
    let long = "a".repeat(1025);
    let long_encoded = "%61".repeat(1025);
    let targets: Vec<String> = vec![
        "/".into(),
        "/a/../b".into(),
        format!("/../{escape}"),
        format!("/../../{escape}"),
        format!("/keep/../../../{escape}"),
        format!("/%2e%2e/{escape}"),
        format!("/%2E%2E/%2e%2e/{escape}"),
        format!("/a/%2e%2e/%2e%2e/%2e%2e/{escape}"),
        format!("/..%2F{escape}"),
        format!("/..%2F..%2F{escape}"),
        format!("/keep%2F..%2F..%2F{escape}"),
        "/a//b".into(),
        "/a%2F%2Fb".into(),
        "/a/./b".into(),
        "/./a".into(),
        "/.".into(),
        "/..".into(),
        "/folder/".into(),
        "/keep/".into(),
        "/a%2F".into(),
        "/a%00b".into(),
        "/a.txt%00.png".into(),
        "/a%5Cb".into(),
        format!("/..%5C..%5C{escape}"),
        "/a%0Ab".into(),
        "/a%0D%0AX-Injected:%201".into(),
        "/a%09b".into(),
        "/a%7Fb".into(),
        "/a%C2%85b".into(),
        format!("/{long}"),
        format!("/{long_encoded}"),
        format!("/f/{}", "b".repeat(1023)),
        "/a%FFb".into(),
        "/%C3".into(),
        format!("/%C0%AE%C0%AE/{escape}"),
        "/.tower-uploads/x".into(),
        "/.tower-uploads".into(),
        "/.tower-uploads/staging/s.abc".into(),
        "/.tower-uploads/meta/x.json".into(),
        "/%2Etower-uploads/locks/00".into(),
    ];
    let mut failures = Vec::new();
    for target in &targets {
        let res = srv
            .raw(&raw_put(target, Some(&srv.bearer()), b"hello"))
            .await;
        let body = res.json();
        let shown = if target.len() > 60 {
            format!("{}…", &target[..60])
        } else {
            target.clone()
        };
        if res.status != 400 || kind(&body) != Some("path_invalid") {
            failures.push(format!(
                "PUT {shown}: {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            ));
        }
        if srv.entries() != before {
            failures.push(format!("PUT {shown}: wrote {:?}", srv.entries()));
        }
        for sub in ["staging", "uploads", "tmp"] {
            if !srv.bookkeeping(sub).is_empty() {
                failures.push(format!(
                    "PUT {shown}: left {sub} {:?}",
                    srv.bookkeeping(sub)
                ));
            }
        }
    }
    srv.assert_nothing_written(&before, "hostile paths");
    assert!(!outside.join(&escape).exists(), "escaped the sandbox");
    assert_eq!(srv.read("keep/existing.txt").as_deref(), Some(&b"keep"[..]));
    assert!(
        failures.is_empty(),
        "hostile paths:\n{}",
        failures.join("\n")
    );
}

/// A hostile path in a URL whose signature holds (signed over the raw path) is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_path_with_valid_signature_is_refused() {
    let srv = start().await;
    let before = srv.entries();
    let expiry = now() + 600;
    let mut failures = Vec::new();
    for raw in ["a/../b", "%2e%2e/escape", "a%00b", "a//b", "x/"] {
        let sig = signature(KEY.as_bytes(), raw, expiry, Some("put"));
        let target = format!("/{raw}?expiry={expiry}&method=put&signature={sig}");
        let res = srv.raw(&raw_put(&target, None, b"hello")).await;
        if res.status != 400 || kind(&res.json()) != Some("path_invalid") {
            failures.push(format!(
                "{raw}: {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            ));
        }
    }
    srv.assert_nothing_written(&before, "signed hostile paths");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bookkeeping directory is never served, whatever the spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_directory_is_not_served() {
    let srv = start().await;
    assert_eq!(srv.put("a.txt", "x").await.status(), 201);
    let mut failures = Vec::new();
    for target in [
        "/.tower-uploads/locks/00",
        "/%2Etower-uploads/locks/00",
        "/.tower-uploads",
        "/.tower-uploads/meta",
    ] {
        let res = srv.raw(&raw_get(target)).await;
        let k = kind(&res.json()).map(str::to_owned);
        let ok = (res.status == 400 && k.as_deref() == Some("path_invalid"))
            || (res.status == 404 && k.as_deref() == Some("file_not_found"));
        if !ok {
            failures.push(format!(
                "GET {target}: {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_paths_are_stored_at_their_decoded_path() {
    let srv = start().await;
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("hello.txt", None, "hello.txt"),
        (
            "my folder/sub dir/café photo.txt",
            Some("my folder/sub dir"),
            "café photo.txt",
        ),
        ("日本語/ファイル.txt", Some("日本語"), "ファイル.txt"),
        ("odd/a+b (1)&c=d.txt", Some("odd"), "a+b (1)&c=d.txt"),
        ("..a/b..", Some("..a"), "b.."),
        (".hidden", None, ".hidden"),
        (
            "deep/er/and/deeper/x.bin",
            Some("deep/er/and/deeper"),
            "x.bin",
        ),
    ];
    for (i, (path, folder, filename)) in cases.iter().enumerate() {
        let wire = FilePath::new(*path).unwrap().to_uri_path();
        let content = format!("content {i} of {path}");
        let res = srv.put(&wire, content.clone()).await;
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, _, body) = json(res).await;
        assert_eq!(status, 201, "{path}: {body}");
        let file = data(&body);
        assert_eq!(file["folder"], json!(folder), "{path}");
        assert_eq!(file["filename"], json!(filename), "{path}");
        let url = srv.url(&wire);
        assert_eq!(file["url"], json!(url), "{path}");
        assert_eq!(location.as_deref(), Some(url.as_str()), "{path}");
        assert_eq!(
            srv.read(path).as_deref(),
            Some(content.as_bytes()),
            "{path} not at <data>/{path}"
        );
        let got = client().get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        assert_eq!(got.bytes().await.unwrap(), content.as_bytes(), "{path}");
    }
    // `%2F` decodes to a separator: `a%2Fb.txt` is the file `b.txt` in folder `a`.
    let (status, _, body) = json(srv.put("enc%2Fb.txt", "slash").await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(data(&body)["folder"], json!("enc"));
    assert_eq!(srv.read("enc/b.txt").as_deref(), Some(&b"slash"[..]));
    // Exactly 1024 bytes is allowed.
    let max = format!("m/{}", "c".repeat(1022));
    assert_eq!(max.len(), 1024);
    let (status, _, body) = json(srv.put(&max, "max").await).await;
    // A 1022-byte segment exceeds NAME_MAX on most filesystems: 400 path_invalid is fine too.
    assert!(
        status == 201 || (status == 400 && kind(&body) == Some("path_invalid")),
        "{status} {body}"
    );
    for sub in ["staging", "uploads", "tmp"] {
        assert!(srv.bookkeeping(sub).is_empty(), "{sub} left over");
    }
}

/// A path whose folder is a file, or which names a folder, cannot be stored: a client error
/// (not a 500), and nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_colliding_with_folders_or_files() {
    let srv = start().await;
    assert_eq!(srv.put("coll/a.txt", "file").await.status(), 201);
    let before = srv.entries();
    let mut failures = Vec::new();
    for path in ["coll", "coll/a.txt/b", "coll/a.txt/b/c.txt"] {
        let (status, _, body) = json(srv.put(path, "x").await).await;
        if !(400..500).contains(&status) {
            failures.push(format!("PUT {path}: {status} {body}"));
        }
        if !srv.wait_bookkeeping_empty(Duration::from_secs(2)).await {
            failures.push(format!("PUT {path}: bookkeeping left"));
        }
    }
    srv.assert_nothing_written(&before, "collisions");
    assert_eq!(srv.read("coll/a.txt").as_deref(), Some(&b"file"[..]));
    // Reading them is a plain 404.
    for path in ["coll", "coll/a.txt/b"] {
        let (status, _, body) = json(srv.get(path).await).await;
        if status != 404 || kind(&body) != Some("file_not_found") {
            failures.push(format!("GET {path}: {status} {body}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// §2 Authorization
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_bearer_missing_and_invalid() {
    let srv = start().await;
    let before = srv.entries();
    let res = client()
        .put(srv.url("a.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    let www = res.headers().get("www-authenticate").cloned();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(kind(&body), Some("token_missing"));
    assert!(www.is_some(), "401 token_missing without WWW-Authenticate");

    for auth in [
        "Bearer wrong-key",
        "Bearer test-key-primar",
        "Bearer test-key-primaryX",
        "Basic dGVzdDp0ZXN0",
        "Bearer",
        "Bearer ",
        "test-key-primary",
    ] {
        let res = client()
            .put(srv.url("a.txt"))
            .header("authorization", auth)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, _, body) = json(res).await;
        assert_eq!(status, 401, "{auth}: {body}");
        assert_eq!(kind(&body), Some("token_invalid"), "{auth}");
        // The message does not tell which keys exist.
        let msg = body.pointer("/error/message").unwrap().as_str().unwrap();
        assert!(!msg.contains(KEY), "{msg}");
    }
    srv.assert_nothing_written(&before, "refused bearer");

    // Scheme case-insensitive.
    let res = client()
        .put(srv.url("a.txt"))
        .header("authorization", format!("bearer {KEY}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Public delivery needs nothing.
    assert_eq!(srv.get("a.txt").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_signed_urls() {
    let srv = start().await;
    let path = "signed/target.png";
    // One expiry for the URL and for the cases derived from it (two `now()` calls a second
    // apart made "tampered expiry" replace nothing, and send the good URL).
    let expiry = now() + 3600;
    let good = srv.sign(path, SignedMethod::Put, expiry);
    assert!(good.contains(&format!("expiry={expiry}&")), "{good}");
    let before = srv.entries();

    let sig_of = |url: &str| url.rsplit_once("signature=").unwrap().1.to_owned();
    let good_sig = sig_of(&good);
    let mut tampered_sig = good_sig.clone();
    let last = tampered_sig.pop().unwrap();
    tampered_sig.push(if last == 'A' { 'Q' } else { 'A' });
    let other_path = srv.sign("signed/other.png", SignedMethod::Put, expiry);
    let get_sig = srv.sign(path, SignedMethod::Get, expiry);
    let wire = FilePath::new(path).unwrap().to_uri_path();
    let base = srv.url(&wire);

    let refused: Vec<(&str, String, &str)> = vec![
        (
            "signed for another path",
            other_path.replace("signed/other.png", "signed/target.png"),
            "signature_invalid",
        ),
        (
            "get signature used for PUT",
            get_sig.clone(),
            "signature_invalid",
        ),
        (
            "get signature with method=put",
            get_sig.replace("method=get", "method=put"),
            "signature_invalid",
        ),
        (
            "tampered signature",
            good.replace(&good_sig, &tampered_sig),
            "signature_invalid",
        ),
        (
            "truncated signature",
            good.replace(&good_sig, &good_sig[..good_sig.len() - 4]),
            "signature_invalid",
        ),
        (
            "empty signature",
            good.replace(&good_sig, ""),
            "signature_invalid",
        ),
        (
            "tampered expiry",
            good.replace(
                &format!("expiry={expiry}"),
                &format!("expiry={}", expiry + 1),
            ),
            "signature_invalid",
        ),
        (
            "missing expiry",
            format!("{base}?method=put&signature={good_sig}"),
            "signature_invalid",
        ),
        (
            "non-numeric expiry",
            format!("{base}?expiry=soon&method=put&signature={good_sig}"),
            "signature_invalid",
        ),
        (
            "uppercase method",
            good.replace("method=put", "method=PUT"),
            "signature_invalid",
        ),
        (
            "duplicated signature",
            format!("{good}&signature={good_sig}"),
            "signature_invalid",
        ),
        (
            "signed with an unknown key",
            sign_url("not-a-key", &srv.base, path, SignedMethod::Put, expiry),
            "signature_invalid",
        ),
        (
            "expired",
            srv.sign(path, SignedMethod::Put, now() - 60),
            "signature_expired",
        ),
    ];
    for (what, url, want) in &refused {
        let res = client().put(url).body("nope").send().await.unwrap();
        let (status, _, body) = json(res).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(kind(&body), Some(*want), "{what}: {body}");
    }
    srv.assert_nothing_written(&before, "refused signatures");

    // Signed over the decoded path, sent encoded: accepted (the fallback of §2).
    let decoded_sig = signature(KEY.as_bytes(), "signed/a b.txt", expiry, Some("put"));
    let url = format!(
        "{}?expiry={expiry}&method=put&signature={decoded_sig}",
        srv.url("signed/a%20b.txt")
    );
    let (status, _, body) = json(client().put(&url).body("dec").send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(srv.read("signed/a b.txt").as_deref(), Some(&b"dec"[..]));

    // The good one.
    let png = tiny_png(2, 2);
    let res = client().put(&good).body(png.clone()).send().await.unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(srv.read(path), Some(png));
    // The response's URLs never carry the signature.
    assert!(!body.to_string().contains(&good_sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rotated_keys() {
    let srv = start_with(|u| u.key("second-key")).await;
    let url = sign_url(
        "second-key",
        &srv.base,
        "rot/a.txt",
        SignedMethod::Put,
        now() + 60,
    );
    let res = client().put(&url).body("two").send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(srv.read("rot/a.txt").as_deref(), Some(&b"two"[..]));
    let res = client()
        .put(srv.url("rot/b.txt"))
        .header("authorization", "Bearer second-key")
        .body("bearer two")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Still the primary.
    let url = srv.sign_for("rot/c.txt", SignedMethod::Put);
    assert_eq!(
        client()
            .put(&url)
            .body("one")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    // POST /signatures signs with the first key.
    let res = client()
        .post(srv.url("signatures"))
        .header("authorization", "Bearer second-key")
        // A field this server does not know (a newer SDK's) is ignored.
        .body(r#"{"filename":"x.txt","expiry":2000000000,"sdk_field":1}"#)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        data(&body)["signature"],
        json!(signature(
            KEY.as_bytes(),
            "x.txt",
            2_000_000_000,
            Some("get")
        ))
    );
}

fn legacy_url(base: &str, key: &str, path: &str, expiry: u64) -> String {
    let wire = FilePath::new(path).unwrap().to_uri_path();
    let sig = signature(key.as_bytes(), &wire, expiry, None);
    format!("{base}/{wire}?expiry={expiry}&signature={sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_legacy_signatures_need_opt_in_and_only_put() {
    // Off by default.
    let srv = start().await;
    let before = srv.entries();
    let url = legacy_url(&srv.base, KEY, "legacy/a.txt", now() + 60);
    let (status, _, body) = json(client().put(&url).body("x").send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_invalid"));
    srv.assert_nothing_written(&before, "legacy refused");

    // Opted in (private delivery so that GET needs credentials too).
    let srv = start_with(|u| u.legacy_signatures(true).private(true)).await;
    let url = legacy_url(&srv.base, KEY, "legacy/a.txt", now() + 60);
    let (status, _, body) = json(client().put(&url).body("legacy").send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(srv.read("legacy/a.txt").as_deref(), Some(&b"legacy"[..]));
    // Not for GET/HEAD.
    let (status, _, body) = json(client().get(&url).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_invalid"));
    let res = client().head(&url).send().await.unwrap();
    assert_eq!(res.status(), 403);
    // Expired legacy URL.
    let old = legacy_url(&srv.base, KEY, "legacy/b.txt", now() - 60);
    let (status, _, body) = json(client().put(&old).body("x").send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_expired"));
    // Signed over the path with a method, but the method dropped from the URL: refused.
    let with_method = srv.sign_for("legacy/c.txt", SignedMethod::Put);
    let dropped = with_method.replace("&method=put", "");
    let (status, _, body) = json(client().put(&dropped).body("x").send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(srv.read("legacy/b.txt"), None);
    assert_eq!(srv.read("legacy/c.txt"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_standard_base64_signatures() {
    let srv = start().await;
    let path = "b64/file.txt";
    let wire = FilePath::new(path).unwrap().to_uri_path();
    // An expiry whose url-safe signature has '-' or '_', so the standard form differs.
    let (expiry, sig) = (now() + 3600..now() + 10_000)
        .map(|e| (e, signature(KEY.as_bytes(), &wire, e, Some("put"))))
        .find(|(_, s)| s.contains('-') && s.contains('_'))
        .unwrap();
    let mut standard = sig.replace('-', "+").replace('_', "/");
    standard.push('=');
    assert_eq!(standard.len(), 44);
    let encoded = standard
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for (i, s) in [encoded.as_str(), standard.as_str(), sig.as_str()]
        .iter()
        .enumerate()
    {
        let url = format!(
            "{}?expiry={expiry}&method=put&signature={s}",
            srv.url(&wire)
        );
        let body = format!("v{i}");
        let (status, _, doc) =
            json(client().put(&url).body(body.clone()).send().await.unwrap()).await;
        assert_eq!(status, 201, "signature {s}: {doc}");
        assert_eq!(srv.read(path), Some(body.into_bytes()));
    }
    // Url-safe with padding too.
    let url = format!(
        "{}?expiry={expiry}&method=put&signature={sig}%3D",
        srv.url(&wire)
    );
    assert_eq!(
        client().put(&url).body("p").send().await.unwrap().status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_protocol_test_vector() {
    assert_eq!(
        signature(b"test_key", "private/image.png", 1735689600, Some("get")),
        "iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg"
    );
    assert_eq!(
        sign_url(
            "test_key",
            "https://x.example",
            "private/image.png",
            SignedMethod::Get,
            1735689600
        ),
        "https://x.example/private/image.png?expiry=1735689600&method=get\
         &signature=iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg"
    );
    // End to end: the vector's URL is valid for a server with that key, but expired (only a
    // valid signature may say so), and a flipped bit is invalid.
    let srv = start_with(|u| u.key("test_key").private(true)).await;
    let url = srv.url(
        "private/image.png?expiry=1735689600&method=get&signature=iF81idXx9ubaxiZNLPPT9gN9keanDydFx2D4JD_uEOg",
    );
    let (status, _, body) = json(client().get(&url).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_expired"));
    let bad = url.replace("iF81", "iF82");
    let (status, _, body) = json(client().get(&bad).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert_eq!(kind(&body), Some("signature_invalid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_private_delivery() {
    let srv = start_with(|u| u.private(true)).await;
    let path = "private/image.png";
    let png = tiny_png(4, 3);
    let (status, _, body) = json(srv.put(path, png.clone()).await).await;
    assert_eq!(status, 201, "{body}");
    let file_url = data(&body)["url"].as_str().unwrap().to_owned();

    // Unsigned.
    let res = client().get(&file_url).send().await.unwrap();
    assert!(res.headers().contains_key("www-authenticate"));
    let (status, _, body) = json(res).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(kind(&body), Some("token_missing"));
    assert_eq!(client().head(&file_url).send().await.unwrap().status(), 401);

    // `get` signature: GET and HEAD.
    let get = srv.sign_for(path, SignedMethod::Get);
    let res = client().get(&get).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), png);
    let res = client().head(&get).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"].to_str().unwrap(),
        png.len().to_string()
    );

    // Bearer.
    let res = client()
        .get(&file_url)
        .header("authorization", srv.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), png);

    // A `put` signature is not a `get` one; nor is a `get` for another file.
    let put = srv.sign_for(path, SignedMethod::Put);
    let (status, _, body) = json(client().get(&put).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_invalid"));
    let other = srv
        .sign_for("private/other.png", SignedMethod::Get)
        .replace("private/other.png", "private/image.png");
    let (status, _, body) = json(client().get(&other).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(kind(&body), Some("signature_invalid"));
    // Wrong bearer.
    let res = client()
        .get(&file_url)
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A `get` signature cannot upload.
    let (status, _, _) = json(client().put(&get).body("x").send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert_eq!(srv.read(path), Some(png));
}

// ---------------------------------------------------------------------------------------------
// §3 Simple upload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_file_object() {
    let srv = start().await;
    let png = tiny_png(3, 2);
    let res = srv.put("img/pixel.png", png.clone()).await;
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let (status, headers, body) = json(res).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let f = data(&body);
    assert_id(&f["id"], "file_");
    assert_id(&f["media_id"], "med_");
    assert_eq!(f["object"], "source");
    assert_eq!(f["kind"], "image");
    assert_eq!(f["type"], "image/png");
    assert_eq!(f["width"], 3);
    assert_eq!(f["height"], 2);
    assert_eq!(f["filesize"], png.len());
    assert_eq!(f["folder"], "img");
    assert_eq!(f["filename"], "pixel.png");
    assert_eq!(f["url"], json!(srv.url("img/pixel.png")));
    assert_eq!(location, srv.url("img/pixel.png"));
    assert_eq!(f["status"], "ready");
    assert_rfc3339_z(&f["created"]);
    assert_rfc3339_z(&f["updated"]);
    for field in [
        "duration",
        "fps",
        "frames",
        "bitrate",
        "codec",
        "container",
        "metadata",
    ] {
        assert!(f.get(field).is_some(), "field {field} missing");
    }
    assert_eq!(srv.read("img/pixel.png"), Some(png.clone()));
    let got = srv.get("img/pixel.png").await;
    assert_eq!(got.headers()["content-type"], "image/png");

    // Random bytes with an image hint: not an image.
    let noise = pattern(4096, 7);
    let res = client()
        .put(srv.url("hint/noise.bin"))
        .header("authorization", srv.bearer())
        .header("content-type", "image/png")
        .body(noise.clone())
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 201, "{body}");
    let f = data(&body);
    assert_eq!(f["kind"], "other");
    assert_eq!(f["type"], "image/png");
    assert_eq!(f["width"], Value::Null);
    assert_eq!(f["height"], Value::Null);

    // No hint: the extension, else octet-stream.
    let cases = [
        ("t/readme.txt", "text/plain"),
        ("t/noext", "application/octet-stream"),
        ("t/fake.png", "image/png"),
    ];
    for (path, want) in cases {
        let (status, _, body) = json(srv.put(path, pattern(100, 3)).await).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(data(&body)["kind"], "other", "{path}");
        assert_eq!(data(&body)["type"], want, "{path}");
    }
    // A text hint on real PNG bytes: the bytes decide.
    let res = client()
        .put(srv.url("t/real.txt"))
        .header("authorization", srv.bearer())
        .header("content-type", "text/plain")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    let (_, _, body) = json(res).await;
    assert_eq!(data(&body)["kind"], "image");
    assert_eq!(data(&body)["type"], "image/png");
    // Empty file.
    let (status, _, body) = json(srv.put("t/empty.txt", Vec::new()).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(data(&body)["filesize"], 0);
    assert_eq!(srv.read("t/empty.txt"), Some(Vec::new()));
    let got = srv.get("t/empty.txt").await;
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_replace_and_preconditions() {
    let srv = start().await;
    let path = "pre/doc.txt";
    // If-None-Match: * creates.
    let res = client()
        .put(srv.url(path))
        .header("authorization", srv.bearer())
        .header("if-none-match", "*")
        .body("v1")
        .send()
        .await
        .unwrap();
    let (status, _, first) = json(res).await;
    assert_eq!(status, 201, "{first}");
    // … and refuses to replace.
    let res = client()
        .put(srv.url(path))
        .header("authorization", srv.bearer())
        .header("if-none-match", "*")
        .body("v1-bis")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(kind(&body), Some("precondition_failed"));
    assert_eq!(srv.read(path).as_deref(), Some(&b"v1"[..]));
    assert!(srv.wait_bookkeeping_empty(Duration::from_secs(2)).await);

    // Plain replace: 201 again, new bytes served, a new File object (new id, its own
    // `created`: not before the first one's).
    let (status, _, second) = json(srv.put(path, "v2 longer").await).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(srv.read(path).as_deref(), Some(&b"v2 longer"[..]));
    let got = srv.get(path).await;
    let etag = got.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(got.bytes().await.unwrap(), &b"v2 longer"[..]);
    assert_ne!(data(&first)["id"], data(&second)["id"]);
    let created = |v: &Value| data(v)["created"].as_str().unwrap_or_default().to_owned();
    assert!(created(&second) >= created(&first), "{first} / {second}");

    // If-Match with the current ETag replaces.
    let res = client()
        .put(srv.url(path))
        .header("authorization", srv.bearer())
        .header("if-match", &etag)
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(srv.read(path).as_deref(), Some(&b"v3"[..]));
    // … and with the stale one does not.
    let res = client()
        .put(srv.url(path))
        .header("authorization", srv.bearer())
        .header("if-match", &etag)
        .body("v4")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(kind(&body), Some("precondition_failed"));
    assert_eq!(srv.read(path).as_deref(), Some(&b"v3"[..]));
    // If-Match on a missing file.
    let res = client()
        .put(srv.url("pre/missing.txt"))
        .header("authorization", srv.bearer())
        .header("if-match", &etag)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    assert_eq!(srv.read("pre/missing.txt"), None);
    assert!(srv.wait_bookkeeping_empty(Duration::from_secs(2)).await);
    assert_eq!(
        srv.files()
            .into_iter()
            .filter(|f| !f.starts_with(RESERVED))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([path.to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_too_large_by_content_length_answers_before_the_body() {
    let srv = start_with(|u| u.max_request_size(1024)).await;
    let before = srv.entries();
    // Headers only, with a huge Content-Length: the answer must come without the body.
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Length: 10000000000\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let res = srv.raw(head.as_bytes()).await;
    assert_eq!(res.status, 413, "{:?}", String::from_utf8_lossy(&res.body));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(kind(&res.json()), Some("file_too_large"));
    srv.assert_nothing_written(&before, "Content-Length 413");

    // One byte over / exactly at the limit.
    let (status, _, body) = json(srv.put("over.bin", vec![1u8; 1025]).await).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(kind(&body), Some("file_too_large"));
    srv.assert_nothing_written(&before, "1025 bytes");
    let (status, _, body) = json(srv.put("at.bin", vec![1u8; 1024]).await).await;
    assert_eq!(status, 201, "{body}");

    // The file-size limit counts too.
    let srv = start_with(|u| u.max_file_size(100)).await;
    let (status, _, body) = json(srv.put("f.bin", vec![1u8; 101]).await).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(srv.read("f.bin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_chunked_body_over_the_limit() {
    let limit = 64 * 1024;
    let srv = start_with(|u| u.max_request_size(limit)).await;
    let before = srv.entries();

    let stream = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "PUT /chunked/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'z'; 8192];
        for _ in 0..128 {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(wr)
    });
    let res = read_response(&mut rd, Duration::from_secs(5)).await;
    writer.abort();
    assert_eq!(res.status, 413, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(kind(&res.json()), Some("file_too_large"));
    assert!(srv.wait_bookkeeping_empty(Duration::from_secs(2)).await);
    srv.assert_nothing_written(&before, "chunked over the limit");

    // A chunked body under the limit is fine.
    let mut req = format!(
        "PUT /chunked/small.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in [&b"hello "[..], b"chunked ", b"world"] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let res = srv.raw(&req).await;
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(
        srv.read("chunked/small.bin").as_deref(),
        Some(&b"hello chunked world"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_client_disconnect_keeps_nothing() {
    let srv = start().await;
    let before = srv.entries();
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PUT /gone/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Length: 10000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // More than the largest write batch (2 MiB), so that one batch is written.
    stream.write_all(&pattern(3 << 20, 9)).await.unwrap();
    stream.flush().await.unwrap();
    // The upload is under way: its staging file exists.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while srv.bookkeeping("staging").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !srv.bookkeeping("staging").is_empty(),
        "the upload never started staging"
    );
    drop(stream);
    assert!(
        srv.wait_bookkeeping_empty(Duration::from_secs(2)).await,
        "staging left behind after a disconnect: {:?}",
        srv.bookkeeping("staging")
    );
    srv.assert_nothing_written(&before, "disconnect");
    assert_eq!(srv.read("gone/big.bin"), None);
    assert_eq!(srv.get("gone/big.bin").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_replace_is_atomic_for_readers() {
    let srv = start().await;
    let path = "atomic/video.bin";
    let size = 8 << 20;
    let old = pattern(size, 1);
    let versions: Vec<Vec<u8>> = (2..6).map(|seed| pattern(size, seed)).collect();
    let mut known: BTreeSet<String> = versions.iter().map(|v| sha256(v)).collect();
    known.insert(sha256(&old));
    assert_eq!(srv.put(path, old.clone()).await.status(), 201);

    // A reader that starts on the old version and reads slowly.
    let res = srv.get(path).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut slow = stream.next().await.unwrap().unwrap().to_vec();

    // Concurrent writers of new versions, and concurrent full readers.
    let mut tasks = Vec::new();
    for v in &versions {
        let url = srv.url(path);
        let auth = srv.bearer();
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            let res = client()
                .put(url)
                .header("authorization", auth)
                .body(v)
                .send()
                .await
                .unwrap();
            format!("put {}", res.status())
        }));
    }
    for _ in 0..3 {
        let url = srv.url(path);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let res = client().get(&url).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let len: usize = res.headers()["content-length"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body = res.bytes().await.unwrap();
                assert_eq!(body.len(), len);
                seen.push(sha256(&body));
            }
            seen.join(",")
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    for o in &outcomes {
        if let Some(status) = o.strip_prefix("put ") {
            assert_eq!(status, "201 Created");
        } else {
            for h in o.split(',') {
                assert!(known.contains(h), "a reader saw a mixed or partial file");
            }
        }
    }
    // The slow reader still gets the whole old file.
    while let Some(chunk) = stream.next().await {
        slow.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(slow.len(), old.len());
    assert_eq!(sha256(&slow), sha256(&old), "the slow reader saw a mix");
    // The final version is one whole version.
    let now_stored = srv.read(path).unwrap();
    assert!(versions.contains(&now_stored));
    let served = srv.get(path).await.bytes().await.unwrap();
    assert_eq!(sha256(&served), sha256(&now_stored));
    assert!(srv.wait_bookkeeping_empty(Duration::from_secs(2)).await);
}

/// Create-only PUTs racing for one path: exactly one wins, the others get 412, and the file
/// holds the winner's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_create_only_race_has_one_winner() {
    let srv = start().await;
    let path = "race/once.bin";
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let url = srv.url(path);
        let auth = srv.bearer();
        tasks.push(tokio::spawn(async move {
            let body = pattern(256 * 1024, 100 + i);
            let res = client()
                .put(url)
                .header("authorization", auth)
                .header("if-none-match", "*")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), body)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => winners.push(body),
            412 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "create-only must have exactly one winner");
    assert_eq!(srv.read(path).as_ref(), Some(&winners[0]));
    assert!(srv.wait_bookkeeping_empty(Duration::from_secs(2)).await);
}

/// `Expect: 100-continue` with a Content-Length over the limit: the final 413 comes without
/// inviting the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_upload_too_large_with_expect_continue() {
    let srv = start_with(|u| u.max_request_size(1024)).await;
    let before = srv.entries();
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        stream.read_exact(&mut first).await
    })
    .await
    .expect("no answer within 5 s")
    .unwrap();
    assert_eq!(
        &first,
        b"HTTP/1.1 413",
        "{}",
        String::from_utf8_lossy(&first)
    );
    srv.assert_nothing_written(&before, "expect-continue 413");
}

// ---------------------------------------------------------------------------------------------
// §6 Responses, POST /signatures, 405
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_envelope_and_bare() {
    let srv = start().await;
    // Envelope by default.
    let (status, _, body) = json(srv.put("r/a.txt", "a").await).await;
    assert_eq!(status, 201);
    assert!(body["meta"].is_object(), "{body}");
    assert_eq!(body["error"], Value::Null);
    assert!(body["data"].is_object());
    assert_eq!(body["data"]["filename"], "a.txt");
    assert_eq!(body["links"]["self"], body["data"]["url"]);
    // An older version asks for the envelope too.
    let res = client()
        .put(srv.url("r/b.txt"))
        .header("authorization", srv.bearer())
        .header("accept-version", "2024-03-21")
        .body("b")
        .send()
        .await
        .unwrap();
    let (_, _, body) = json(res).await;
    assert!(body["meta"].is_object(), "{body}");

    // Bare from 2025-08-20 on.
    for version in ["2025-08-20", "2026-01-01"] {
        let res = client()
            .put(srv.url("r/c.txt"))
            .header("authorization", srv.bearer())
            .header("accept-version", version)
            .body("c")
            .send()
            .await
            .unwrap();
        let (status, _, body) = json(res).await;
        assert_eq!(status, 201);
        assert!(body.get("meta").is_none(), "{body}");
        assert_eq!(body["object"], "source");
        assert_eq!(body["filename"], "c.txt");
        assert_id(&body["id"], "file_");
    }

    // Errors: bare `{kind, message}`…
    let bare_errors = [
        client().get(srv.url("r/missing.txt")),
        client().put(srv.url("r/x.txt")).body("x"),
        client()
            .put(srv.url("r/x.txt"))
            .header("authorization", "Bearer bad")
            .body("x"),
    ];
    for (req, want) in
        bare_errors
            .into_iter()
            .zip(["file_not_found", "token_missing", "token_invalid"])
    {
        let res = req
            .header("accept-version", "2025-08-20")
            .send()
            .await
            .unwrap();
        let (_, _, body) = json(res).await;
        let obj = body.as_object().expect("object");
        assert_eq!(
            obj.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            BTreeSet::from(["kind", "message"]),
            "{body}"
        );
        assert_eq!(body["kind"], want);
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    // … and the envelope with `data: null`.
    let (status, _, body) = json(srv.get("r/missing.txt").await).await;
    assert_eq!(status, 404);
    assert!(body["meta"].is_object(), "{body}");
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["error"]["kind"], "file_not_found");
    assert!(body["error"]["message"].as_str().is_some());
    let (status, _, body) = json(
        client()
            .put(srv.url("r/x.txt"))
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["error"]["kind"], "token_missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_api() {
    let srv = start().await;
    let post = |body: &'static str| {
        client()
            .post(srv.url("signatures"))
            .header("authorization", srv.bearer())
            .header("content-type", "application/json")
            .body(body)
    };

    // Defaults: method get, expiry now + 1 h, folder null.
    let (status, _, body) = json(post(r#"{"filename":"cat one.png"}"#).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let s = data(&body);
    let keys: BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "domain",
        "filename",
        "folder",
        "expiry",
        "method",
        "signature",
        "url",
    ] {
        assert!(keys.contains(k), "missing {k}: {s}");
    }
    assert_eq!(s["domain"], json!(srv.base));
    assert_eq!(s["filename"], "cat one.png");
    assert_eq!(s["folder"], Value::Null);
    assert_eq!(s["method"], "get");
    let expiry = s["expiry"].as_u64().unwrap();
    assert!(expiry.abs_diff(now() + 3600) <= 5, "expiry {expiry}");
    let sig = signature(KEY.as_bytes(), "cat%20one.png", expiry, Some("get"));
    assert_eq!(s["signature"], json!(sig));
    assert_eq!(
        s["url"],
        json!(format!(
            "{}/cat%20one.png?expiry={expiry}&method=get&signature={sig}",
            srv.base
        ))
    );

    // method put: the URL uploads.
    let (status, _, body) = json(
        post(r#"{"filename":"x.png","folder":"pics/2025","method":"put","expiry":4102444800}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s = data(&body);
    assert_eq!(s["folder"], "pics/2025");
    assert_eq!(s["method"], "put");
    assert_eq!(s["expiry"], 4_102_444_800u64);
    let url = s["url"].as_str().unwrap();
    let png = tiny_png(1, 1);
    let (status, _, up) = json(client().put(url).body(png.clone()).send().await.unwrap()).await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(srv.read("pics/2025/x.png"), Some(png));
    // … and is not a `get` URL.
    let get_url = url.replace("method=put", "method=get");
    let (status, _, _) = json(client().put(&get_url).body("x").send().await.unwrap()).await;
    assert_eq!(status, 403);

    // Bare style.
    let res = post(r#"{"filename":"b.txt"}"#)
        .header("accept-version", "2025-08-20")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["filename"], "b.txt");

    // Bad requests.
    let before = srv.entries();
    for (body, want) in [
        ("not json", "bad_request"),
        ("{}", "bad_request"),
        (r#"{"filename":"a.png","method":"delete"}"#, "bad_request"),
        (r#"{"filename":"../x.png"}"#, "path_invalid"),
        (
            r#"{"filename":"x.png","folder":"a/../../b"}"#,
            "path_invalid",
        ),
        (r#"{"filename":"a/"}"#, "path_invalid"),
        (r#"{"filename":""}"#, "path_invalid"),
    ] {
        let (status, _, doc) = json(post(body).send().await.unwrap()).await;
        assert_eq!(status, 400, "{body}: {doc}");
        assert_eq!(kind(&doc), Some(want), "{body}: {doc}");
    }
    // Credentials: bearer only.
    let signed = srv.sign_for("signatures", SignedMethod::Put);
    let (status, _, doc) = json(
        client()
            .post(&signed)
            .body(r#"{"filename":"a.png"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{doc}");
    assert_eq!(kind(&doc), Some("token_missing"));
    let (status, _, doc) = json(
        client()
            .post(srv.url("signatures"))
            .body(r#"{"filename":"a.png"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(kind(&doc), Some("token_missing"));
    let (status, _, doc) = json(
        client()
            .post(srv.url("signatures"))
            .header("authorization", "Bearer nope")
            .body(r#"{"filename":"a.png"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(kind(&doc), Some("token_invalid"));
    srv.assert_nothing_written(&before, "signatures api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_405() {
    let srv = start().await;
    assert_eq!(srv.put("m/a.txt", "keep").await.status(), 201);
    for method in ["DELETE", "PATCH", "POST", "OPTIONS"] {
        let res = client()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                srv.url("m/a.txt"),
            )
            .header("authorization", srv.bearer())
            .send()
            .await
            .unwrap();
        let allow = res.headers().get("allow").cloned();
        let (status, _, body) = json(res).await;
        assert_eq!(status, 405, "{method}: {body}");
        assert_eq!(kind(&body), Some("method_not_allowed"), "{method}");
        assert!(allow.is_some(), "{method}: no Allow header");
    }
    assert_eq!(srv.read("m/a.txt").as_deref(), Some(&b"keep"[..]));
}

// ---------------------------------------------------------------------------------------------
// §8 Delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_headers_ranges_and_conditionals() {
    let srv = start().await;
    let path = "d/notes.txt";
    let content: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    assert_eq!(srv.put(path, content.clone()).await.status(), 201);

    let res = srv.get(path).await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["content-length"], "100");
    assert_eq!(h["accept-ranges"], "bytes");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let last_modified = h["last-modified"].to_str().unwrap().to_owned();
    httpdate::parse_http_date(&last_modified).expect("Last-Modified is an HTTP-date");
    assert_eq!(res.bytes().await.unwrap(), content);

    // HEAD: the same headers, no body.
    let res = client().head(srv.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(res.headers().get(name), h.get(name), "HEAD {name}");
    }
    assert!(res.bytes().await.unwrap().is_empty());

    let get = |headers: Vec<(&'static str, String)>| {
        let mut req = client().get(srv.url(path));
        for (n, v) in headers {
            req = req.header(n, v);
        }
        req.send()
    };

    // Ranges.
    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=-5", 95, 99),
        ("bytes=90-", 90, 99),
        ("bytes=95-500", 95, 99),
        ("bytes=10-10", 10, 10),
    ] {
        let res = get(vec![("range", range.into())]).await.unwrap();
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{end}/100").as_str(),
            "{range}"
        );
        assert_eq!(
            res.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        assert_eq!(res.bytes().await.unwrap(), &content[start..=end], "{range}");
    }
    let res = client()
        .head(srv.url(path))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-length"], "10");
    for range in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
        let res = get(vec![("range", range.into())]).await.unwrap();
        let cr = res.headers().get("content-range").cloned();
        let (status, _, body) = json(res).await;
        assert_eq!(status, 416, "{range}: {body}");
        assert_eq!(cr.unwrap(), "bytes */100", "{range}");
        assert_eq!(kind(&body), Some("range_not_satisfiable"), "{range}");
    }
    // Malformed or multiple ranges: the whole file.
    for range in ["bytes=5-2", "items=0-5", "bytes=0-1,5-6"] {
        let res = get(vec![("range", range.into())]).await.unwrap();
        assert_eq!(res.status(), 200, "{range}");
        assert_eq!(res.bytes().await.unwrap().len(), 100, "{range}");
    }

    // Conditionals.
    let res = get(vec![("if-none-match", etag.clone())]).await.unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    let res = get(vec![("if-none-match", format!("\"nope\", {etag}"))])
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = get(vec![("if-none-match", "\"nope\"".into())])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = get(vec![("if-modified-since", last_modified.clone())])
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = get(vec![(
        "if-modified-since",
        "Sat, 01 Jan 2000 00:00:00 GMT".into(),
    )])
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // If-None-Match wins over If-Modified-Since.
    let res = get(vec![
        ("if-none-match", "\"nope\"".into()),
        ("if-modified-since", last_modified.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    // If-Range.
    let res = get(vec![
        ("range", "bytes=0-9".into()),
        ("if-range", etag.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), &content[..10]);
    let res = get(vec![
        ("range", "bytes=0-9".into()),
        ("if-range", "\"stale\"".into()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), content);
    let res = get(vec![
        ("range", "bytes=0-9".into()),
        ("if-range", last_modified.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 206);

    // After a replace, the old ETag no longer matches.
    assert_eq!(srv.put(path, "new").await.status(), 201);
    let res = get(vec![("if-none-match", etag.clone())]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_ne!(res.headers()["etag"], etag.as_str());
    assert_eq!(res.bytes().await.unwrap(), &b"new"[..]);

    // Missing.
    let (status, _, body) = json(srv.get("d/missing.txt").await).await;
    assert_eq!(status, 404);
    assert_eq!(kind(&body), Some("file_not_found"));
    let res = client()
        .head(srv.url("d/missing.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // A folder is not a file.
    let (status, _, body) = json(srv.get("d").await).await;
    assert_eq!(status, 404, "{body}");
}

// ---------------------------------------------------------------------------------------------
// The layer inside an axum app
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_layer_under_a_prefix() {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    let (sandbox, data) = sandbox();
    let uploads = Uploads::new(FsStorage::new(&data).unwrap())
        .key(KEY)
        .prefix("/files");
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "router-404") })
        .layer(uploads.layer());
    let (addr, task) = serve(app).await;
    let base = format!("http://{addr}");

    let res = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");

    // Upload under the prefix.
    let res = client()
        .put(format!("{base}/files/docs/a b.txt"))
        .header("authorization", format!("Bearer {KEY}"))
        .body("layered")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json(res).await;
    assert_eq!(status, 201, "{body}");
    let url = format!("{base}/files/docs/a%20b.txt");
    assert_eq!(data_of(&body)["url"], json!(url));
    assert_eq!(headers["location"], url.as_str());
    assert_eq!(data_of(&body)["folder"], "docs");
    assert_eq!(
        std::fs::read(data.join("docs/a b.txt")).unwrap(),
        b"layered"
    );
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "layered");

    // A missing file under the prefix falls through to the router.
    let res = client()
        .get(format!("{base}/files/missing.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), "router-404");
    // Outside the prefix: the router's.
    let res = client()
        .put(format!("{base}/other/x.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), "router-404");
    let res = client()
        .get(format!("{base}/filesx/docs/a%20b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "router-404");

    // Credentials are checked under the prefix.
    let (status, _, body) = json(
        client()
            .put(format!("{base}/files/docs/b.txt"))
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(kind(&body), Some("token_missing"));
    // Signed URLs are made and checked with the prefix.
    let (status, _, body) = json(
        client()
            .post(format!("{base}/files/signatures"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(r#"{"filename":"s.txt","folder":"docs","method":"put"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let signed = data_of(&body)["url"].as_str().unwrap().to_owned();
    assert!(
        signed.starts_with(&format!("{base}/files/docs/s.txt?")),
        "{signed}"
    );
    let res = client().put(&signed).body("signed").send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(std::fs::read(data.join("docs/s.txt")).unwrap(), b"signed");
    // A hostile path under the prefix is refused, and nothing escapes.
    let res = raw_request(
        addr,
        &raw_put("/files/../escape.txt", Some(&format!("Bearer {KEY}")), b"x"),
        Duration::from_secs(5),
    )
    .await;
    assert_ne!(res.status, 201);
    assert!(!sandbox.path().join("escape.txt").exists());
    task.abort();
}

fn data_of(v: &Value) -> &Value {
    data(v)
}
