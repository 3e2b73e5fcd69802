//! Redis replies (RESP2 and RESP3) read from a stream in pieces by the reader lovage's Redis
//! backend uses, then converted to each shape the backend asks for, with the task values in a
//! reserve's reply decoded as the reserve does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lovage_fuzz::Pieces;
use redis::{FromRedisValue, Value};

fuzz_target!(|data: &[u8]| {
    let mut input = Pieces::from_input(data);
    let mut parser = redis::Parser::new();
    // A pipeline's replies arrive one after another on the stream.
    for _ in 0..16 {
        let Ok(value) = parser.parse_value(&mut input) else {
            break;
        };
        shapes(&value);
    }
    let _ = redis::parse_redis_value(data);
});

fn shapes(v: &Value) {
    type Reserve = (Vec<Vec<u8>>, String, Vec<String>, Vec<Vec<u8>>, u64);
    if let Ok((values, next_due, ids, _corrupt, first_fence)) = Reserve::from_redis_value(v) {
        for (k, (value, id)) in values.iter().zip(&ids).enumerate() {
            let fence = first_fence.wrapping_add(k as u64 + 1);
            let _ = lovage_broker::fuzzing::redis_task_value(id, value, fence);
        }
        if let Ok(ms) = next_due.parse::<u64>() {
            let _ = std::time::Duration::from_millis(ms).max(std::time::Duration::from_millis(1));
        }
    }
    if let Ok(rows) = <Vec<Vec<Option<Vec<u8>>>>>::from_redis_value(v) {
        for body in rows.iter().flatten().flatten() {
            let _ = serde_json::from_slice::<lovage_broker::ResultRecord>(body);
        }
    }
    let _ = <Vec<(String, u64, u64, u64)>>::from_redis_value(v);
    let _ = <Vec<Vec<(u32, Vec<u8>)>>>::from_redis_value(v);
    let _ = <Vec<Option<f64>>>::from_redis_value(v);
    let _ = <Vec<usize>>::from_redis_value(v);
    let _ = <Vec<String>>::from_redis_value(v);
    let _ = <Option<Vec<u8>>>::from_redis_value(v);
    let _ = i64::from_redis_value(v);
    let _ = String::from_redis_value(v);
}
