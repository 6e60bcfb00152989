//! Inputs found by the fuzz targets (fuzz/, docs/FUZZING.md), fed as the exact bytes that failed.
//! Each test says what the target checked and what was wrong.

use qmp_proto::{Config, DecodeError, Decoder, Limits, Output, ServerMessage, Session};

type Decoded = Vec<Result<ServerMessage, DecodeError>>;

fn decode_chunked(limits: &Limits, stream: &[u8], chunk: usize) -> Decoded {
    let mut decoder = Decoder::new(limits);
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        decoder.feed(c, &mut out);
        assert!(decoder.buffered() <= limits.max_message_size);
    }
    decoder.finish(&mut out);
    out
}

/// Decodes `stream` whole and in chunks of every size up to 64 bytes; all must agree.
fn decode_any_chunking(limits: &Limits, stream: &[u8]) -> Decoded {
    let whole = decode_chunked(limits, stream, stream.len());
    for chunk in 1..=64 {
        assert_eq!(
            decode_chunked(limits, stream, chunk),
            whole,
            "chunks of {chunk}"
        );
    }
    whole
}

fn session_outputs(config: &Config, stream: &[u8], chunk: usize) -> Vec<Output> {
    let mut s = Session::new(config.clone());
    for c in stream.chunks(chunk.max(1)) {
        s.receive(c);
        assert!(s.buffered() <= config.limits.max_message_size);
    }
    s.receive_eof();
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// parse_stream, crash-ff029c52 (minimised): with a 64-byte size limit and depth limit 4, a
/// message that grows past 64 bytes before it nests past depth 4 was reported as `TooDeep` when fed
/// whole (the size was only checked at the end of each chunk) and as `TooLarge` when fed byte by
/// byte. Fixed by checking the size limit at the byte that crosses it.
///
/// Since the line rule (a `{` at the start of a line starts a message), the `\n{` in this input
/// cuts the broken message at 55 bytes, before either limit; the same input with that line feed
/// turned into a space still crosses the size limit first.
#[test]
fn size_limit_crossed_before_depth_limit_is_too_large_however_chunked() {
    let input: &[u8] = b"\x01\x01{\"QMP\": {\"Aesion\": {\"qemu\": {\"mico: {}}, \"\x00\x00\"]}}\r:c1\"}\n{\"return\":{}}\"\"]}}";
    // Header byte 0 = 1: max_message_size 64, max_depth 4; byte 1 = 1: one byte at a time.
    let stream = &input[2..];
    let limits = Limits {
        max_message_size: 64,
        max_depth: 4,
        ..Limits::default()
    };
    let out = decode_any_chunking(&limits, stream);
    assert!(
        matches!(
            &out[..],
            [
                Err(DecodeError::Unterminated { len: 55, id: None }),
                Ok(ServerMessage::Reply(_)),
                Err(DecodeError::Garbage { len: 5 })
            ]
        ),
        "{out:?}"
    );
    let one_line: Vec<u8> = stream
        .iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect();
    let out = decode_any_chunking(&limits, &one_line);
    assert!(
        matches!(&out[0], Err(DecodeError::TooLarge { limit: 64, .. })),
        "{out:?}"
    );

    let config = Config {
        limits,
        negotiation_id: Some("cap".into()),
        ..Config::default()
    };
    for stream in [stream, &one_line[..]] {
        let whole = session_outputs(&config, stream, stream.len());
        assert_eq!(session_outputs(&config, stream, 1), whole);
        assert!(matches!(whole.last(), Some(Output::Closed(_))));
    }
}
