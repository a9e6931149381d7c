//! Table tests of the model and the evaluation (the layer's tests are in `layer.rs`).

use super::*;
use crate::error::{ApiError, ErrorKind};
use crate::media::{Kind, MediaFacts};
use http::StatusCode;

fn media(kind: Kind, mime: &str) -> MediaFacts {
    MediaFacts {
        kind,
        mime_type: mime.to_owned(),
        width: None,
        height: None,
        duration: None,
        fps: None,
        frames: None,
        bitrate: None,
        codec: None,
        container: None,
        recognised: true,
    }
}

/// Every numeric property set to `n`.
fn all_numbers(n: u32) -> MediaFacts {
    MediaFacts {
        width: Some(n),
        height: Some(n),
        duration: Some(f64::from(n)),
        fps: Some(f64::from(n)),
        bitrate: Some(u64::from(n)),
        ..media(Kind::Video, "video/mp4")
    }
}

fn rule(key: Key, op: Op, value: Value) -> Rule {
    Rule::new(key, op, value).unwrap()
}

fn int(n: u64) -> Value {
    Value::Number(Number::Int(n))
}

fn float(f: f64) -> Value {
    Value::Number(Number::Float(f))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn parse(json: &str) -> Conditions {
    Conditions::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn holds(r: &Rule, facts: &Facts<'_>) -> bool {
    match r.evaluate(facts) {
        Outcome::Holds => true,
        Outcome::Fails(_) => false,
        Outcome::Unknown => panic!("{r}: unknown"),
    }
}

#[test]
fn every_numeric_key_with_every_operator() {
    let m = all_numbers(100);
    let facts = Facts::complete(100, &m);
    // (op, value, holds) for a fact of 100.
    let table: &[(Op, u64, bool)] = &[
        (Op::Eq, 100, true),
        (Op::Eq, 99, false),
        (Op::Ne, 100, false),
        (Op::Ne, 101, true),
        (Op::Gt, 99, true),
        (Op::Gt, 100, false),
        (Op::Lt, 101, true),
        (Op::Lt, 100, false),
        (Op::Ge, 100, true),
        (Op::Ge, 101, false),
        (Op::Le, 100, true),
        (Op::Le, 99, false),
    ];
    let numeric = [
        Key::Filesize,
        Key::Width,
        Key::Height,
        Key::Duration,
        Key::Fps,
        Key::Bitrate,
    ];
    for key in numeric {
        for &(op, value, want) in table {
            for v in [int(value), float(value as f64)] {
                let r = rule(key, op, v.clone());
                assert_eq!(holds(&r, &facts), want, "{r}");
            }
            // And with a fraction just beside the value.
            let r = rule(key, op, float(value as f64 + 0.5));
            let want = match op {
                Op::Eq => false,
                Op::Ne => true,
                Op::Gt | Op::Ge => 100.0 > value as f64 + 0.5,
                Op::Lt | Op::Le => 100.0 < value as f64 + 0.5,
            };
            assert_eq!(holds(&r, &facts), want, "{r}");
        }
    }
    // Every operator appears, every key too.
    let ops: std::collections::HashSet<_> = table.iter().map(|t| t.0).collect();
    assert_eq!(ops.len(), Op::ALL.len());
}

#[test]
fn every_string_key_with_every_operator() {
    let m = media(Kind::Image, "image/png");
    let facts = Facts::head(None, &m);
    // (key, op, value, holds)
    let table: &[(Key, Op, &str, bool)] = &[
        (Key::Kind, Op::Eq, "image", true),
        (Key::Kind, Op::Eq, "IMAGE", true),
        (Key::Kind, Op::Eq, "video", false),
        (Key::Kind, Op::Ne, "video", true),
        (Key::Kind, Op::Ne, "image", false),
        (Key::Kind, Op::Eq, "other", false),
        (Key::Mimetype, Op::Eq, "image/png", true),
        (Key::Mimetype, Op::Eq, "Image/PNG", true),
        (Key::Mimetype, Op::Eq, "image/jpeg", false),
        (Key::Mimetype, Op::Ne, "image/jpeg", true),
        (Key::Mimetype, Op::Ne, "image/png", false),
        (Key::Mimetype, Op::Eq, "image/*", true),
        (Key::Mimetype, Op::Eq, "IMAGE/*", true),
        (Key::Mimetype, Op::Eq, "video/*", false),
        (Key::Mimetype, Op::Ne, "video/*", true),
        (Key::Mimetype, Op::Ne, "image/*", false),
    ];
    for &(key, op, value, want) in table {
        let r = rule(key, op, text(value));
        assert_eq!(holds(&r, &facts), want, "{r}");
    }
    // Ordering operators on strings cannot be built.
    for key in [Key::Kind, Key::Mimetype] {
        for op in [Op::Gt, Op::Lt, Op::Ge, Op::Le] {
            let err = Rule::new(key, op, text("image")).unwrap_err();
            assert!(
                err.to_string().contains("compares with `==` or `!=` only"),
                "{err}"
            );
        }
    }
}

#[test]
fn kinds_and_unrecognised_types() {
    for (kind, name) in [
        (Kind::Image, "image"),
        (Kind::Video, "video"),
        (Kind::Audio, "audio"),
        (Kind::Other, "other"),
    ] {
        let m = media(kind, "x/y");
        let r = rule(Key::Kind, Op::Eq, text(name));
        assert!(holds(&r, &Facts::head(None, &m)), "{name}");
    }
    // Conditions see `application/octet-stream` for bytes that were not recognised, whatever
    // the hint said.
    let m = MediaFacts {
        recognised: false,
        ..media(Kind::Other, "image/png")
    };
    let facts = Facts::head(None, &m);
    assert_eq!(
        rule(Key::Mimetype, Op::Eq, text("image/png")).evaluate(&facts),
        Outcome::Fails(Found::Text("application/octet-stream".into()))
    );
    assert!(holds(
        &rule(Key::Mimetype, Op::Eq, text("application/octet-stream")),
        &facts
    ));
    assert!(holds(&rule(Key::Mimetype, Op::Ne, text("image/*")), &facts));
}

#[test]
fn exact_number_comparisons() {
    const TWO_53: u64 = 1 << 53;
    let m = MediaFacts {
        duration: Some(1.5),
        fps: Some(29.97),
        ..all_numbers(1920)
    };
    let at = |size: u64| Facts::complete(size, &m);
    // (key, op, value, filesize, holds)
    let table: &[(Key, Op, Value, u64, bool)] = &[
        (Key::Filesize, Op::Eq, float(1e3), 1000, true),
        (Key::Filesize, Op::Eq, float(1000.5), 1000, false),
        (Key::Filesize, Op::Lt, float(1000.5), 1000, true),
        (Key::Filesize, Op::Gt, float(999.999), 1000, true),
        (Key::Filesize, Op::Le, float(0.0), 0, true),
        (Key::Filesize, Op::Ge, float(-0.0), 0, true),
        // Beyond f64's integers: exact, where `as f64` would call them equal.
        (
            Key::Filesize,
            Op::Gt,
            float(TWO_53 as f64),
            TWO_53 + 1,
            true,
        ),
        (Key::Filesize, Op::Eq, int(TWO_53 + 1), TWO_53 + 1, true),
        (Key::Filesize, Op::Ne, int(TWO_53), TWO_53 + 1, true),
        (
            Key::Filesize,
            Op::Lt,
            float(18_446_744_073_709_551_616.0),
            u64::MAX,
            true,
        ),
        (Key::Filesize, Op::Eq, int(u64::MAX), u64::MAX, true),
        (Key::Width, Op::Lt, float(1920.5), 0, true),
        (Key::Width, Op::Le, int(1919), 0, false),
        (Key::Duration, Op::Gt, int(1), 0, true),
        (Key::Duration, Op::Lt, int(2), 0, true),
        (Key::Duration, Op::Eq, float(1.5), 0, true),
        (Key::Duration, Op::Gt, float(-1.0), 0, true),
        (Key::Fps, Op::Ge, float(29.97), 0, true),
        (Key::Fps, Op::Gt, int(30), 0, false),
        (Key::Bitrate, Op::Le, float(1920.0), 0, true),
    ];
    for (key, op, value, size, want) in table {
        let r = rule(*key, *op, value.clone());
        assert_eq!(holds(&r, &at(*size)), *want, "{r} (filesize {size})");
    }
    // A NaN fact counts as absent.
    let nan = MediaFacts {
        duration: Some(f64::NAN),
        ..all_numbers(1)
    };
    let r = rule(Key::Duration, Op::Ne, int(1));
    assert_eq!(r.evaluate(&Facts::head(None, &nan)), Outcome::Unknown);
    assert_eq!(
        r.evaluate(&Facts::complete(1, &nan)),
        Outcome::Fails(Found::Missing)
    );
}

#[test]
fn missing_properties_at_each_phase() {
    let image = MediaFacts {
        width: Some(640),
        height: Some(480),
        ..media(Kind::Image, "image/png")
    };
    // (key, declared (no media), head (image), complete (image))
    use Outcome::{Holds, Unknown};
    let missing = Outcome::Fails(Found::Missing);
    let table: &[(Key, Value, Outcome, Outcome, Outcome)] = &[
        (Key::Filesize, int(10), Holds, Holds, Holds),
        (Key::Kind, text("image"), Unknown, Holds, Holds),
        (Key::Mimetype, text("image/png"), Unknown, Holds, Holds),
        (Key::Width, int(0), Unknown, Holds, Holds),
        (Key::Height, int(0), Unknown, Holds, Holds),
        (Key::Duration, int(0), Unknown, Unknown, missing.clone()),
        (Key::Fps, int(0), Unknown, Unknown, missing.clone()),
        (Key::Bitrate, int(0), Unknown, Unknown, missing.clone()),
    ];
    for (key, value, declared, head, complete) in table {
        // `!=` so that a present property holds; a missing one fails even for `!=`.
        let op = if key.is_text() { Op::Eq } else { Op::Ne };
        let r = rule(*key, op, value.clone());
        assert_eq!(&r.evaluate(&Facts::declared(Some(5))), declared, "{r}");
        assert_eq!(&r.evaluate(&Facts::head(Some(5), &image)), head, "{r}");
        assert_eq!(&r.evaluate(&Facts::complete(5, &image)), complete, "{r}");
    }
    // An unknown size stays pending until complete.
    let r = rule(Key::Filesize, Op::Lt, int(10));
    assert_eq!(r.evaluate(&Facts::declared(None)), Unknown);
    assert_eq!(r.evaluate(&Facts::head(None, &image)), Unknown);
    let no_size = Facts {
        filesize: None,
        ..Facts::complete(0, &image)
    };
    assert_eq!(r.evaluate(&no_size), missing);
    // A media rule with no media at all, complete: does not hold.
    let bare = Facts {
        phase: Phase::Complete,
        filesize: Some(1),
        media: None,
    };
    assert_eq!(
        rule(Key::Kind, Op::Ne, text("video")).evaluate(&bare),
        missing
    );
    assert!(Phase::Complete.is_final() && !Phase::Head.is_final());
}

/// `&&` and `||` over rules that hold (H), fail (F) or are unknown (U).
#[test]
fn combining() {
    use Decision::{Fail, Pass, Undecided};
    let h = r#"{"key": "filesize", "operator": "<", "value": 10}"#;
    let f = r#"{"key": "filesize", "operator": ">", "value": 10}"#;
    let u = r#"{"key": "duration", "operator": "<", "value": 10}"#;
    let table: &[(&str, &[&str], Decision)] = &[
        ("&&", &[], Pass),
        ("||", &[], Pass),
        ("&&", &[h], Pass),
        ("&&", &[h, h], Pass),
        ("&&", &[f], Fail),
        ("&&", &[h, f], Fail),
        ("&&", &[u, f], Fail),
        ("&&", &[u, h], Undecided),
        ("&&", &[u], Undecided),
        ("||", &[h], Pass),
        ("||", &[f, h], Pass),
        ("||", &[u, h], Pass),
        ("||", &[f], Fail),
        ("||", &[f, f], Fail),
        ("||", &[f, u], Undecided),
        ("||", &[u], Undecided),
    ];
    for (op, rules, want) in table {
        let json = format!(r#"{{"operator": "{op}", "rules": [{}]}}"#, rules.join(","));
        let c = parse(&json);
        let e = c.evaluate(&Facts::declared(Some(5)));
        assert_eq!(e.decision(), *want, "{json}");
        assert_eq!(e.operator().as_str(), *op);
        // The same at `Complete` (the unknown ones fail there): always decided.
        let m = media(Kind::Image, "image/png");
        let complete = c.evaluate(&Facts::complete(5, &m));
        assert_ne!(complete.decision(), Undecided, "{json}");
        assert!(complete.pending().is_empty());
    }
}

#[test]
fn failure_messages() {
    let c = parse(
        r#"{"operator": "&&", "rules": [
            {"key": "kind", "operator": "==", "value": "image"},
            {"key": "filesize", "operator": "<=", "value": 1048576},
            {"key": "width", "operator": "<=", "value": 1920},
            {"key": "kind", "operator": "==", "value": "video"},
            {"key": "type", "operator": "==", "value": "video/*"},
            {"key": "duration", "operator": "<", "value": 60.5},
            {"key": "fps", "operator": ">=", "value": 24},
            {"key": "bitrate", "operator": ">", "value": 1},
            {"key": "height", "operator": "<", "value": 100}
        ]}"#,
    );
    let m = MediaFacts {
        width: Some(4000),
        height: Some(3000),
        ..media(Kind::Image, "image/jpeg")
    };
    let e = c.evaluate(&Facts::complete(2_000_000, &m));
    assert_eq!(e.decision(), Decision::Fail);
    assert_eq!(e.failing_indices(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        e.message(),
        "conditions failed: \
         rules[1] (filesize <= 1048576: the file has 2000000 bytes), \
         rules[2] (width <= 1920: the file is 4000 px wide), \
         rules[3] (kind == \"video\": the file is image), \
         rules[4] (mimetype == \"video/*\": the file's type is image/jpeg), \
         rules[5] (duration < 60.5: the file has no duration), \
         rules[6] (fps >= 24: the file has no frame rate), \
         rules[7] (bitrate > 1: the file has no bitrate), \
         rules[8] (height < 100: the file is 3000 px high)"
    );
    let err = e.to_api_error();
    assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err.kind(), ErrorKind::ConditionsFailed);
    assert_eq!(err.message(), e.message());

    let video = MediaFacts {
        duration: Some(90.25),
        fps: Some(23.976),
        bitrate: Some(0),
        ..media(Kind::Video, "video/mp4")
    };
    let c = parse(
        r#"{"operator": "||", "rules": [
            {"key": "duration", "operator": "<", "value": 60},
            {"key": "fps", "operator": ">=", "value": 24},
            {"key": "bitrate", "operator": ">", "value": 0}
        ]}"#,
    );
    let e = c.evaluate(&Facts::complete(1, &video));
    assert_eq!(
        e.message(),
        "conditions failed: none of the rules holds: \
         rules[0] (duration < 60: the file lasts 90.25 s), \
         rules[1] (fps >= 24: the file has 23.976 fps), \
         rules[2] (bitrate > 0: the file's bitrate is 0)"
    );
    // Not failed: the message says so.
    assert_eq!(
        c.evaluate(&Facts::declared(Some(1))).message(),
        "conditions pending: facts not known yet for rules[0], rules[1], rules[2]"
    );
    assert_eq!(
        Conditions::default()
            .evaluate(&Facts::declared(None))
            .message(),
        "conditions hold"
    );
}

