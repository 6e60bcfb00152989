//! `parse_stream`: server bytes through the decoder and the session, in fuzzed chunks.
//!
//! The input (format in `qmp_fuzz`'s docs) is a configuration, a chunking schedule, and a server
//! byte stream with client actions between its bytes. Two sessions with the same configuration run
//! the same script: the reference receives the bytes between two client actions in one call, the
//! other in the chunks of the schedule. Checked:
//! - no panic (anywhere in qmp-proto);
//! - chunking invariance: both sessions produce the same outputs, transmits and submit/abandon
//!   results, in the same order; a bare `Decoder` gives the same messages and errors whole and
//!   chunked;
//! - memory: `buffered()` never exceeds `max_message_size` after any call;
//! - answers: every submitted id gets at most one reply, none after it was abandoned, and after EOF
//!   nothing is outstanding, every submitted, non-abandoned id was answered exactly once, and
//!   `Closed` is the last output;
//! - resynchronisation: after any input, a well-formed message that starts a line (a line feed,
//!   then the message) is delivered, whatever state the input left the framer in: the bare
//!   `Decoder`'s last result is that message, whole and chunked, and a session that is still open
//!   after it delivers it as its last output (the line feed can end an open reply to
//!   `qmp_capabilities`, which rightly closes the session).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_fuzz::Submit;
use qmp_fuzz::{config_from_byte, steps, Action, Chunker, Step};
use qmp_proto::{CommandId, Config, Decoder, Output, ServerMessage, Session, State};
use std::collections::{HashMap, HashSet};

/// A well-formed message after a resynchronisation point (a line feed), fed after the input: it
/// must be delivered. Small enough for the smallest limits of `config_from_byte`.
const PROBE: &[u8] = b"\n{\"event\": \"RESYNC_PROBE\"}";

fn is_probe(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Event(e) if e.name == "RESYNC_PROBE" && e.data.is_empty())
}

/// Everything a caller can observe, in order.
#[derive(Debug, PartialEq)]
enum Trace {
    Out(Output),
    /// A transmit: its command, bytes, and how many descriptors it carried.
    Tx(CommandId, Vec<u8>, usize),
    Submitted(Result<CommandId, String>),
    Abandoned(CommandId, bool),
}

struct Run {
    session: Session,
    limit: usize,
    trace: Vec<Trace>,
    submitted: Vec<CommandId>,
    abandoned: HashSet<CommandId>,
    replied: HashMap<CommandId, usize>,
    closed: bool,
}

