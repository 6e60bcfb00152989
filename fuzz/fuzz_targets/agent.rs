//! `agent`: a guest-agent session driven by a fuzzed script of client calls and a model agent.
//!
//! The script mixes client calls (execute an ordinary or a no-reply command, abandon, take
//! transmits, close) with what a model qemu-ga writes: its answer to any line it has received
//! (for a sync: the id-less "stray" error, `0xFF`, `{"return": N}`; for a probe: `0xFF` and the
//! return; for a command: its reply or an error with its id), stale replies with this session's
//! ids, replies to old sync ids, half messages, lone `0xFF` bytes and raw fuzzed bytes, delivered
//! in fuzzed pieces. Checked, besides no panic:
//! - every submitted id ends exactly once: one `Reply`, or a successful `abandon` and no `Reply`;
//!   `outstanding()` always matches, and is 0 once closed; one `Ready` at most, before any reply;
//! - transmits: the first is `0xFF` + `guest-sync-delimited` without an id; every sync starts
//!   with `0xFF`; a command goes out only when the session is `Ready`, never twice, never while
//!   another command is in flight;
//! - a reply carries the model's answer for its command's wire id, unless raw bytes were
//!   delivered (they can swallow or fake anything); a stale reply never completes a command that
//!   was not in flight.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use qmp_proto::{CommandId, Config, Limits, Output, Session, State};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

#[derive(Arbitrary, Debug)]
enum Op {
    Execute,
    ExecuteNoReply,
    Abandon(u8),
    Transmit(u8),
    Close,
    /// The agent answers the k-th line it has not answered yet.
    Answer(u8),
    /// A no-reply command's error with its id (the agent refused it).
    Refuse(u8),
    /// A reply with one of this session's wire ids, for any number.
    Stale(u8),
    /// A reply to a sync id that is not the current one.
    OldSync(u64),
    Half,
    Ff,
    Raw(Vec<u8>),
    Deliver(u16),
    Eof,
}

