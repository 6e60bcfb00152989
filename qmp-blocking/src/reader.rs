//! The reader thread of pipes, a spawned QEMU's stdio and `connect_io`: reads all the time, feeds
//! the session, routes what it produced. (Sockets share the reading with callers: `role.rs`.)

use crate::shared::Shared;
use qmp_proto::ReadBuffer;
use std::io::{ErrorKind, Read};
use std::sync::Arc;

/// Runs until the session closes. It never waits for a consumer (rule 10): replies wake their
/// callers, events go to the bounded queue and to handlers on the pool.
pub(crate) fn read_loop(shared: Arc<Shared>, mut reader: Box<dyn Read + Send>) {
    // 4 KiB while idle, up to 64 KiB while big messages arrive.
    let mut buf = ReadBuffer::new();
    loop {
        let read = reader.read(buf.space());
        if matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() != ErrorKind::Interrupted) {
            // A QEMU we spawned closes its stdout as it exits: reap it before anyone learns
            // that the connection ended, so its exit status is there when they look.
            shared.child.reap_soon();
        }
        let mut inner = shared.lock();
        if inner.closed() {
            // Closed from this side (or a write failed) while we were reading.
            break;
        }
        match read {
            Ok(0) => inner.session.receive_eof(),
            Ok(n) => {
                inner.session.receive(buf.filled(n));
                buf.after_read(n, inner.session.buffered() > 0);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // ECONNRESET and the like: the session decides what it means (after `quit`: clean).
            Err(e) => inner.session.read_failed(&e),
        }
        let end = inner.closed();
        shared.process(&mut inner);
        let write = !inner.outgoing.is_empty();
        shared.release(inner);
        if end {
            break;
        }
        if write {
            shared.flush();
        }
    }
}
