//! The integer and boolean header parsers on arbitrary bytes. `sf::parse_bool` and
//! `sf::parse_integer` never panic and agree with the `sfv` crate (RFC 9651) on every input:
//! same value, or refused exactly when sfv refuses it or finds another type. An accepted
//! Integer is at most 15 digits and its decimal string round-trips; so does a value of tus's
//! `parse_u64` (at most 19 digits), which agrees with `str::parse::<u64>` on digit strings.
//! `serialize_dictionary_ints` gives a Dictionary that sfv reads back.
#![no_main]

#[path = "../../src/headers/sf.rs"]
#[allow(dead_code)]
mod sf;
#[path = "../../src/headers/tus.rs"]
#[allow(dead_code)]
mod tus;

use libfuzzer_sys::fuzz_target;
use sf::{MAX_INTEGER, SfError};
use sfv::{BareItem, Dictionary, Item, ListEntry, Parser};

fn trim(s: &[u8]) -> &[u8] {
    let s = &s[s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count()..];
    &s[..s.len()
        - s.iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count()]
}

fuzz_target!(|data: &[u8]| {
    let boolean = sf::parse_bool(data);
    let integer = sf::parse_integer(data);
    let trimmed = trim(data);

    // The reference: sfv, on the field value (OWS removed, as HTTP does).
    match Parser::new(trimmed).parse::<Item>() {
        Err(_) => {
            assert_eq!(boolean, Err(SfError::Malformed), "{trimmed:?}");
            assert_eq!(integer, Err(SfError::Malformed), "{trimmed:?}");
        }
        Ok(item) => match item.bare_item {
            BareItem::Boolean(b) => {
                assert_eq!(boolean, Ok(b));
                assert_eq!(integer, Err(SfError::NotInteger));
            }
            BareItem::Integer(n) => {
                let n = i64::from(n);
                assert_eq!(boolean, Err(SfError::NotBoolean));
                if trimmed.first() == Some(&b'-') {
                    assert_eq!(integer, Err(SfError::Negative), "{trimmed:?}");
                } else {
                    assert_eq!(integer, Ok(u64::try_from(n).unwrap()), "{trimmed:?}");
                }
            }
            _ => {
                assert_eq!(boolean, Err(SfError::NotBoolean), "{trimmed:?}");
                assert_eq!(integer, Err(SfError::NotInteger), "{trimmed:?}");
            }
        },
    }

    if let Ok(b) = boolean {
        assert_eq!(sf::parse_bool(if b { b"?1" } else { b"?0" }), Ok(b));
    }
    if let Ok(n) = integer {
        assert!(n <= MAX_INTEGER);
        assert_eq!(sf::parse_integer(n.to_string().as_bytes()), Ok(n));
        if trimmed.iter().all(u8::is_ascii_digit) {
            assert_eq!(tus::parse_u64(data), Ok(n));
        }
    }

    // tus's Upload-Offset / Upload-Length.
    let tus_value = tus::parse_u64(data);
    let digits = trimmed.iter().all(u8::is_ascii_digit) && !trimmed.is_empty();
    if let Ok(n) = tus_value {
        assert!(digits && trimmed.len() <= tus::MAX_INTEGER_DIGITS);
        assert_eq!(tus::parse_u64(n.to_string().as_bytes()), Ok(n));
    }
    if digits && trimmed.len() <= tus::MAX_INTEGER_DIGITS {
        let std: u64 = std::str::from_utf8(trimmed).unwrap().parse().unwrap();
        assert_eq!(tus_value, Ok(std));
    } else {
        assert!(tus_value.is_err());
    }

    // Upload-Limit made from the input: sfv reads the same (clamped) integers back.
    let values: Vec<u64> = data
        .chunks(8)
        .take(5)
        .map(|c| c.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
        .collect();
    let keys = [
        "max-size",
        "min-size",
        "max-append-size",
        "min-append-size",
        "max-age",
    ];
    let members: Vec<(&str, u64)> = keys.iter().copied().zip(values.iter().copied()).collect();
    let header = sf::serialize_dictionary_ints(&members);
    if members.is_empty() {
        assert_eq!(header, "");
    } else {
        let dict: Dictionary = Parser::new(&header).parse().expect("a Dictionary");
        assert_eq!(dict.len(), members.len());
        for ((key, value), (k, entry)) in members.iter().zip(&dict) {
            assert_eq!(k.as_str(), *key);
            let ListEntry::Item(item) = entry else {
                panic!("{header:?}")
            };
            assert_eq!(
                item.bare_item,
                BareItem::Integer((*value).min(MAX_INTEGER).try_into().unwrap())
            );
        }
    }
});
