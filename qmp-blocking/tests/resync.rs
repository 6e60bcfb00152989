//! A message that never closes, put into a real QEMU's output by a proxy (qmp_testkit::FaultProxy)
//! before every reply: each reply still arrives, each broken message is reported once, and no call
//! times out. Before the line rule (docs/PROTOCOL.md, "Resynchronisation"), the first such message
//! swallowed every later reply: 8 of 8 calls timed out, with no warning.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::{Client, Limits};
use qmp_testkit::{find_binary, unclosed_cases};
use std::time::Duration;

/// The client's size limit, so that one of the broken messages is over it.
const LIMIT: usize = 64 << 10;

#[test]
fn a_message_that_never_closes_before_each_reply_costs_the_replies_nothing() {
    let cases = unclosed_cases(LIMIT, "query-version", "unclosed_message_before_each_reply");
    let mut ran = 0;
    for case in cases {
        ran += 1;
        // The report saw 8 of 8 calls time out at 2 s: a stall fails every call whatever the
        // timeout, so 10 s only adds margin for a loaded machine.
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .limits(Limits {
                max_message_size: LIMIT,
                ..Limits::default()
            })
            .connect_unix(case.proxy.path())
            .unwrap();
        for _ in 0..8 {
            let v = client.execute("query-version", ()).unwrap();
            assert_eq!(v["qemu"]["major"], 10);
        }
        assert_eq!(case.proxy.injected(), 8);
        let warnings = client.take_warnings();
        assert!(
            warnings.len() == 8 && warnings.iter().all(|w| case.expected.is_reported_by(w)),
            "{case:?}: {warnings:?}"
        );
        let stats = client.stats();
        assert_eq!(stats.session.decode_errors, 8);
        assert_eq!(stats.session.unmatched_replies, 0);
        assert_eq!(client.pending(), 0);
    }
    // 4 events, compact and pretty (none when the daemon is missing, after a SKIPPED notice).
    assert!(
        ran == 8 || find_binary("qemu-storage-daemon").is_none(),
        "{ran} cases"
    );
}
