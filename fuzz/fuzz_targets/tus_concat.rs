//! `tus::parse_concat` on arbitrary bytes: never panics; `partial` is only `partial`; a final
//! upload has 1 to 1,000 non-empty, printable-ASCII URLs, each a word of the input after
//! `final;`; the canonical form (`Display`) and a respaced one parse back to the same value.
//! URL lists made from the input parse to themselves.
#![no_main]

#[path = "../../src/headers/tus.rs"]
#[allow(dead_code)]
mod tus;

use libfuzzer_sys::fuzz_target;
use tus::{Concat, MAX_CONCAT_URLS, TusHeaderError, parse_concat};

fn trim(s: &[u8]) -> &[u8] {
    let s = &s[s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count()..];
    &s[..s.len()
        - s.iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count()]
}

fuzz_target!(|data: &[u8]| {
    match parse_concat(data) {
        Ok(Concat::Partial) => assert_eq!(trim(data), b"partial"),
        Ok(Concat::Final(ref urls)) => {
            let list = trim(data).strip_prefix(b"final;").expect("final; prefix");
            assert!((1..=MAX_CONCAT_URLS).contains(&urls.len()));
            let words: Vec<&[u8]> = list
                .split(|b| matches!(b, b' ' | b'\t'))
                .filter(|w| !w.is_empty())
                .collect();
            assert_eq!(words.len(), urls.len());
            for (url, word) in urls.iter().zip(words) {
                assert!(!url.is_empty());
                assert!(url.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{url:?}");
                assert_eq!(url.as_bytes(), word);
            }
            let concat = Concat::Final(urls.clone());
            let canonical = concat.to_string();
            assert_eq!(parse_concat(canonical.as_bytes()), Ok(concat.clone()));
            let spaced = format!(" final;\t{} \t", urls.join(" \t "));
            assert_eq!(parse_concat(spaced.as_bytes()), Ok(concat));
        }
        Err(e) => assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}"),
    }

    // URL lists made from the input's printable runs.
    let urls: Vec<String> = data
        .split(|b| !(b'!'..=b'~').contains(b))
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    let header = format!("final;{}", urls.join(" "));
    let want = match urls.len() {
        0 => Err(TusHeaderError::ConcatNoUrls),
        n if n > MAX_CONCAT_URLS => Err(TusHeaderError::ConcatTooManyUrls),
        _ => Ok(Concat::Final(urls)),
    };
    assert_eq!(parse_concat(header.as_bytes()), want, "{header:?}");
});
