use super::*;
use proptest::prelude::*;

fn u(text: &str) -> ResourceUnits {
    text.parse().unwrap()
}

#[test]
fn resources_parse_as_on_the_command_line_and_bad_ones_say_why() {
    let r = parse_resources("gpu=2, mem=16,fpga, tpu=0.5").unwrap();
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        vec![
            ("fpga".into(), ResourceUnits::whole(1)),
            ("gpu".into(), ResourceUnits::whole(2)),
            ("mem".into(), ResourceUnits::whole(16)),
            ("tpu".into(), ResourceUnits::from_milli(500)),
        ]
    );
    for (text, says) in [
        ("gpu=x", "not a number of units"),
        ("gpu=NaN", "not a number of units"),
        ("gpu=inf", "not a number of units"),
        ("gpu=.", "not a number of units"),
        ("gpu=1e3", "not a number of units"),
        ("gpu=0", "more than 0 units"),
        ("gpu=0.000", "more than 0 units"),
        ("gpu=-1", "negative"),
        ("gpu=-0.5", "negative"),
        ("gpu=0.0005", "more than 3 decimals"),
        ("gpu=1.2345", "more than 3 decimals"),
        ("gpu=4294967296", "too many units"),
        ("gpu=99999999999999999999", "too many units"),
        ("gpu=1,gpu=2", "twice"),
        ("g pu=1", "resource name"),
    ] {
        let e = parse_resources(text).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
    }
    assert_eq!(
        parse_resources("gpu=4294967295").unwrap()["gpu"],
        ResourceUnits::whole(u32::MAX)
    );
    assert_eq!(u(".5"), u("0.500"));
    assert_eq!(u("1."), ResourceUnits::whole(1));
    assert_eq!(resource_queue("q", ["a", "b"]), "q[a,b]");
}

#[test]
fn fractional_sums_are_exact() {
    let tenth = u("0.1");
    let sum = tenth.saturating_add(u("0.2"));
    assert_eq!(sum, u("0.3"));
    assert_eq!(sum.to_string(), "0.3");
    assert_eq!(u("1").checked_sub(u("0.75")), Some(u("0.25")));
    assert_eq!(u("0.5").checked_sub(u("0.75")), None);
    assert_eq!(u("1.25").to_string(), "1.25");
    assert_eq!(u("1.5").whole_part(), 1);
    assert!(ResourceUnits::from_f64(f64::NAN).is_err());
    assert!(ResourceUnits::from_f64(-0.5).is_err());
    assert!(ResourceUnits::from_f64(0.0001)
        .unwrap_err()
        .contains("3 decimals"));
    assert_eq!(ResourceUnits::from_f64(0.1).unwrap(), tenth);
}

/// Records written before fractions (whole units as integers) still decode, and whole
/// amounts are still written as integers, so older readers read newer records.
#[test]
fn whole_units_keep_the_integer_wire_format() {
    let old: Resources = serde_json::from_str(r#"{"gpu":2,"mem":16}"#).unwrap();
    assert_eq!(old["gpu"], ResourceUnits::whole(2));
    assert_eq!(
        serde_json::to_string(&old).unwrap(),
        r#"{"gpu":2,"mem":16}"#
    );
    let half = parse_resources("gpu=0.5").unwrap();
    assert_eq!(serde_json::to_string(&half).unwrap(), r#"{"gpu":0.5}"#);
    let old_mp = rmp_serde::to_vec(&std::collections::BTreeMap::from([("gpu", 3u32)])).unwrap();
    let r: Resources = rmp_serde::from_slice(&old_mp).unwrap();
    assert_eq!(r["gpu"], ResourceUnits::whole(3));
    for bad in [
        r#"{"gpu":-1}"#,
        r#"{"gpu":0.0001}"#,
        r#"{"gpu":5000000000}"#,
    ] {
        assert!(serde_json::from_str::<Resources>(bad).is_err(), "{bad}");
    }
}

proptest! {
    /// Text, JSON and MessagePack all give back exactly the amount written.
    #[test]
    fn units_round_trip(milli in 0u64..=text::MAX_MILLI) {
        let units = ResourceUnits::from_milli(milli);
        prop_assert_eq!(units.to_string().parse::<ResourceUnits>().unwrap(), units);
        let json = serde_json::to_string(&units).unwrap();
        prop_assert_eq!(serde_json::from_str::<ResourceUnits>(&json).unwrap(), units);
        let mp = rmp_serde::to_vec(&units).unwrap();
        prop_assert_eq!(rmp_serde::from_slice::<ResourceUnits>(&mp).unwrap(), units);
    }

    /// Small amounts, where fractions are common, round trip as well.
    #[test]
    fn small_units_round_trip(milli in 0u64..100_000) {
        let units = ResourceUnits::from_milli(milli);
        let json = serde_json::to_string(&units).unwrap();
        prop_assert_eq!(serde_json::from_str::<ResourceUnits>(&json).unwrap(), units);
        prop_assert_eq!(ResourceUnits::from_f64(milli as f64 / 1000.0).unwrap(), units);
    }
}
