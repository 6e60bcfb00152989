//! The buffer an adapter reads the socket into: small while the connection is idle, larger while
//! big messages arrive.
//!
//! A connection spends most of its life idle, and most replies and events are a few hundred
//! bytes; a few (`query-qmp-schema`, 117–650 KB) are large. A fixed 64 KiB buffer per connection
//! made 1,000 idle connections hold 64 MB (issue 15). This one starts at [`ReadBuffer::MIN`]
//! bytes, doubles after every read that fills it (up to [`ReadBuffer::MAX`]), and goes back to
//! the minimum after a read that did not fill it while no message is half-read: the socket was
//! drained at a message boundary, so the connection is idle again.

/// A read buffer that grows for big messages and shrinks back when the connection is idle.
///
/// ```
/// use qmp_proto::ReadBuffer;
/// let mut buf = ReadBuffer::new();
/// assert_eq!(buf.space().len(), ReadBuffer::MIN);
/// let n = buf.space().len(); // a read filled it
/// buf.after_read(n, false);
/// assert_eq!(buf.space().len(), 2 * ReadBuffer::MIN);
/// buf.after_read(100, false); // drained, at a message boundary
/// assert_eq!(buf.space().len(), ReadBuffer::MIN);
/// ```
#[derive(Debug)]
pub struct ReadBuffer {
    buf: Vec<u8>,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer::new()
    }
}

impl ReadBuffer {
    /// Size while idle: 4 KiB.
    pub const MIN: usize = 4 << 10;
    /// Largest size: 64 KiB.
    pub const MAX: usize = 64 << 10;

    /// A buffer of [`ReadBuffer::MIN`] bytes.
    pub fn new() -> Self {
        ReadBuffer {
            buf: vec![0; Self::MIN],
        }
    }

    /// Where to read into.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The first `n` bytes, as read.
    pub fn filled(&self, n: usize) -> &[u8] {
        &self.buf[..n]
    }

    /// Sizes the buffer for the next read, after a read of `n` bytes whose contents have been
    /// used (fed to the session). `message_pending`: whether a message is still incomplete
    /// ([`crate::Session::buffered`] > 0).
    pub fn after_read(&mut self, n: usize, message_pending: bool) {
        let len = self.buf.len();
        if n >= len && len < Self::MAX {
            self.buf = vec![0; (len * 2).min(Self::MAX)];
        } else if n < len && len > Self::MIN && !message_pending {
            self.buf = vec![0; Self::MIN];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_and_shrinks_when_drained_at_a_boundary() {
        let mut b = ReadBuffer::new();
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let n = b.space().len();
            b.after_read(n, true);
            sizes.push(b.space().len());
        }
        assert_eq!(sizes, [8192, 16384, 32768, 65536, 65536, 65536]);
        b.after_read(1000, true);
        assert_eq!(b.space().len(), ReadBuffer::MAX, "a message is half-read");
        b.after_read(1000, false);
        assert_eq!(b.space().len(), ReadBuffer::MIN);
        b.after_read(10, false);
        assert_eq!(b.space().len(), ReadBuffer::MIN);
    }
}