#[derive(Arbitrary, Debug)]
struct Input {
    small: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Line {
    Sync(u64),
    Probe(u64),
    Command { wire: u64, no_reply: bool },
}

struct Harness {
    session: Session,
    wire: Vec<u8>,
    raw_used: bool,
    /// Lines the model agent received and has not answered.
    lines: Vec<Line>,
    /// What the model answered per wire id (first answer wins for the check).
    answers: HashMap<u64, Vec<Value>>,
    submitted: Vec<(CommandId, bool)>,
    replied: HashSet<CommandId>,
    abandoned: HashSet<CommandId>,
    transmitted: HashSet<u64>,
    /// Commands transmitted and not yet replied or abandoned.
    in_flight: HashSet<u64>,
    ready_seen: bool,
    transmits: u64,
    closed: bool,
}

impl Harness {
    fn drain(&mut self) {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Ready => {
                    assert!(!self.ready_seen, "Ready twice");
                    assert!(self.replied.is_empty(), "a reply before Ready");
                    self.ready_seen = true;
                }
                Output::Reply { id, result } => {
                    assert!(
                        self.submitted.iter().any(|(s, _)| *s == id),
                        "reply to unknown {id}"
                    );
                    assert!(self.replied.insert(id), "second reply for {id}");
                    assert!(!self.abandoned.contains(&id), "reply after abandon {id}");
                    self.in_flight.remove(&id.number());
                    let wire = id.number();
                    let no_reply = self.submitted.iter().any(|(s, n)| *s == id && *n);
                    if let (false, Ok(v)) = (self.raw_used, &result) {
                        // Its own answer, a stale reply carrying its wire id (nothing can tell
                        // those apart), or `{}` (the probe) for a no-reply command.
                        let known = self.answers.get(&wire).is_some_and(|a| a.contains(v));
                        let probe = no_reply && *v == json!({});
                        assert!(
                            known || probe,
                            "{id} got a reply never sent for {wire}: {v}"
                        );
                    }
                    if result.is_ok() && !self.raw_used && !self.closed {
                        assert!(
                            self.transmitted.contains(&id.number()),
                            "{id} succeeded without being sent"
                        );
                    }
                }
                Output::Closed(_) => self.closed = true,
                Output::Event(_) | Output::Warning(_) | Output::Greeting(_) => {}
            }
        }
        let outstanding = self.submitted.len() - self.replied.len() - self.abandoned.len();
        assert_eq!(self.session.outstanding(), outstanding);
    }

    fn transmit(&mut self, n: u8) {
        for _ in 0..=n {
            let Some(t) = self.session.poll_transmit() else {
                return;
            };
            self.transmits += 1;
            let bytes = &t.bytes[..];
            let (flush, json) = match bytes.split_first() {
                Some((0xFF, rest)) => (true, rest),
                _ => (false, bytes),
            };
            let v: Value = serde_json::from_slice(json).expect("the session sends JSON");
            assert_eq!(bytes.last(), Some(&b'\n'));
            if self.transmits == 1 {
                assert!(flush, "the first transmit is the sync with its flush byte");
            }
            if v["execute"] == "guest-sync-delimited" && v.get("id").is_none() {
                let n = v["arguments"]["id"].as_u64().expect("sync id");
                assert!(n < 1 << 53);
                if flush {
                    assert_eq!(self.session.state(), State::Syncing);
                    self.lines.push(Line::Sync(n));
                } else {
                    self.lines.push(Line::Probe(n));
                }
                continue;
            }
            assert!(!flush, "only syncs carry the flush byte");
            assert_eq!(
                self.session.state(),
                State::Ready,
                "a command while syncing"
            );
            let number = t.id.number();
            assert!(self.transmitted.insert(number), "sent twice");
            assert!(!self.abandoned.contains(&t.id), "sent after abandon");
            assert!(self.in_flight.is_empty(), "two commands in flight");
            self.in_flight.insert(number);
            let wire = v["id"].as_u64().expect("an integer wire id");
            assert_eq!(wire, number);
            let no_reply = v["execute"] == "guest-shutdown";
            self.lines.push(Line::Command { wire, no_reply });
        }
    }

    fn answer(&mut self, k: u8, refuse: bool) {
        if self.lines.is_empty() {
            return;
        }
        let line = self.lines.remove(usize::from(k) % self.lines.len());
        match line {
            Line::Sync(n) => {
                self.wire.extend_from_slice(
                    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n",
                );
                self.wire.push(0xFF);
                self.wire
                    .extend_from_slice(format!("{{\"return\": {n}}}\n").as_bytes());
            }
            Line::Probe(n) => {
                self.wire.push(0xFF);
                self.wire
                    .extend_from_slice(format!("{{\"return\": {n}}}\n").as_bytes());
            }
            Line::Command { wire, no_reply } => {
                if no_reply && !refuse {
                    return; // succeeded: no reply
                }
                let value = if refuse {
                    None
                } else {
                    Some(json!({"k": k, "for": wire}))
                };
                let text = match &value {
                    Some(v) => json!({"return": v, "id": wire}),
                    None => json!({"id": wire, "error": {"class": "GenericError", "desc": "no"}}),
                };
                self.wire.extend_from_slice(text.to_string().as_bytes());
                self.wire.push(b'\n');
                if let Some(v) = value {
                    self.answers.entry(wire).or_default().push(v);
                }
            }
        }
    }

    fn deliver(&mut self, n: usize) {
        let n = n.min(self.wire.len());
        let chunk: Vec<u8> = self.wire.drain(..n).collect();
        self.session.receive(&chunk);
    }

    fn op(&mut self, op: Op) -> bool {
        match op {
            Op::Execute | Op::ExecuteNoReply => {
                let name = match op {
                    Op::Execute => "guest-ping",
                    _ => "guest-shutdown",
                };
                match self.session.execute(name, &()) {
                    Ok(id) => self.submitted.push((id, name == "guest-shutdown")),
                    Err(_) => assert!(self.closed, "refused while open"),
                }
            }
            Op::Abandon(k) => {
                if !self.submitted.is_empty() {
                    let (id, _) = self.submitted[usize::from(k) % self.submitted.len()];
                    let expect = !self.replied.contains(&id) && !self.abandoned.contains(&id);
                    let done = self.session.abandon(id);
                    assert_eq!(done, expect && !self.closed, "abandon {id}");
                    if done {
                        self.abandoned.insert(id);
                        self.in_flight.remove(&id.number());
                    }
                }
            }
            Op::Transmit(n) => self.transmit(n),
            Op::Close => {
                self.session.close();
                return false;
            }
            Op::Answer(k) => self.answer(k, false),
            Op::Refuse(k) => self.answer(k, true),
            Op::Stale(k) => {
                // A stale reply that arrives while its wire id is in flight is that command's
                // answer on a real channel too (nothing tells them apart).
                let wire = u64::from(k % 16);
                let value = json!({"stale": k, "for": wire});
                let text = json!({"return": value, "id": wire});
                self.wire.extend_from_slice(text.to_string().as_bytes());
                self.wire.push(b'\n');
                self.answers.entry(wire).or_default().push(value);
            }
            Op::OldSync(n) => {
                self.wire.push(0xFF);
                self.wire.extend_from_slice(
                    format!("{{\"return\": {}}}\n", n & ((1 << 53) - 1)).as_bytes(),
                );
                // One chance in 2^53 of being the current id; harmless (it would only sync).
            }
            Op::Half => self.wire.extend_from_slice(b"{\"return\": {\"half\": \"x"),
            Op::Ff => self.wire.push(0xFF),
            Op::Raw(bytes) => {
                self.raw_used = true;
                self.wire.extend_from_slice(&bytes);
            }
            Op::Deliver(n) => {
                let n = if n == 0 { usize::MAX } else { usize::from(n) };
                self.deliver(n);
            }
            Op::Eof => {
                self.deliver(usize::MAX);
                self.session.receive_eof();
                return false;
            }
        }
        true
    }
}

fuzz_target!(|input: Input| {
    let mut limits = Limits::agent();
    if input.small {
        limits.max_message_size = 64;
        limits.max_depth = 4;
    }
    let config = Config {
        negotiation_id: Some("t".into()),
        limits,
        ..Config::agent()
    };
    let mut h = Harness {
        session: Session::new(config),
        wire: Vec::new(),
        raw_used: false,
        lines: Vec::new(),
        answers: HashMap::new(),
        submitted: Vec::new(),
        replied: HashSet::new(),
        abandoned: HashSet::new(),
        transmitted: HashSet::new(),
        in_flight: HashSet::new(),
        ready_seen: false,
        transmits: 0,
        closed: false,
    };
    for op in input.ops {
        let go_on = h.op(op);
        h.drain();
        if !go_on {
            break;
        }
    }
    h.deliver(usize::MAX);
    h.session.receive_eof();
    h.drain();
    assert_eq!(h.session.state(), State::Closed);
    assert_eq!(h.session.outstanding(), 0);
    assert!(h.closed, "no Closed output");
    for (id, _) in &h.submitted {
        let n = usize::from(h.replied.contains(id)) + usize::from(h.abandoned.contains(id));
        assert_eq!(n, 1, "{id} ended {n} times");
    }
});
