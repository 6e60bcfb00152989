//! Every reply and event in the repository's real QEMU 10.0.2 captures
//! (qmp-proto/tests/captures) decodes into its generated type, without a fallback, and encodes
//! back to the same JSON.

mod support;

use qmp_proto::{Decoder, Limits, ServerMessage};
use qmp_qapi::qmp::Event;
use serde_json::Value;
use support::qmp_table;

#[test]
fn every_captured_reply_and_event_decodes_typed() {
    let dir = support::repo().join("qmp-proto/tests/captures");
    let mut totals = (0, 0);
    for name in [
        "qsd-compact",
        "qsd-pretty",
        "system-compact",
        "system-pretty",
    ] {
        let client =
            std::fs::read_to_string(dir.join(format!("{name}.client.jsonl"))).expect("client side");
        // One command at a time, each with id 1 (ids are reused): the N-th reply answers the
        // N-th command.
        let commands: Vec<String> = client
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("a command");
                v["execute"].as_str().expect("execute").to_string()
            })
            .collect();
        let mut answered = 0;
        let server = std::fs::read(dir.join(format!("{name}.server.bin"))).expect("server side");
        let mut decoder = Decoder::new(&Limits::default());
        let mut messages = Vec::new();
        decoder.feed(&server, &mut messages);
        decoder.finish(&mut messages);
        let (mut replies, mut events) = (0, 0);
        for m in messages {
            match m.expect("the capture decodes") {
                ServerMessage::Greeting(_) => {}
                ServerMessage::Reply(r) => {
                    assert!(r.id.is_some(), "{name}: a reply without an id");
                    let command = &commands[answered];
                    answered += 1;
                    let Ok(value) = r.result else { continue };
                    let codec =
                        qmp_table::command(command).unwrap_or_else(|| panic!("{command}: no type"));
                    let back = (codec.ret)(value.clone())
                        .unwrap_or_else(|e| panic!("{name}: {command}: {e}"));
                    assert_eq!(back, value, "{name}: {command} came back different");
                    replies += 1;
                }
                ServerMessage::Event(e) => {
                    let codec =
                        qmp_table::event(&e.name).unwrap_or_else(|| panic!("{}: no type", e.name));
                    let data = Value::Object(e.data.clone());
                    assert_eq!((codec.data)(data.clone()), Ok(data), "{name}: {}", e.name);
                    let typed = Event::try_from(&e).expect("decodes");
                    assert!(!matches!(typed, Event::Unknown { .. }) && typed.name() == e.name);
                    events += 1;
                }
            }
        }
        assert!(
            replies >= 8 && (events >= 4 || name.starts_with("qsd") && events >= 8),
            "{name}: {replies} replies, {events} events"
        );
        totals.0 += replies;
        totals.1 += events;
    }
    eprintln!(
        "captures: {} replies and {} events decoded typed",
        totals.0, totals.1
    );
}