#[test]
fn upload_conditions_combine_with_and() {
    use std::sync::Arc;
    let app = Arc::new(parse(
        r#"{"operator": "||", "rules": [
            {"key": "kind", "operator": "==", "value": "image"},
            {"key": "kind", "operator": "==", "value": "video"}]}"#,
    ));
    let session = Arc::new(parse(
        r#"{"rules": [{"key": "filesize", "operator": "<", "value": 100}]}"#,
    ));
    let audio = media(Kind::Audio, "audio/mpeg");
    let image = media(Kind::Image, "image/gif");

    assert!(UploadConditions::new().is_empty());
    let none = UploadConditions::new().evaluate(&Facts::declared(None));
    assert_eq!(none.decision(), Decision::Pass);

    let mut c = UploadConditions::new().with_app(Arc::clone(&app));
    assert!(!c.is_empty());
    c.set_session(Some(Arc::clone(&session)));
    // (facts, decision)
    let table = [
        (Facts::declared(Some(50)), Decision::Undecided),
        (Facts::declared(Some(500)), Decision::Fail),
        (Facts::head(Some(50), &image), Decision::Pass),
        (Facts::head(None, &image), Decision::Undecided),
        (Facts::head(Some(50), &audio), Decision::Fail),
        (Facts::complete(50, &image), Decision::Pass),
        (Facts::complete(500, &image), Decision::Fail),
    ];
    for (facts, want) in table {
        let v = c.evaluate(&facts);
        assert_eq!(v.decision(), want, "{facts:?}");
        assert_eq!(v.app().len(), 1);
        assert!(v.session().is_some());
    }
    let v = c.evaluate(&Facts::complete(500, &audio));
    assert_eq!(
        v.message(),
        "conditions failed: none of the app's rules holds: \
         the app's rules[0] (kind == \"image\": the file is audio), \
         the app's rules[1] (kind == \"video\": the file is audio); \
         the upload's rules[0] (filesize < 100: the file has 500 bytes)"
    );
    let err = v.to_api_error();
    assert_eq!(
        (err.status(), err.kind()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::ConditionsFailed
        )
    );
    let v = c.evaluate(&Facts::declared(Some(1)));
    assert_eq!(
        v.message(),
        "conditions pending: facts not known yet for the app's rules[0], the app's rules[1]"
    );
}

