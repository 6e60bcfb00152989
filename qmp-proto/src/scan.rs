//! Finding the next interesting byte, eight bytes at a time.
//!
//! Framing and string parsing spend most of their time skipping bytes that need no attention
//! (string contents, indentation). Testing one byte at a time costs a compare and a branch per byte;
//! these functions test a 64-bit word at once ("SWAR", SIMD within a register) and fall back to a
//! byte loop for the last few bytes. No `unsafe`: words are read with `u64::from_le_bytes`, which
//! compiles to one unaligned load.
//!
//! Framing uses [`bytes_equal`], which marks every matching byte of a word exactly, to account for
//! a whole word of a message at once. String parsing uses [`string_special`], which finds the first
//! match with a cheaper test. That trick (from "Bit Twiddling Hacks", "determine if a word has a
//! zero byte"): for a word `x`,
//! `(x - 0x01..01) & !x & 0x80..80` has the high bit set in every byte of `x` that is zero, and may
//! also set it in bytes *above* a zero byte (the borrow ripples up), never below. Reading the word
//! little-endian puts the first byte in the lowest bits, so the lowest set bit always marks the
//! first real match, which is all `string_special` needs. To look for byte `b`, apply it to
//! `x ^ (b * 0x01..01)`, which is zero exactly where `x` holds `b`. To look for bytes below `n`
//! (n <= 0x80), use `(x - n * 0x01..01) & !x & 0x80..80` with the same property.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` equal to `b` (exact up to the lowest match).
#[inline(always)]
fn eq(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * b as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// High bit set in each byte of `w` below `n`, for `n <= 0x80` (exact up to the lowest match).
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * n as u64) & !w & HIGHS
}

/// `b` in every byte.
#[inline(always)]
pub(crate) const fn splat(b: u8) -> u64 {
    ONES * b as u64
}

/// High bit set in exactly the bytes of `w` equal to `b`. Unlike [`eq`], there are no false
/// positives anywhere: adding 0x7F to the low 7 bits of a byte cannot carry into the next byte,
/// and sets the high bit unless those bits are zero; or-ing the byte itself in covers 0x80.
#[inline(always)]
pub(crate) fn bytes_equal(w: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = w ^ splat(b);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Length of the run of JSON whitespace (space, tab, CR, LF) at the start of `bytes`.
pub(crate) fn whitespace_len(bytes: &[u8]) -> usize {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let w = word(&bytes[i..]);
        let ws = bytes_equal(w, b' ')
            | bytes_equal(w, b'\t')
            | bytes_equal(w, b'\r')
            | bytes_equal(w, b'\n');
        let other = !ws & HIGHS;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..].iter().take_while(|&&b| is_ws(b)).count()
}

/// How many bytes of `marks` have their high bit set, for a mask with no other bits set (as
/// [`bytes_equal`] returns). Multiplying the 0/1 bytes by 0x01..01 sums them into the top byte;
/// `count_ones` would be a dozen instructions on targets without POPCNT (the x86-64 baseline).
#[inline(always)]
pub(crate) fn count_marked(marks: u64) -> usize {
    ((marks >> 7).wrapping_mul(ONES) >> 56) as usize
}

/// The first 8 bytes of `bytes`, the first in the lowest bits.
#[inline(always)]
pub(crate) fn word(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(a)
}

/// Index of the first byte of `bytes` for which `hit_word` marks a match in its word, or for which
/// `hit_byte` is true in the tail.
#[inline(always)]
fn find(
    bytes: &[u8],
    hit_word: impl Fn(u64) -> u64,
    hit_byte: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let m = hit_word(word(&bytes[i..]));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| hit_byte(b)).map(|k| i + k)
}

/// Index of the first `"`, `\` or control character (below 0x20): the end of a run of string
/// contents that can be copied as is, for parsing.
pub(crate) fn string_special(bytes: &[u8]) -> Option<usize> {
    find(
        bytes,
        |w| eq(w, b'"') | eq(w, b'\\') | below(w, 0x20),
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position and every byte value, with every other byte drawn from a set that includes
    /// bytes just above and below each target (where carries and borrows would show).
    #[test]
    fn agrees_with_a_byte_loop() {
        let fillers = [
            0x00, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 0x21, 0x22, 0x5B, 0x5C, 0x7B, 0x7D, 0x80, 0xFF,
            b'a',
        ];
        let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        // Every byte value natively; under Miri (about 10,000 times slower) the interesting ones.
        let targets: Vec<u8> = if cfg!(miri) {
            fillers.to_vec()
        } else {
            (0..=255).collect()
        };
        for len in 0..18 {
            for &fill in &fillers {
                let mut s = vec![fill; len];
                for pos in 0..len {
                    for &target in &targets {
                        s[pos] = target;
                        let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
                        assert_eq!(
                            whitespace_len(&s),
                            s.iter().take_while(|&&b| ws(b)).count(),
                            "{s:?}"
                        );
                        assert_eq!(
                            string_special(&s),
                            s.iter().position(|&b| special(b)),
                            "{s:?}"
                        );
                        if len == 8 {
                            for b in [b'"', b'\\', b'{', b'}', 0, 0x80, 0xFF] {
                                let m = bytes_equal(word(&s), b);
                                let n = s.iter().filter(|&&c| c == b).count();
                                assert_eq!(count_marked(m), n);
                                for (j, &c) in s.iter().enumerate() {
                                    assert_eq!(m >> (8 * j) & 0xFF, u64::from(c == b) << 7);
                                }
                            }
                        }
                    }
                    s[pos] = fill;
                }
            }
        }
    }
}
