//! `FilePath::from_uri_path` on arbitrary input: never panics, and every accepted path keeps
//! the type's invariants and round-trips through its URL form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_uploads::path::{FilePath, MAX_PATH_BYTES};

fn check(p: &FilePath) {
    let s = p.as_str();
    assert!(!s.is_empty());
    assert!(s.len() <= MAX_PATH_BYTES, "too long: {}", s.len());
    assert!(!s.ends_with('/'), "{s:?}");
    assert!(
        !s.chars().any(|c| c == '\\' || c.is_control()),
        "bad character in {s:?}"
    );
    for seg in s.split('/') {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "bad segment in {s:?}"
        );
    }
    match p.folder() {
        Some(folder) => assert_eq!(format!("{folder}/{}", p.filename()), s),
        None => assert_eq!(p.filename(), s),
    }
    let uri = p.to_uri_path();
    assert!(!uri.starts_with('/'));
    assert!(uri.is_ascii(), "{uri:?}");
    assert_eq!(FilePath::from_uri_path(&uri).as_ref(), Ok(p), "{uri:?}");
    assert_eq!(FilePath::from_uri_path(&format!("/{uri}")).as_ref(), Ok(p));
    assert_eq!(FilePath::new(s).as_ref(), Ok(p));
    // The URL form is a valid URI path.
    assert!(format!("/{uri}").parse::<http::Uri>().is_ok(), "{uri:?}");
    // Bytes that show nothing are typed by the name: mime_guess's type, whatever name the
    // thread typed before (the sniffer remembers the last extension).
    let name = p.filename();
    let want = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    for other in ["a.png", name, "b.PNG", name] {
        let facts = tower_uploads::media::sniff(b"", None, other);
        if other == name {
            assert_eq!(facts.mime_type, want, "{name:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // As text.
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = FilePath::from_uri_path(&text) {
        check(&p);
    }
    if let Ok(p) = FilePath::new(text.as_ref()) {
        check(&p);
    }
    // As raw bytes, every byte percent-encoded (non-UTF-8 sequences included).
    let encoded: String = data.iter().map(|b| format!("%{b:02X}")).collect();
    if let Ok(p) = FilePath::from_uri_path(&encoded) {
        check(&p);
        assert_eq!(p.as_str().as_bytes(), data);
    }
});