/// ittybit's example (seed 004, "Upload Conditions"), as the JSON its `conditions.js` sends.
const SEED: &str = r#"{
  "operator": "&&",
  "rules": [
    { "key": "kind", "operator": "==", "value": "video" },
    { "key": "filesize", "operator": "<=", "value": 104857600 },
    { "key": "width", "operator": "<=", "value": 1920 },
    { "key": "height", "operator": "<=", "value": 1920 },
    { "key": "duration", "operator": "<=", "value": 300 }
  ]
}"#;

#[test]
fn seed_example() {
    let c = parse(SEED);
    assert_eq!(c.operator(), Combine::And);
    let shown: Vec<String> = c.rules().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "kind == \"video\"",
            "filesize <= 104857600",
            "width <= 1920",
            "height <= 1920",
            "duration <= 300"
        ]
    );
    let ok = MediaFacts {
        width: Some(1920),
        height: Some(1080),
        duration: Some(300.0),
        ..media(Kind::Video, "video/mp4")
    };
    assert_eq!(
        c.evaluate(&Facts::complete(104_857_600, &ok)).decision(),
        Decision::Pass
    );
    assert_eq!(
        c.evaluate(&Facts::complete(104_857_601, &ok))
            .failing_indices(),
        [1]
    );
    let long = MediaFacts {
        duration: Some(300.001),
        ..ok.clone()
    };
    assert_eq!(
        c.evaluate(&Facts::complete(1, &long)).failing_indices(),
        [4]
    );
    let image = MediaFacts {
        width: Some(4000),
        height: Some(100),
        ..media(Kind::Image, "image/webp")
    };
    let e = c.evaluate(&Facts::head(Some(1), &image));
    assert_eq!((e.failing_indices(), e.pending()), (vec![0, 2], &[4][..]));
    assert_eq!(e.decision(), Decision::Fail);
}

