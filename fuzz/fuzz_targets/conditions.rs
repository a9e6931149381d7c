//! `Conditions::parse` on arbitrary bytes: never panics; a refusal is a short 400
//! `conditions_invalid`; an accepted document rebuilds through the public constructors, and
//! its evaluation against fixed facts at every phase is consistent: always decided at
//! `Complete`, agreeing with the per-rule outcomes, never changing its mind once decided as
//! more facts arrive, and unchanged when combined with itself in `UploadConditions`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use tower_uploads::conditions::{
    Combine, Conditions, Decision, Facts, Outcome, Phase, Rule, UploadConditions,
};
use tower_uploads::error::ApiError;
use tower_uploads::media::{Kind, MediaFacts};

fn media(kind: Kind, mime: &str, recognised: bool) -> MediaFacts {
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
        recognised,
    }
}

fn check(c: &Conditions, facts: &Facts<'_>) -> Decision {
    let e = c.evaluate(facts);
    let d = e.decision();
    let outcomes: Vec<Outcome> = c.rules().iter().map(|r| r.evaluate(facts)).collect();
    let fails = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Fails(_)))
        .count();
    let unknown = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Unknown))
        .count();
    let holds = outcomes.len() - fails - unknown;
    assert_eq!(e.failing().len(), fails);
    assert_eq!(e.pending().len(), unknown);
    let expected = if outcomes.is_empty() {
        Decision::Pass
    } else {
        match c.operator() {
            Combine::And if fails > 0 => Decision::Fail,
            Combine::And if unknown == 0 => Decision::Pass,
            Combine::Or if holds > 0 => Decision::Pass,
            Combine::Or if unknown == 0 => Decision::Fail,
            _ => Decision::Undecided,
        }
    };
    assert_eq!(d, expected);
    if facts.phase == Phase::Complete {
        assert_eq!(unknown, 0);
        assert_ne!(d, Decision::Undecided);
    }
    let message = e.message();
    assert!(!message.is_empty());
    if d == Decision::Fail {
        let err = e.to_api_error();
        assert_eq!(err.status().as_u16(), 422);
        assert!(message.starts_with("conditions failed: "));
    }
    // Both app and session: the same decision as once.
    let arc = Arc::new(c.clone());
    let mut both = UploadConditions::new().with_app(Arc::clone(&arc));
    both.set_session(Some(arc));
    assert_eq!(both.evaluate(facts).decision(), d);
    d
}

fuzz_target!(|data: &[u8]| {
    let c = match Conditions::parse(data) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            assert!(message.len() < 1024, "{message}");
            let api = ApiError::from(e);
            assert_eq!(api.status().as_u16(), 400);
            return;
        }
    };
    // The constructors accept what the parser accepts.
    let rules: Vec<Rule> = c
        .rules()
        .iter()
        .map(|r| Rule::new(r.key(), r.operator(), r.value().clone()).unwrap())
        .collect();
    assert_eq!(Conditions::new(c.operator(), rules).unwrap(), c);

    // A size derived from the input, and a few fixed ones.
    let tail = &data[data.len().saturating_sub(8)..];
    let derived = tail.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    let image = MediaFacts {
        width: Some(1920),
        height: Some(1080),
        ..media(Kind::Image, "image/png", true)
    };
    let video_head = media(Kind::Video, "video/mp4", true);
    let video = MediaFacts {
        width: Some(1280),
        height: Some(720),
        duration: Some(299.5),
        fps: Some(29.97),
        frames: Some(8976),
        bitrate: Some(5_000_000),
        ..video_head.clone()
    };
    let odd = MediaFacts {
        duration: Some(f64::NAN),
        fps: Some(f64::INFINITY),
        width: Some(u32::MAX),
        bitrate: Some(u64::MAX),
        ..media(Kind::Other, "image/png", false)
    };
    for size in [0, 1, 104_857_600, u64::MAX, derived] {
        let declared = check(&c, &Facts::declared(Some(size)));
        for (head_media, complete_media) in [(&image, &image), (&video_head, &video), (&odd, &odd)]
        {
            let head = check(&c, &Facts::head(Some(size), head_media));
            let complete = check(&c, &Facts::complete(size, complete_media));
            // Once decided, more facts never change the answer.
            if declared != Decision::Undecided {
                assert_eq!(head, declared);
            }
            if head != Decision::Undecided {
                assert_eq!(complete, head);
            }
        }
    }
    check(&c, &Facts::declared(None));
    check(&c, &Facts::head(None, &video_head));
});
