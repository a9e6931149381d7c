//! The JSON and header parsers of upload sessions: `POST /uploads` bodies, assembly bodies
//! and `X-Upload-Index`. Never a panic; what is accepted meets the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_uploads::session::CreateSession;
use tower_uploads::session::model::{MAX_PARTS, parse_complete, parse_index};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = CreateSession::parse(data) {
        if let Some(m) = &c.metadata {
            assert!(m.values().all(|v| !v.is_object() && !v.is_array()));
        }
        if let Some(a) = &c.alias {
            assert!(tower_uploads::session::model::media_id_of(a).is_none());
        }
    }
    if let Ok(Some(parts)) = parse_complete(data) {
        assert!(parts.len() <= MAX_PARTS as usize);
        assert!(parts.windows(2).all(|w| w[0].index < w[1].index));
    }
    if let Ok(i) = parse_index(data) {
        assert!(i < MAX_PARTS);
    }
});