#[test]
fn round_trips_through_serde() {
    let docs = [
        SEED,
        r#"{"operator": "||", "rules": [{"key": "type", "operator": "!=", "value": "image/*"},
            {"key": "fps", "operator": ">", "value": 29.97},
            {"key": "duration", "operator": ">", "value": -1},
            {"key": "bitrate", "operator": ">=", "value": 1.5e3}]}"#,
        r#"{"rules": []}"#,
    ];
    for doc in docs {
        let c = parse(doc);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(parse(&json), c, "{json}");
        // Through serde's Deserialize, inside another document.
        #[derive(serde::Deserialize)]
        struct Session {
            conditions: Option<Conditions>,
        }
        let s: Session = serde_json::from_str(&format!(r#"{{"conditions": {json}}}"#)).unwrap();
        assert_eq!(s.conditions, Some(c));
    }
    let json = serde_json::to_value(parse(
        r#"{"rules": [{"key": "type", "operator": "==", "value": "image/png"}]}"#,
    ))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"operator": "&&", "rules": [{"key": "mimetype", "operator": "==", "value": "image/png"}]})
    );
    let c: Conditions = SEED.parse().unwrap();
    assert_eq!(c, parse(SEED));
    // Serde refuses what `parse` refuses, duplicates included.
    let err = serde_json::from_str::<Conditions>(r#"{"rules": [], "rules": []}"#).unwrap_err();
    assert!(
        err.to_string().contains("duplicate field \"rules\""),
        "{err}"
    );
    let err = serde_json::from_str::<Conditions>(r#"{"rules": [{"key": "kind"}]}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("rules[0]: missing field \"operator\""),
        "{err}"
    );
}

