//! `session`: a session driven by a fuzzed script of client calls and a model QEMU.
//!
//! The script (derived with `arbitrary`) mixes client calls (execute, exec-oob, commands with fds,
//! `quit`, abandon, taking transmits, close, a failed read or write) with what a model server writes: the greeting, replies (ok,
//! error, undecodable: `inf`, too large, too deep, not QMP) to any command it has received, in any
//! order, duplicate and unknown-id replies, id-less errors, events and raw fuzzed bytes, delivered to
//! the session in fuzzed pieces. Checked, besides no panic:
//! - every submitted id ends exactly once: one `Reply`, or a successful `abandon` and no `Reply`;
//!   `outstanding()` always equals submitted − answered − abandoned, and is 0 once closed;
//! - transmits: only `qmp_capabilities` before `Ready`; each command sent at most once, never after
//!   being abandoned in the queue; its wire id is a positive integer no other command in flight
//!   holds (`qmp_capabilities`': the configured string); `exec-oob`
//!   only with `oob` negotiated; fds as declared; at most `max_inband_in_flight` in-band commands
//!   and one fd-bearing command in flight; a queued command is sent once nothing blocks it;
//! - replies carry what the server sent for that command (unless raw bytes may have confused
//!   framing, or the server answered some command with that wire id twice: the session reuses
//!   wire ids, as QEMU never answers twice);
//!   a `quit` that was sent succeeds at the end of the stream without a reply; a command that
//!   fails at the close says whether it had been sent.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use qmp_fuzz::{config_from_byte, Submit};
use qmp_proto::{CloseReason, CommandError, CommandId, Output, Session, State};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

#[derive(Arbitrary, Debug)]
enum Op {
    Execute,
    ExecuteOob,
    ExecuteFds(u8),
    Abandon(u8),
    Transmit(u8),
    Close,
    Greeting {
        oob: bool,
    },
    ReplyOk(u8),
    ReplyErr(u8),
    ReplyUndecodable(u8, u8),
    ReplyAgain(u8),
    ReplyUnknownId(u8),
    ErrorWithoutId,
    Event,
    Raw(Vec<u8>),
    Deliver(u16),
    Eof,
    /// The client sends `quit`; the model QEMU then closes (with or without replying first).
    Quit,
    /// Reading failed (a reset).
    Reset,
    /// Writing failed.
    WriteFailed,
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: u8,
    ops: Vec<Op>,
}

/// What the model server answered for a wire id, first answer first.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Ok(Value),
    Err(String),
    Undecodable,
}

#[derive(Default)]
struct Model {
    /// Bytes written by the server and not yet delivered.
    wire: Vec<u8>,
    /// Commands received by the server and not answered yet, in arrival order: wire id and
    /// arrival number (a wire id is reused, an arrival number is not).
    unanswered: Vec<(String, u64)>,
    /// Commands answered at least once.
    answered: Vec<(String, u64)>,
    /// What was answered to each arrival.
    answers: HashMap<u64, Vec<Sent>>,
    arrivals: u64,
    counter: u64,
    raw_used: bool,
    /// Wire ids the server answered twice.
    answered_twice: HashSet<String>,
}

impl Model {
    fn take(&mut self, k: u8) -> Option<(String, u64)> {
        if self.unanswered.is_empty() {
            return None;
        }
        let c = self
            .unanswered
            .remove(usize::from(k) % self.unanswered.len());
        self.answered.push(c.clone());
        Some(c)
    }

    fn write(&mut self, arrival: u64, sent: Sent, bytes: String) {
        self.answers.entry(arrival).or_default().push(sent);
        self.wire.extend_from_slice(bytes.as_bytes());
        self.wire.extend_from_slice(b"\r\n");
    }
}

#[derive(Default)]
struct Client {
    submitted: Vec<(CommandId, Submit)>,
    /// `quit` commands submitted.
    quits: HashSet<CommandId>,
    abandoned: HashSet<CommandId>,
    abandoned_queued: HashSet<CommandId>,
    abandoned_in_flight: bool,
    replied: HashSet<CommandId>,
    transmitted: HashSet<CommandId>,
    /// Each transmitted command's wire id (JSON text) and arrival number at the model server.
    wire: HashMap<CommandId, (String, u64)>,
    negotiation_sent: bool,
    closed: bool,
}

