//! `#[task]` registers functions and round-trips arguments and results through the registry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use lovage_core::{kinds, Codec, Registry, TaskError};
use lovage_macros::task;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

#[task(crate = lovage_core)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core, name = "geo.flip", queue = "geo", priority = 7, max_retries = 3, retry_backoff = "2s", time_limit = "1m", codec = "msgpack")]
pub fn flip(p: Point) -> Point {
    Point { x: p.y, y: p.x }
}

#[task(crate = lovage_core)]
fn parse(text: String) -> Result<i32, std::num::ParseIntError> {
    text.trim().parse()
}

#[task(crate = lovage_core)]
fn stringly(fail: bool) -> Result<(), String> {
    if fail {
        Err("asked to fail".into())
    } else {
        Ok(())
    }
}

#[task(crate = lovage_core)]
async fn double_later(v: u64) -> u64 {
    v * 2
}

#[task(crate = lovage_core)]
fn nothing() {}

#[task(crate = lovage_core)]
fn greet(name: String, greeting: Option<String>) -> String {
    format!("{}, {name}", greeting.unwrap_or_else(|| "hello".into()))
}

fn run<R: serde::de::DeserializeOwned>(
    sig: lovage_core::TypedSignature<R>,
) -> Result<R, TaskError> {
    sig.check()?;
    let s = sig.signature();
    let entry = Registry::global().get(&s.task)?;
    let bytes = entry.call_blocking(&s.args, s.codec)?;
    Ok(sig.decode_result(&bytes)?)
}

#[test]
fn functions_stay_callable_and_are_registered_by_name() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(add::NAME, "task_macro::add");
    assert_eq!(flip::NAME, "geo.flip");
    let names = Registry::global().names();
    for n in [
        "task_macro::add",
        "geo.flip",
        "task_macro::parse",
        "task_macro::double_later",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn signatures_run_through_the_registry() {
    assert_eq!(run(add::s(40, 2)).unwrap(), 42);
    assert_eq!(
        run(flip::s(Point { x: 1, y: 2 })).unwrap(),
        Point { x: 2, y: 1 }
    );
    assert_eq!(run(double_later::s(21)).unwrap(), 42);
    run(nothing::s()).unwrap();
    assert!(Registry::global()
        .get(double_later::NAME)
        .unwrap()
        .is_async());
}

#[test]
fn attribute_options_are_recorded() {
    let o = flip::options();
    assert_eq!(o.queue.as_deref(), Some("geo"));
    assert_eq!(o.priority, Some(7));
    assert_eq!(o.time_limit, Some(std::time::Duration::from_secs(60)));
    assert_eq!(o.codec, Some(Codec::Msgpack));
    let r = o.retry.unwrap();
    assert_eq!((r.max_retries, r.backoff_base.as_secs()), (3, 2));
    assert_eq!(
        flip::s(Point { x: 0, y: 0 }).signature().codec,
        Codec::Msgpack
    );
}

#[test]
fn errors_keep_kind_and_message() {
    let e = run(parse::s("x".into())).unwrap_err();
    assert_eq!(e.kind, "ParseIntError");
    assert!(e.message.contains("invalid digit"), "{e}");
    let e = run(stringly::s(true)).unwrap_err();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        (kinds::FAILED, "asked to fail")
    );
    run(stringly::s(false)).unwrap();
}

#[test]
fn arguments_decode_from_a_sequence_or_a_map_and_bad_ones_fail_clearly() {
    let entry = Registry::global().get(add::NAME).unwrap();
    let by_name = entry
        .call_blocking(br#"{"a": 1, "b": 2}"#, Codec::Json)
        .unwrap();
    assert_eq!(by_name, b"3");
    let e = entry.call_blocking(br#"[1]"#, Codec::Json).unwrap_err();
    assert_eq!(e.kind, kinds::CODEC);
    assert!(
        e.message.contains("arguments of task task_macro::add"),
        "{e}"
    );
    let e = entry
        .call_blocking(br#"{"a": 1, "b": 2, "c": 3}"#, Codec::Json)
        .unwrap_err();
    assert!(e.message.contains("unknown field `c`"), "{e}");
    let e = entry
        .call_blocking(br#"["one", 2]"#, Codec::Json)
        .unwrap_err();
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn trailing_option_arguments_may_be_left_out() {
    let entry = Registry::global().get(greet::NAME).unwrap();
    assert_eq!(
        entry.call_blocking(br#"["ann"]"#, Codec::Json).unwrap(),
        br#""hello, ann""#
    );
    assert_eq!(
        entry
            .call_blocking(br#"["bo", "hi"]"#, Codec::Json)
            .unwrap(),
        br#""hi, bo""#
    );
    assert_eq!(
        entry
            .call_blocking(br#"{"name": "cy"}"#, Codec::Json)
            .unwrap(),
        br#""hello, cy""#
    );
    assert!(
        entry.call_blocking(br#"[]"#, Codec::Json).is_err(),
        "required ones may not"
    );
}

#[test]
fn unknown_names_list_the_registered_ones() {
    let e = Registry::global().get("no.such.task").unwrap_err();
    assert_eq!(e.kind, kinds::UNKNOWN_TASK);
    assert!(
        e.message.contains("no.such.task") && e.message.contains("geo.flip"),
        "{e}"
    );
}

#[test]
fn tasks_can_be_declared_inside_a_function() {
    #[task(crate = lovage_core)]
    fn local_double(x: u32) -> u32 {
        x * 2
    }
    assert_eq!(local_double(4), 8);
    assert_eq!(local_double::NAME, "task_macro::local_double");
    assert_eq!(run(local_double::s(21)).unwrap(), 42);
}