impl Run {
    fn new(config: Config) -> Run {
        Run {
            limit: config.limits.max_message_size,
            session: Session::new(config),
            trace: Vec::new(),
            submitted: Vec::new(),
            abandoned: HashSet::new(),
            replied: HashMap::new(),
            closed: false,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.session.receive(bytes);
        assert!(
            self.session.buffered() <= self.limit,
            "buffered {} > limit {}",
            self.session.buffered(),
            self.limit
        );
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.session.poll_output() {
            assert!(!self.closed, "output after Closed: {out:?}");
            match &out {
                Output::Reply { id, .. } => {
                    assert!(self.submitted.contains(id), "reply for unknown {id}");
                    assert!(!self.abandoned.contains(id), "reply for abandoned {id}");
                    let n = self.replied.entry(*id).or_insert(0);
                    *n += 1;
                    assert_eq!(*n, 1, "second reply for {id}");
                }
                Output::Closed(_) => self.closed = true,
                _ => {}
            }
            self.trace.push(Trace::Out(out));
        }
        assert_eq!(
            self.session.outstanding(),
            self.submitted.len() - self.replied.len() - self.abandoned.len(),
            "outstanding count"
        );
    }

    fn submit(&mut self, submit: Submit) {
        let r = if submit.fds > 0 {
            self.session.execute_with(
                "getfd",
                &serde_json::json!({"fdname": "f"}),
                submit.options(),
            )
        } else {
            self.session
                .execute_with("query-status", &(), submit.options())
        };
        if let Ok(id) = r {
            assert!(!self.submitted.contains(&id), "id {id} handed out twice");
            self.submitted.push(id);
        }
        self.trace
            .push(Trace::Submitted(r.map_err(|e| e.to_string())));
    }

    fn transmit(&mut self, max: usize) {
        for _ in 0..max {
            match self.session.poll_transmit() {
                Some(t) => self
                    .trace
                    .push(Trace::Tx(t.id, t.bytes.to_vec(), t.fds.len())),
                None => break,
            }
        }
    }

    fn action(&mut self, action: Action) {
        match action {
            Action::Transmit => self.transmit(usize::MAX),
            Action::TransmitOne => self.transmit(1),
            Action::Execute => self.submit(Submit::default()),
            Action::ExecuteOob => self.submit(Submit { oob: true, fds: 0 }),
            Action::ExecuteFd => self.submit(Submit { oob: false, fds: 1 }),
            Action::Abandon(k) => {
                if self.submitted.is_empty() {
                    return;
                }
                let id = self.submitted[self.submitted.len() - 1 - k % self.submitted.len()];
                let done = self.session.abandon(id);
                if done {
                    assert!(!self.replied.contains_key(&id), "abandoned answered {id}");
                    assert!(self.abandoned.insert(id), "abandoned {id} twice");
                }
                self.trace.push(Trace::Abandoned(id, done));
            }
            Action::Split => {}
            Action::Close => self.session.close(),
        }
        self.drain();
    }

    fn eof(&mut self) {
        if self.session.state() != State::Closed {
            self.receive(PROBE);
            // The probe may end a message that was the reply to `qmp_capabilities` (cut off by
            // the line rule): the session then closes, rightly, and delivers nothing after that.
            if self.session.state() != State::Closed {
                let last = self.trace.iter().rev().find_map(|t| match t {
                    Trace::Out(o) => Some(o),
                    _ => None,
                });
                assert!(
                    matches!(last, Some(Output::Event(e)) if e.name == "RESYNC_PROBE"),
                    "the message after a resync point was not delivered last: {last:?}"
                );
            }
        }
        self.session.receive_eof();
        self.drain();
        assert_eq!(self.session.state(), State::Closed);
        assert_eq!(self.session.outstanding(), 0, "outstanding after EOF");
        assert!(self.closed, "no Closed output");
        // Actions after a close leave their own trace entries; no output may follow Closed.
        let last_output = self.trace.iter().rev().find_map(|t| match t {
            Trace::Out(o) => Some(o),
            _ => None,
        });
        assert!(matches!(last_output, Some(Output::Closed(_))));
        for id in &self.submitted {
            let answered = self.replied.get(id).copied().unwrap_or(0);
            let abandoned = self.abandoned.contains(id);
            assert!(
                answered + usize::from(abandoned) == 1,
                "{id}: {answered} replies, abandoned {abandoned}"
            );
        }
    }
}

fn check_decoder(config: &Config, chunking: u8, stream: &[u8]) {
    let limit = config.limits.max_message_size;
    let mut whole = Vec::new();
    let mut d = Decoder::new(&config.limits);
    d.feed(stream, &mut whole);
    assert!(d.buffered() <= limit);
    d.finish(&mut whole);

    let mut chunked = Vec::new();
    let mut d = Decoder::new(&config.limits);
    for c in Chunker::from_byte(chunking).split(stream) {
        d.feed(c, &mut chunked);
        assert!(d.buffered() <= limit, "buffered {} > {limit}", d.buffered());
    }
    d.finish(&mut chunked);
    assert_eq!(whole, chunked, "decoder: chunked differs from whole");

    for chunks in [vec![stream], Chunker::from_byte(chunking).split(stream)] {
        let mut d = Decoder::new(&config.limits);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        out.clear();
        d.feed(PROBE, &mut out);
        assert!(
            matches!(out.last(), Some(Ok(m)) if is_probe(m)),
            "the message after a resync point was not delivered: {out:?}"
        );
    }
}

fn compare(reference: &[Trace], chunked: &[Trace]) {
    if let Some(i) = (0..reference.len().min(chunked.len())).find(|&i| reference[i] != chunked[i]) {
        panic!(
            "chunking changed trace entry {i}:\n whole:   {:?}\n chunked: {:?}",
            reference[i], chunked[i]
        );
    }
    assert_eq!(reference.len(), chunked.len(), "trace lengths differ");
}

fuzz_target!(|data: &[u8]| {
    let [conf, chunking, body @ ..] = data else {
        return;
    };
    let config = config_from_byte(*conf);
    let steps = steps(body);

    let stream: Vec<u8> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Bytes(b) => Some(b.as_slice()),
            Step::Action(_) => None,
        })
        .flatten()
        .copied()
        .collect();
    check_decoder(&config, *chunking, &stream);

    // Reference: bytes between two client actions in one call.
    let mut reference = Run::new(config.clone());
    let mut pending = Vec::new();
    for step in &steps {
        match step {
            Step::Bytes(b) => pending.extend_from_slice(b),
            Step::Action(Action::Split) => {}
            Step::Action(a) => {
                if !pending.is_empty() {
                    reference.receive(&pending);
                    pending.clear();
                }
                reference.action(*a);
            }
        }
    }
    if !pending.is_empty() {
        reference.receive(&pending);
    }
    reference.eof();

    let mut chunker = Chunker::from_byte(*chunking);
    let mut chunked = Run::new(config);
    for step in &steps {
        match step {
            Step::Bytes(b) => {
                for c in chunker.split(b) {
                    chunked.receive(c);
                }
            }
            Step::Action(a) => chunked.action(*a),
        }
    }
    chunked.eof();

    compare(&reference.trace, &chunked.trace);
});