struct Harness {
    session: Session,
    client: Client,
    model: Model,
    max_size: usize,
    max_depth: usize,
    max_inband: usize,
}


impl Harness {
    fn options(&self, id: CommandId) -> Submit {
        self.client
            .submitted
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, o)| *o)
            .expect("known id")
    }

    fn in_flight(&self, pred: impl Fn(Submit) -> bool) -> usize {
        self.client
            .transmitted
            .iter()
            .filter(|id| !self.client.replied.contains(id) && !self.client.abandoned.contains(id))
            .filter(|id| pred(self.options(**id)))
            .count()
    }

    fn submit(&mut self, options: Submit) {
        self.submit_named(
            if options.fds > 0 {
                "add-fd"
            } else {
                "query-status"
            },
            options,
        );
    }

    fn submit_named(&mut self, name: &str, options: Submit) {
        let r = if options.fds > 0 {
            self.session
                .execute_with(name, &json!({"fdset-id": 1}), options.options())
        } else {
            self.session.execute_with(name, &(), options.options())
        };
        if let Ok(id) = &r {
            if name == "quit" {
                self.client.quits.insert(*id);
            }
        }
        if let Ok(id) = r {
            if let Some((last, _)) = self.client.submitted.last() {
                assert!(id > *last, "ids must increase");
            }
            assert!(!self.client.closed, "submit accepted after close");
            self.client.submitted.push((id, options));
        }
    }

    fn transmit(&mut self, max: usize) {
        for _ in 0..max {
            let Some(t) = self.session.poll_transmit() else {
                self.check_liveness();
                return;
            };
            assert!(t.bytes.ends_with(b"\n"));
            let v: Value = serde_json::from_slice(&t.bytes).expect("transmit is JSON");
            let wid = v["id"].to_string();
            let name = v["execute"]
                .as_str()
                .or(v["exec-oob"].as_str())
                .expect("name");
            if name == "qmp_capabilities" {
                assert_eq!(t.id.number(), 0);
                assert_eq!(wid, format!("\"{}\"", qmp_fuzz::NEGOTIATION_ID), "wire id");
                assert_eq!(self.session.state(), State::Negotiating);
                assert!(!self.client.negotiation_sent, "qmp_capabilities sent twice");
                self.client.negotiation_sent = true;
            } else {
                assert_eq!(self.session.state(), State::Ready, "command before Ready");
                let options = self.options(t.id);
                assert!(
                    v["id"].as_u64().is_some_and(|n| n > 0),
                    "wire id {wid}: not a positive integer"
                );
                let holders = self
                    .client
                    .transmitted
                    .iter()
                    .filter(|id| {
                        !self.client.replied.contains(id) && !self.client.abandoned.contains(id)
                    })
                    .filter(|id| self.client.wire[id].0 == wid)
                    .count();
                assert_eq!(holders, 0, "wire id {wid} held by another command in flight");
                assert!(self.client.transmitted.insert(t.id), "sent twice");
                assert!(
                    !self.client.abandoned_queued.contains(&t.id),
                    "sent after abandon"
                );
                assert!(!self.client.replied.contains(&t.id), "sent after its reply");
                assert_eq!(v.get("exec-oob").is_some(), options.oob);
                assert_eq!(t.fds.len(), options.fds);
                if options.oob {
                    assert!(self.session.oob_enabled(), "exec-oob without oob");
                } else if self.session.oob_enabled() {
                    let inband = self.in_flight(|o| !o.oob);
                    assert!(inband <= self.max_inband, "{inband} in-band in flight");
                }
                if options.fds > 0 {
                    assert!(
                        self.in_flight(|o| o.fds > 0) <= 1,
                        "two fd commands in flight"
                    );
                }
            }
            self.model.arrivals += 1;
            let arrival = self.model.arrivals;
            if name != "qmp_capabilities" {
                self.client.wire.insert(t.id, (wid.clone(), arrival));
            }
            self.model.unanswered.push((wid, arrival));
        }
    }

    /// After poll_transmit returned None, with nothing abandoned in flight (the session counts
    /// those until their late reply comes), the front of each queue must be blocked by a rule.
    fn check_liveness(&self) {
        if self.session.state() != State::Ready || self.client.abandoned_in_flight {
            return;
        }
        let c = &self.client;
        let queued = |oob: bool| {
            c.submitted.iter().find(|(id, o)| {
                o.oob == oob
                    && !c.transmitted.contains(id)
                    && !c.replied.contains(id)
                    && !c.abandoned.contains(id)
            })
        };
        let fd_busy = self.in_flight(|o| o.fds > 0) >= 1;
        if let Some((id, o)) = queued(true) {
            assert!(o.fds > 0 && fd_busy, "oob {id} queued, nothing blocks it");
        }
        if let Some((id, o)) = queued(false) {
            let full = self.session.oob_enabled() && self.in_flight(|o| !o.oob) >= self.max_inband;
            assert!(
                full || (o.fds > 0 && fd_busy),
                "{id} queued, nothing blocks it"
            );
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.session.poll_output() {
            assert!(!self.client.closed, "output after Closed: {out:?}");
            match out {
                Output::Reply { id, result } => {
                    assert!(self.client.submitted.iter().any(|(i, _)| *i == id), "{id}?");
                    assert!(
                        !self.client.abandoned.contains(&id),
                        "reply to abandoned {id}"
                    );
                    assert!(self.client.replied.insert(id), "second reply for {id}");
                    self.check_result(id, &result);
                }
                Output::Closed(_) => self.client.closed = true,
                _ => {}
            }
        }
        let c = &self.client;
        assert_eq!(
            self.session.outstanding(),
            c.submitted.len() - c.replied.len() - c.abandoned.len()
        );
        if c.closed {
            assert_eq!(self.session.outstanding(), 0);
        }
    }

    fn check_result(&self, id: CommandId, result: &Result<Value, CommandError>) {
        if let Err(CommandError::Closed { sent, .. }) = result {
            assert_eq!(
                *sent,
                self.client.transmitted.contains(&id),
                "{id}: sent flag"
            );
            return;
        }
        // A `quit` that was sent succeeds when the connection ends (QEMU closing is what it
        // asked for) unless the session had matched a reply to it first: whatever the model wrote
        // for it then never reached the session (cut off by the end of stream, or behind a failed
        // write that ended the session at once).
        if self.client.quits.contains(&id)
            && self.session.close_reason() == Some(&CloseReason::Quit)
            && result.is_ok()
        {
            assert!(self.client.transmitted.contains(&id), "{id}: quit not sent");
            return;
        }
        if let Err(CommandError::OobNotNegotiated) = result {
            assert!(self.options(id).oob && !self.session.oob_enabled());
            assert!(!self.client.transmitted.contains(&id));
            return;
        }
        assert!(
            self.client.transmitted.contains(&id),
            "{id} answered before sent"
        );
        if self.model.raw_used {
            return;
        }
        let (wid, arrival) = &self.client.wire[&id];
        if self.model.answered_twice.contains(wid) {
            return;
        }
        let first = self
            .model
            .answers
            .get(arrival)
            .and_then(|a| a.first())
            .unwrap_or_else(|| panic!("{id} answered but the server never replied"));
        match (result, first) {
            (Ok(v), Sent::Ok(w)) => assert_eq!(v, w),
            (Err(CommandError::Qmp(e)), Sent::Err(desc)) => assert_eq!(&e.desc, desc),
            (Err(CommandError::Undecodable(_)), Sent::Undecodable) => {}
            (r, s) => panic!("{id}: got {r:?}, server sent {s:?}"),
        }
    }

    fn deliver(&mut self, n: usize) {
        let n = n.min(self.model.wire.len());
        let bytes: Vec<u8> = self.model.wire.drain(..n).collect();
        self.session.receive(&bytes);
        assert!(self.session.buffered() <= self.max_size);
    }

    fn op(&mut self, op: Op) -> bool {
        let m = &mut self.model;
        match op {
            Op::Execute => self.submit(Submit::default()),
            Op::ExecuteOob => self.submit(Submit { oob: true, fds: 0 }),
            Op::ExecuteFds(n) => self.submit(Submit {
                oob: n & 0x80 != 0,
                fds: usize::from(n & 0x1F),
            }),
            Op::Quit => self.submit_named("quit", Submit::default()),
            Op::Reset => {
                self.deliver(usize::MAX);
                self.session
                    .read_failed(&std::io::ErrorKind::ConnectionReset.into());
                return false;
            }
            Op::WriteFailed => {
                self.session
                    .write_failed(&std::io::ErrorKind::BrokenPipe.into());
                return false;
            }
            Op::Abandon(k) => {
                let c = &mut self.client;
                if c.submitted.is_empty() {
                    return true;
                }
                let (id, _) = c.submitted[c.submitted.len() - 1 - usize::from(k) % c.submitted.len()];
                let was_answered = c.replied.contains(&id) || c.abandoned.contains(&id);
                let done = self.session.abandon(id);
                assert_eq!(done, !was_answered && !c.closed, "abandon({id}) = {done}");
                if done {
                    c.abandoned.insert(id);
                    if c.transmitted.contains(&id) {
                        c.abandoned_in_flight = true;
                    } else {
                        c.abandoned_queued.insert(id);
                    }
                }
            }
            Op::Transmit(n) => self.transmit(usize::from(n).max(1)),
            Op::Close => self.session.close(),
            Op::Greeting { oob } => m.wire.extend_from_slice(
                format!(
                    "{{\"QMP\": {{\"version\": {{\"qemu\": {{\"micro\": 2, \"minor\": 0, \"major\": 10}}, \"package\": \"\"}}, \"capabilities\": [{}]}}}}\r\n",
                    if oob { "\"oob\"" } else { "" }
                )
                .as_bytes(),
            ),
            Op::ReplyOk(k) => {
                if let Some((id, arrival)) = m.take(k) {
                    m.counter += 1;
                    let v = json!({ "n": m.counter });
                    let text = format!("{{\"return\": {v}, \"id\": {id}}}");
                    m.write(arrival, Sent::Ok(v), text);
                }
            }
            Op::ReplyErr(k) => {
                if let Some((id, arrival)) = m.take(k) {
                    m.counter += 1;
                    let desc = format!("e{}", m.counter);
                    let text = format!(
                        "{{\"id\": {id}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"{desc}\"}}}}"
                    );
                    m.write(arrival, Sent::Err(desc), text);
                }
            }
            Op::ReplyUndecodable(k, kind) => {
                if let Some((id, arrival)) = m.take(k) {
                    let text = match kind % 4 {
                        1 if self.max_size <= 1 << 16 => format!(
                            "{{\"return\": \"{}\", \"id\": {id}}}",
                            "x".repeat(self.max_size)
                        ),
                        2 if self.max_depth <= 1 << 13 => format!(
                            "{{\"id\": {id}, \"return\": {}{}}}",
                            "[".repeat(self.max_depth),
                            "]".repeat(self.max_depth)
                        ),
                        3 => format!("{{\"id\": {id}, \"nothing\": 1}}"),
                        _ => format!("{{\"return\": {{\"x\": inf}}, \"id\": {id}}}"),
                    };
                    m.write(arrival, Sent::Undecodable, text);
                }
            }
            Op::ReplyAgain(k) => {
                if !m.answered.is_empty() {
                    let (id, arrival) = m.answered[usize::from(k) % m.answered.len()].clone();
                    let text = format!("{{\"return\": {{}}, \"id\": {id}}}");
                    m.answered_twice.insert(id);
                    m.write(arrival, Sent::Ok(json!({})), text);
                }
            }
            Op::ReplyUnknownId(k) => {
                let text = match k % 3 {
                    0 => format!("{{\"return\": {{}}, \"id\": \"cap{k}\"}}"),
                    1 => format!("{{\"return\": {{}}, \"id\": \"{k}\"}}"),
                    // No script submits this many commands.
                    _ => format!("{{\"return\": {{}}, \"id\": 9999999{k}}}"),
                };
                m.wire.extend_from_slice(text.as_bytes());
            }
            Op::ErrorWithoutId => m.wire.extend_from_slice(
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n",
            ),
            Op::Event => m.wire.extend_from_slice(
                b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n",
            ),
            Op::Raw(bytes) => {
                m.raw_used = true;
                m.wire.extend_from_slice(&bytes);
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
    let config = config_from_byte(input.config);
    let mut h = Harness {
        max_size: config.limits.max_message_size,
        max_depth: config.limits.max_depth,
        max_inband: config.max_inband_in_flight.max(1),
        session: Session::new(config),
        client: Client::default(),
        model: Model::default(),
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
    assert!(h.client.closed, "no Closed output");
    for (id, _) in &h.client.submitted {
        let n = usize::from(h.client.replied.contains(id))
            + usize::from(h.client.abandoned.contains(id));
        assert_eq!(n, 1, "{id} ended {n} times");
    }
});
