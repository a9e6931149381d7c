//! `multipart/form-data` bodies of `POST /store/single`, split into arbitrary frames, with
//! the boundary from the `Content-Type` or read from the body: never a panic, and the file
//! part never yields more than its limit.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tower_uploads::session::multipart::{
    FormLimits, form_type, next_file_part, open_form,
};

const LIMITS: FormLimits = FormLimits {
    body: 1 << 16,
    file: 1 << 12,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The Content-Type: none, without a boundary, or the first line of `rest` as boundary.
    let (content_type, body) = match flags % 3 {
        0 => (None, rest),
        1 => (Some("multipart/form-data".to_owned()), rest),
        _ => {
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let b = String::from_utf8_lossy(&rest[..cut]).into_owned();
            (
                Some(format!("multipart/form-data; boundary=\"{b}\"")),
                rest.get(cut + 1..).unwrap_or_default(),
            )
        }
    };
    let Ok(form) = form_type(content_type.as_deref()) else {
        return;
    };
    // Frames of 1 to 16 bytes, sizes taken from the flags.
    let step = usize::from(flags >> 4) + 1;
    let frames: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(step)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::executor::block_on(async {
        let stream = futures::stream::iter(frames);
        let Ok(mut form) = open_form(form, stream, LIMITS).await else {
            return;
        };
        let Ok(Some(mut field)) = next_file_part(&mut form).await else {
            return;
        };
        let mut n = 0usize;
        while let Ok(Some(chunk)) = field.chunk().await {
            n += chunk.len();
            assert!(n as u64 <= LIMITS.file, "the file part went past its limit");
        }
    });
});

