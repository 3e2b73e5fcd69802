//! Commands written in Redis's wire format (RESP) straight into one send buffer.
//!
//! Sending 100,000 tasks writes some 500,000 arguments. `redis::Cmd` keeps each argument in a
//! buffer of its own and copies them all again into a packed command; here a chunk of tasks
//! is written once, into a buffer reused from chunk to chunk, and sent as it is.

/// Appends the header of a command of `args` arguments (the command name included).
pub(super) fn command(buf: &mut Vec<u8>, args: usize) {
    buf.push(b'*');
    buf.extend_from_slice(itoa::Buffer::new().format(args).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// Appends one argument.
pub(super) fn arg(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.push(b'$');
    buf.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(bytes);
    buf.extend_from_slice(b"\r\n");
}

/// Appends an integer argument.
pub(super) fn int_arg(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    arg(buf, itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_the_redis_crate_writes() {
        let mut buf = Vec::new();
        command(&mut buf, 4);
        arg(&mut buf, b"HSET");
        arg(&mut buf, b"key");
        arg(&mut buf, b"");
        int_arg(&mut buf, -42i64);
        let expected = redis::cmd("HSET")
            .arg("key")
            .arg("")
            .arg(-42i64)
            .get_packed_command();
        assert_eq!(buf, expected);
    }
}