#[test]
fn operator_may_be_left_out() {
    let c = parse(r#"{"rules": [{"key": "kind", "operator": "==", "value": "video"}]}"#);
    assert_eq!(c.operator(), Combine::And);
    let c = parse(r#"{"rules": []}"#);
    assert_eq!(c, Conditions::default());
    assert_eq!(
        c.evaluate(&Facts::declared(None)).decision(),
        Decision::Pass
    );
}

#[test]
fn type_alias() {
    let a = parse(
        r#"{"operator": "&&", "rules": [{"key": "type", "operator": "==", "value": "image/png"}]}"#,
    );
    let b = parse(
        r#"{"operator": "&&", "rules": [{"key": "mimetype", "operator": "==", "value": "image/png"}]}"#,
    );
    assert_eq!(a, b);
    assert_eq!(a.rules()[0].key(), Key::Mimetype);
    assert_eq!(Key::from_name("type"), Some(Key::Mimetype));
    for key in Key::ALL {
        assert_eq!(Key::from_name(key.as_str()), Some(key));
    }
    for op in Op::ALL {
        assert_eq!(Op::from_symbol(op.as_str()), Some(op));
    }
}

#[test]
fn invalid_documents() {
    let many = |n: usize| {
        let rule = r#"{"key": "filesize", "operator": ">", "value": 1}"#;
        format!(
            r#"{{"operator": "&&", "rules": [{}]}}"#,
            vec![rule; n].join(",")
        )
    };
    // A MIME type of `n` bytes (127 for the type, the rest for the subtype).
    let long = |n: usize| {
        format!(
            r#"{{"rules": [{{"key": "mimetype", "operator": "==", "value": "{}/{}"}}]}}"#,
            "t".repeat(127),
            "s".repeat(n - 128)
        )
    };
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let big = format!(r#"{{"rules": [], "x": "{}"}}"#, "a".repeat(MAX_JSON));
    // (document, the error's message contains)
    let table: Vec<(String, &str)> = vec![
        // Not a conditions object.
        ("".into(), "not valid JSON: EOF"),
        ("{".into(), "not valid JSON"),
        ("null".into(), "expected an object {\"operator\", \"rules\"}, found null"),
        ("[]".into(), "found an array"),
        ("\"&&\"".into(), "found the string \"&&\""),
        ("42".into(), "found the number 42"),
        ("{} x".into(), "not valid JSON: trailing characters"),
        (deep, "not valid JSON: recursion limit exceeded"),
        (big, "bytes long; at most 16384 are accepted"),
        // The top level.
        (r#"{"operator": "&&"}"#.into(), "missing field \"rules\""),
        (r#"{"operator": "&&", "rules": [], "extra": 1}"#.into(), "unknown field \"extra\"; expected \"operator\" and \"rules\""),
        (r#"{"operator": "&&", "rule": []}"#.into(), "unknown field \"rule\""),
        (r#"{"operator": "and", "rules": []}"#.into(), "unknown operator \"and\"; expected \"&&\" or \"||\""),
        (r#"{"operator": "&", "rules": []}"#.into(), "unknown operator \"&\""),
        (r#"{"operator": null, "rules": []}"#.into(), "\"operator\" must be \"&&\" or \"||\", found null"),
        (r#"{"operator": "&&", "rules": {}}"#.into(), "\"rules\" must be an array, found an object"),
        (r#"{"rules": null}"#.into(), "\"rules\" must be an array, found null"),
        (r#"{"operator": "&&", "operator": "||", "rules": []}"#.into(), "duplicate field \"operator\""),
        (many(65), "65 rules; at most 64 are accepted"),
        // A rule's shape.
        (r#"{"rules": [[]]}"#.into(), "rules[0]: expected an object {\"key\", \"operator\", \"value\"}, found an array"),
        (r#"{"rules": ["kind == video"]}"#.into(), "rules[0]: expected an object"),
        (r#"{"rules": [{"key": "kind", "operator": "==", "value": "video", "note": 1}]}"#.into(), "rules[0]: unknown field \"note\""),
        (r#"{"rules": [{"key": "kind", "operator": "==", "value": "video", "key": "width"}]}"#.into(), "duplicate field \"key\""),
        (r#"{"rules": [{"operator": "==", "value": "video"}]}"#.into(), "rules[0]: missing field \"key\""),
        (r#"{"rules": [{"key": "kind", "value": "video"}]}"#.into(), "rules[0]: missing field \"operator\""),
        (r#"{"rules": [{"key": "kind", "operator": "=="}]}"#.into(), "rules[0]: missing field \"value\""),
        // Keys and operators.
        (r#"{"rules": [{"key": "filesize", "operator": ">", "value": 1}, {"key": "size", "operator": "<", "value": 1}]}"#.into(), "rules[1]: unknown key \"size\"; expected one of kind, mimetype (or type)"),
        (r#"{"rules": [{"key": "Kind", "operator": "==", "value": "video"}]}"#.into(), "rules[0]: unknown key \"Kind\""),
        (r#"{"rules": [{"key": "frames", "operator": ">", "value": 1}]}"#.into(), "unknown key \"frames\""),
        (r#"{"rules": [{"key": 1, "operator": "==", "value": "video"}]}"#.into(), "rules[0]: \"key\" must be a string, found the number 1"),
        (r#"{"rules": [{"key": "width", "operator": "=", "value": 1}]}"#.into(), "rules[0]: unknown operator \"=\"; expected one of ==, !=, >, <, >=, <="),
        (r#"{"rules": [{"key": "width", "operator": "=>", "value": 1}]}"#.into(), "unknown operator \"=>\""),
        (r#"{"rules": [{"key": "width", "operator": "===", "value": 1}]}"#.into(), "unknown operator \"===\""),
        (r#"{"rules": [{"key": "width", "operator": ["<"], "value": 1}]}"#.into(), "\"operator\" must be a string, found an array"),
        // Values.
        (r#"{"rules": [{"key": "kind", "operator": ">", "value": "video"}]}"#.into(), "rules[0]: `kind` compares with `==` or `!=` only, not `>`"),
        (r#"{"rules": [{"key": "mimetype", "operator": "<=", "value": "image/png"}]}"#.into(), "`mimetype` compares with `==` or `!=` only, not `<=`"),
        (r#"{"rules": [{"key": "type", "operator": ">=", "value": "image/png"}]}"#.into(), "`mimetype` compares with `==` or `!=` only, not `>=`"),
        (r#"{"rules": [{"key": "filesize", "operator": "<", "value": "10MB"}]}"#.into(), "rules[0]: `filesize` takes a number, found the string \"10MB\""),
        (r#"{"rules": [{"key": "width", "operator": "<", "value": "1920"}]}"#.into(), "`width` takes a number, found the string \"1920\""),
        (r#"{"rules": [{"key": "kind", "operator": "==", "value": 1}]}"#.into(), "`kind` takes a string, found the number 1"),
        (r#"{"rules": [{"key": "duration", "operator": "<", "value": null}]}"#.into(), "`duration` takes a number, found null"),
        (r#"{"rules": [{"key": "duration", "operator": "<", "value": true}]}"#.into(), "`duration` takes a number, found the boolean true"),
        (r#"{"rules": [{"key": "kind", "operator": "==", "value": ["video"]}]}"#.into(), "`kind` takes a string, found an array"),
        (r#"{"rules": [{"key": "fps", "operator": "==", "value": {"n": 1}}]}"#.into(), "`fps` takes a number, found an object"),
        (r#"{"rules": [{"key": "filesize", "operator": "<", "value": -1}]}"#.into(), "`filesize` cannot be negative, found -1"),
        (r#"{"rules": [{"key": "width", "operator": "<", "value": -0.5}]}"#.into(), "`width` cannot be negative, found -0.5"),
        (r#"{"rules": [{"key": "bitrate", "operator": ">", "value": -10}]}"#.into(), "`bitrate` cannot be negative"),
        (r#"{"rules": [{"key": "filesize", "operator": "<", "value": 1e400}]}"#.into(), "not valid JSON: number out of range"),
        (r#"{"rules": [{"key": "kind", "operator": "==", "value": "videos"}]}"#.into(), "unknown kind \"videos\"; expected \"image\", \"video\", \"audio\" or \"other\""),
        (r#"{"rules": [{"key": "mimetype", "operator": "==", "value": "png"}]}"#.into(), "\"png\" is not a MIME type `type/subtype`"),
        (r#"{"rules": [{"key": "mimetype", "operator": "==", "value": "text/plain; charset=utf-8"}]}"#.into(), "is not a MIME type"),
        (r#"{"rules": [{"key": "mimetype", "operator": "==", "value": "*/*"}]}"#.into(), "is not a MIME type"),
        (r#"{"rules": [{"key": "mimetype", "operator": "==", "value": ""}]}"#.into(), "\"\" is not a MIME type"),
        (long(256), "rules[0]: the value is 256 bytes long; at most 255 are accepted"),
    ];
    assert!(table.len() >= 25);
    for (doc, want) in &table {
        let err = Conditions::parse(doc.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(want),
            "{doc:.80}: {message:?} does not contain {want:?}"
        );
        // Messages stay short whatever the input.
        assert!(message.len() < 300, "{message}");
        let api = ApiError::from(err);
        assert_eq!(api.status(), StatusCode::BAD_REQUEST);
        assert_eq!(api.kind(), ErrorKind::ConditionsInvalid);
        assert!(api.message().starts_with("invalid conditions: "));
    }
    // The bounds themselves are accepted.
    assert_eq!(parse(&many(64)).rules().len(), 64);
    parse(&long(255));
    assert!(matches!(
        Conditions::parse(&[b' '; MAX_JSON + 1]),
        Err(ConditionsError::TooLarge { len }) if len == MAX_JSON + 1
    ));
    // Structured errors.
    assert_eq!(
        Conditions::parse(br#"{"rules": [{"key": "kind", "operator": "==", "value": "x"}]}"#)
            .unwrap_err(),
        ConditionsError::Rule {
            index: Some(0),
            reason: "unknown kind \"x\"; expected \"image\", \"video\", \"audio\" or \"other\""
                .into()
        }
    );
    // Long input is cut in messages.
    let doc = format!(
        r#"{{"rules": [{{"key": "{}", "operator": "==", "value": 1}}]}}"#,
        "k".repeat(5000)
    );
    let message = Conditions::parse(doc.as_bytes()).unwrap_err().to_string();
    assert!(message.contains("…") && message.len() < 300, "{message}");
}

#[test]
fn constructors_check_the_same_things() {
    assert!(Rule::new(Key::Filesize, Op::Lt, float(-1.0)).is_err());
    assert!(Rule::new(Key::Duration, Op::Lt, float(f64::NAN)).is_err());
    assert!(Rule::new(Key::Duration, Op::Lt, float(f64::INFINITY)).is_err());
    assert!(Rule::new(Key::Kind, Op::Eq, int(1)).is_err());
    assert!(Rule::new(Key::Width, Op::Eq, text("1")).is_err());
    let err = Rule::new(Key::Kind, Op::Eq, text("movie")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown kind \"movie\"; expected \"image\", \"video\", \"audio\" or \"other\""
    );
    let r = rule(Key::Duration, Op::Gt, float(-1.0));
    assert!(Conditions::new(Combine::Or, vec![r.clone(); MAX_RULES]).is_ok());
    let err = Conditions::new(Combine::Or, vec![r; MAX_RULES + 1]).unwrap_err();
    assert_eq!(err.to_string(), "65 rules; at most 64 are accepted");
    let c = Conditions::new(Combine::Or, vec![rule(Key::Fps, Op::Gt, int(1))]).unwrap();
    assert!(c.has_key(Key::Fps) && !c.has_key(Key::Filesize));
    assert_eq!(Number::Int(3).as_f64(), 3.0);
}
