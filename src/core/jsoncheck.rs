//! A fast check that a text is one valid JSON value, and whether it is compact (no
//! whitespace outside strings, none around it): what an import needs of every event
//! line before keeping its text.
//!
//! [`check`] answers `Some(compact)` only for texts `serde_json` accepts too, and
//! `None` for every other text: invalid JSON, and the few valid forms it leaves to
//! `serde_json` (a `\u` escape of a surrogate, nesting deeper than [`MAX_DEPTH`]). A
//! caller falls back to `serde_json` on `None`, so errors read exactly as before. The
//! tests check both promises against `serde_json` on millions of mutated events.
//!
//! How, as simdjson does it: the text is classified 64 bytes at a time into bit masks
//! with SIMD compares (quotes, backslashes, whitespace, punctuation, control bytes).
//! The escaped bytes follow from the backslashes, the bytes inside strings from a
//! prefix XOR of the unescaped quotes; only the tokens outside strings (punctuation,
//! string starts, starts of numbers and literals) go through a small state machine.
//! Strings are never walked byte by byte.

use wide::u8x16;

/// Nesting deeper than this is left to `serde_json` (whose own limit is 128).
pub const MAX_DEPTH: u32 = 60;
// A container's kind is one bit of a u64 per depth.
const _: () = assert!(MAX_DEPTH < 64);

/// The classes of one 64-byte block: bit `i` for byte `i`.
struct Masks {
    quote: u64,
    backslash: u64,
    space: u64,
    punct: u64,
    control: u64,
}

#[inline]
fn bits16(v: u8x16) -> u64 {
    // `move_mask`: the 16 lanes' high bits, as the low 16 bits.
    u64::from(v.move_mask().cast_unsigned() & 0xffff)
}

#[inline]
fn classify(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        space: 0,
        punct: 0,
        control: 0,
    };
    let splat = u8x16::splat;
    let (quote, backslash) = (splat(b'"'), splat(b'\\'));
    let (space, tab, lf, cr) = (splat(b' '), splat(b'\t'), splat(b'\n'), splat(b'\r'));
    let (open, close, colon, comma) = (splat(b'{'), splat(b'}'), splat(b':'), splat(b','));
    let (bit5, below_space) = (splat(0x20), splat(0x1f));
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(lane);
        let v = u8x16::new(bytes);
        let shift = 16 * k;
        m.quote |= bits16(v.cmp_eq(quote)) << shift;
        m.backslash |= bits16(v.cmp_eq(backslash)) << shift;
        m.space |= bits16(v.cmp_eq(space) | v.cmp_eq(tab) | v.cmp_eq(lf) | v.cmp_eq(cr)) << shift;
        // `[` and `]` are `{` and `}` with bit 5 clear.
        let folded = v | bit5;
        m.punct |=
            bits16(folded.cmp_eq(open) | folded.cmp_eq(close) | v.cmp_eq(colon) | v.cmp_eq(comma))
                << shift;
        m.control |= bits16(v.min(below_space).cmp_eq(v)) << shift;
    }
    m
}

/// The 64 bytes of `b` from `at`, and where they end: the last, short block padded
/// with spaces (never inside anything) in `pad`.
#[inline]
fn block_at<'a>(b: &'a [u8], at: usize, pad: &'a mut [u8; 64]) -> (&'a [u8; 64], usize) {
    let end = (at + 64).min(b.len());
    if let Ok(full) = b[at..end].try_into() {
        return (full, end);
    }
    pad.fill(b' ');
    pad[..end - at].copy_from_slice(&b[at..end]);
    (pad, end)
}

/// The escaped bytes of a block: the byte after each backslash that is not itself
/// escaped. `carry` (bit 0) says the block's first byte is escaped, and is set for
/// the next block when this one ends with an escaping backslash.
#[inline]
fn escaped_bytes(backslash: u64, carry: &mut u64) -> u64 {
    let mut escaped = *carry;
    *carry = 0;
    let mut backslashes = backslash & !escaped;
    while backslashes != 0 {
        let i = backslashes.trailing_zeros();
        backslashes &= backslashes - 1;
        if i == 63 {
            *carry = 1;
        } else {
            escaped |= 1 << (i + 1);
            backslashes &= !(1 << (i + 1));
        }
    }
    escaped
}

/// Bit `i` of the result: the XOR of bits `0..=i` of `x`.
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

// What the state machine expects next.
/// A value (at the top, after `:`, after `,` in an array).
const VALUE: u8 = 0;
/// A value or `]` (just after `[`).
const VALUE_OR_END: u8 = 1;
/// A key or `}` (just after `{`).
const KEY_OR_END: u8 = 2;
/// A key (after `,` in an object).
const KEY: u8 = 3;
/// `:` after a key.
const COLON: u8 = 4;
/// `,` or `}` after a value in an object.
const NEXT_IN_OBJECT: u8 = 5;
/// `,` or `]` after a value in an array (`NEXT_IN_OBJECT + 1`).
const NEXT_IN_ARRAY: u8 = 6;
/// Nothing more: the top value is complete.
const DONE: u8 = 7;

/// See the module's documentation. `text` is UTF-8 (a `&str`), which is what lets
/// the bytes inside strings go unchecked.
#[must_use]
pub fn check(text: &str) -> Option<bool> {
    let b = text.as_bytes();
    let mut state = VALUE;
    // Bit `d` of `arrays`: the container at depth `d` (at most MAX_DEPTH < 64) is an array.
    let mut arrays: u64 = 0;
    let mut depth: u32 = 0;
    let mut compact = true;
    let mut in_string = 0u64; // all ones when a block starts inside a string
    let mut escaped_carry = 0u64; // bit 0: the block's first byte is escaped
    let mut scalar_carry = 0u64; // bit 0: the last block ended inside a number or literal
    let mut at = 0usize;
    let mut pad = [b' '; 64];
    while at < b.len() {
        let (block, end) = block_at(b, at, &mut pad);
        let valid = if end - at == 64 {
            u64::MAX
        } else {
            (1u64 << (end - at)) - 1
        };
        let m = classify(block);

        let escaped = escaped_bytes(m.backslash, &mut escaped_carry);
        // Each escape must be a valid one: `\u` with four hex digits, a surrogate
        // left to serde_json. (A backslash outside a string is refused below as a
        // stray byte, whatever this finds after it.)
        let mut to_check = escaped;
        while to_check != 0 {
            let i = at + to_check.trailing_zeros() as usize;
            to_check &= to_check - 1;
            match b.get(i) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                Some(b'u') => {
                    let hex = b.get(i + 1..i + 5)?;
                    let surrogate = matches!(hex[0], b'd' | b'D')
                        && matches!(hex[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F');
                    if surrogate || !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                }
                _ => return None,
            }
        }

        // Inside a string: from an opening quote up to (not including) its closing one.
        let quotes = m.quote & !escaped;
        let inside = prefix_xor(quotes) ^ in_string;
        in_string = 0u64.wrapping_sub(inside >> 63);
        // A raw control byte (tab and newline included) may not be inside a string.
        if m.control & inside != 0 {
            return None;
        }
        if m.space & !inside & valid != 0 {
            compact = false;
        }
        let string_starts = quotes & inside;
        // Numbers and literals: the runs of other bytes outside strings (a stray
        // byte too, which the scalar check refuses).
        let scalar = !inside & !(m.space | m.punct | m.quote);
        let scalar_starts = scalar & !((scalar << 1) | scalar_carry);
        scalar_carry = scalar >> 63;
        let mut scalars = scalar_starts;
        while scalars != 0 {
            let i = at + scalars.trailing_zeros() as usize;
            scalars &= scalars - 1;
            scalar_ok(&b[i..])?;
        }

        // The tokens, in order, through the state machine.
        let mut tokens = (m.punct & !inside) | string_starts | scalar_starts;
        while tokens != 0 {
            let i = at + tokens.trailing_zeros() as usize;
            tokens &= tokens - 1;
            let after_value = |depth: u32| {
                if depth == 0 {
                    DONE
                } else {
                    NEXT_IN_OBJECT + u8::from((arrays >> depth) & 1 == 1)
                }
            };
            state = match (state, b[i]) {
                (VALUE | VALUE_OR_END, b'{') if depth < MAX_DEPTH => {
                    depth += 1;
                    arrays &= !(1 << depth);
                    KEY_OR_END
                }
                (VALUE | VALUE_OR_END, b'[') if depth < MAX_DEPTH => {
                    depth += 1;
                    arrays |= 1 << depth;
                    VALUE_OR_END
                }
                (KEY_OR_END | KEY, b'"') => COLON,
                (COLON, b':') | (NEXT_IN_ARRAY, b',') => VALUE,
                (NEXT_IN_OBJECT, b',') => KEY,
                (VALUE_OR_END | NEXT_IN_ARRAY, b']') | (KEY_OR_END | NEXT_IN_OBJECT, b'}') => {
                    depth -= 1;
                    after_value(depth)
                }
                (VALUE | VALUE_OR_END, c)
                    if !matches!(c, b'{' | b'[' | b'}' | b']' | b':' | b',') =>
                {
                    after_value(depth)
                }
                _ => return None,
            };
        }
        at = end;
    }
    // A string still open, or a value not complete, is not JSON.
    if state != DONE || in_string != 0 {
        return None;
    }
    Some(compact)
}

/// The quotes, backslashes, openings (`{`, `[`) and closings (`}`, `]`) of a block.
#[inline]
fn classify_brackets(block: &[u8; 64]) -> [u64; 4] {
    let splat = u8x16::splat;
    let (quote, backslash) = (splat(b'"'), splat(b'\\'));
    let (open, close, bit5) = (splat(b'{'), splat(b'}'), splat(0x20));
    let mut m = [0u64; 4];
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(lane);
        let v = u8x16::new(bytes);
        let folded = v | bit5;
        let shift = 16 * k;
        m[0] |= bits16(v.cmp_eq(quote)) << shift;
        m[1] |= bits16(v.cmp_eq(backslash)) << shift;
        m[2] |= bits16(folded.cmp_eq(open)) << shift;
        m[3] |= bits16(folded.cmp_eq(close)) << shift;
    }
    m
}

/// The index just past the object or array that opens at `b[start]`, found with
/// the masks [`check`] uses, so strings (escapes included) are stepped over 64 bytes
/// at a time. `b` must be valid JSON there (an event's text is); `None` when the
/// container does not close.
#[must_use]
pub fn container_end(b: &[u8], start: usize) -> Option<usize> {
    if !matches!(b.get(start), Some(b'{' | b'[')) {
        return None;
    }
    let (mut depth, mut in_string, mut escaped_carry) = (0u32, 0u64, 0u64);
    let mut at = start;
    let mut pad = [b' '; 64];
    while at < b.len() {
        let (block, end) = block_at(b, at, &mut pad);
        let [quote, backslash, open, close] = classify_brackets(block);
        let escaped = escaped_bytes(backslash, &mut escaped_carry);
        let inside = prefix_xor(quote & !escaped) ^ in_string;
        in_string = 0u64.wrapping_sub(inside >> 63);
        let mut brackets = (open | close) & !inside;
        while brackets != 0 {
            let i = brackets.trailing_zeros();
            brackets &= brackets - 1;
            if open >> i & 1 == 1 {
                depth += 1;
            } else {
                depth -= 1;
                if depth == 0 {
                    return Some(at + i as usize + 1);
                }
            }
        }
        at = end;
    }
    None
}

/// `s` starts with a number, `true`, `false` or `null` that ends where a token or
/// whitespace may follow (a quote is refused later by the state machine).
#[inline]
fn scalar_ok(s: &[u8]) -> Option<()> {
    let n = match s.first()? {
        b't' => s.starts_with(b"true").then_some(4)?,
        b'f' => s.starts_with(b"false").then_some(5)?,
        b'n' => s.starts_with(b"null").then_some(4)?,
        _ => number(s)?,
    };
    match s.get(n) {
        None
        | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'}' | b']' | b'{' | b'[' | b'"') => {
            Some(())
        }
        Some(_) => None,
    }
}

/// The length of the JSON number `s` starts with (RFC 8259: no leading zeros, no
/// `+`, digits on both sides of a `.`).
#[inline]
fn number(s: &[u8]) -> Option<usize> {
    let digits = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i + 1),
        _ => return None,
    }
    if s.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde::de::IgnoredAny;

    fn serde_accepts(s: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(s).is_ok()
    }

    /// The slow and obvious scan: each byte from `from` on, with whether it is
    /// inside a string (quotes count as outside), until `f` says stop.
    fn walk(b: &[u8], from: usize, mut f: impl FnMut(usize, u8, bool) -> bool) {
        let (mut inside, mut escape) = (false, false);
        for (i, &c) in b.iter().enumerate().skip(from) {
            let was_inside = inside;
            if inside {
                if escape {
                    escape = false;
                } else if c == b'\\' {
                    escape = true;
                } else if c == b'"' {
                    inside = false;
                }
            } else if c == b'"' {
                inside = true;
            }
            if !f(i, c, was_inside && inside) {
                return;
            }
        }
    }

    /// Whitespace outside strings, found the slow way.
    fn spaced(s: &str) -> bool {
        let mut found = false;
        walk(s.as_bytes(), 0, |_, c, inside| {
            found = !inside && matches!(c, b' ' | b'\t' | b'\n' | b'\r');
            !found
        });
        found
    }

    /// The seeds: the reference connectors' sample events, pretty and compact, and
    /// texts with escapes and backslash runs at every offset of a 64-byte block.
    fn seeds() -> Vec<String> {
        // The files are compiled in: core reads no files, not even in its tests.
        let fixtures = [
            include_str!("../../tests/fixtures/events/customerio-batch-body.json"),
            include_str!("../../tests/fixtures/events/identify.json"),
            include_str!("../../tests/fixtures/events/mixed.ndjson"),
            include_str!("../../tests/fixtures/events/page.json"),
            include_str!("../../tests/fixtures/events/track-dynamic-header.json"),
            include_str!("../../tests/fixtures/events/track.json"),
            include_str!("../../tests/fixtures/events/zeotap-envelope-body.json"),
        ];
        let mut seeds = Vec::new();
        for text in fixtures {
            for doc in std::iter::once(text).chain(text.lines()) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) {
                    seeds.push(doc.to_owned());
                    seeds.push(v.to_string());
                }
            }
        }
        for k in 0..70 {
            let pad = "x".repeat(k);
            seeds.push(format!(
                r#"{{"a{pad}":"q\"\\{pad}\n\u00e9\\","b":[1,-2.5e3,true,null,{{"c":"{}"}}]}}"#,
                "\\\\".repeat(k % 5)
            ));
            seeds.push(format!(
                "{{\"{pad}\":\"{}\\\"\", \"z\" :\t[ 0 ,1e-2 ]}}",
                "\\\\".repeat(k % 7)
            ));
        }
        seeds.push(format!("{}{}", "[".repeat(60), "]".repeat(60)));
        seeds.push(format!("{}1{}", r#"{"a":"#.repeat(61), "}".repeat(61)));
        seeds.extend(
            [
                "{}",
                " [ ] ",
                "\"s\"",
                "-0.5E+10",
                r#"{"s":"\ud83d\ude00"}"#,
                r#"{"k":1e5,"l":-0,"m":0.0e-3,"n":[false]}"#,
            ]
            .map(str::to_owned),
        );
        seeds
    }

    #[test]
    fn the_fixtures_are_valid_and_compact_exactly_when_serde_and_a_slow_scan_say_so() {
        let seeds = seeds();
        assert!(seeds.len() > 150, "the fixtures were not found");
        for s in &seeds {
            if s.contains("\\u") || s.matches('[').count() > 60 || s.matches('{').count() > 60 {
                continue; // left to serde_json by design
            }
            assert_eq!(check(s), Some(!spaced(s)), "{s}");
        }
    }

    /// The end of the container at `i`, the slow way.
    fn slow_end(b: &[u8], i: usize) -> Option<usize> {
        let (mut depth, mut end) = (0, None);
        walk(b, i, |j, c, inside| {
            match c {
                b'{' | b'[' if !inside => depth += 1,
                b'}' | b']' if !inside => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j + 1);
                    }
                }
                _ => {}
            }
            end.is_none()
        });
        end
    }

    #[test]
    fn container_end_finds_every_container_of_the_seeds_where_a_slow_scan_does() {
        let mut checked = 0;
        for s in seeds() {
            if check(&s).is_none() {
                continue;
            }
            let b = s.as_bytes();
            // Every opening outside a string.
            walk(b, 0, |i, c, inside| {
                if !inside && matches!(c, b'{' | b'[') {
                    assert_eq!(super::container_end(b, i), slow_end(b, i), "{s} at {i}");
                    checked += 1;
                }
                true
            });
        }
        assert!(checked > 500, "{checked}");
        assert_eq!(super::container_end(b"{\"a\":[1,2", 0), None);
        assert_eq!(super::container_end(b"1", 0), None);
    }

    #[test]
    fn what_it_leaves_to_serde_json() {
        assert_eq!(check(r#"{"s":"\ud83d\ude00"}"#), None);
        assert_eq!(check(r#"{"s":"\u00e9"}"#), Some(true));
        let deep = format!("{}1{}", "[".repeat(61), "]".repeat(61));
        assert_eq!(check(&deep), None);
        assert!(serde_accepts(&deep));
    }

    #[test]
    fn invalid_texts_are_never_accepted() {
        for bad in [
            "",
            " ",
            "{",
            "}",
            "{]",
            "[}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[,1]",
            "{,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "truex",
            "1 2",
            "{} {}",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"a\tb\"",
            "\"a\nb\"",
            "{\"a\":1}x",
            "[1]]",
            "[[1]",
            "{\"a\" 1}",
            "{1:2}",
            "[\"a\":1]",
            "\\",
            "[\\\"]",
            "{\"a\":1\"b\":2}",
            "[true false]",
            "[nulll]",
            "\u{1}",
            "[1\u{1}]",
        ] {
            assert_eq!(check(bad), None, "{bad:?}");
            assert!(
                !serde_accepts(bad),
                "{bad:?} (the test's own example is wrong)"
            );
        }
    }

    /// A small xorshift: the same mutations on every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % n as u64).unwrap_or(0)
        }
    }

    /// Random edits of the seeds (a byte replaced, inserted, removed, a run copied
    /// elsewhere), from an alphabet of JSON's own bytes: whenever `check` says
    /// valid, `serde_json` agrees, and `compact` is right; whenever `serde_json`
    /// accepts a text without `\u` escapes or deep nesting, so does `check`.
    #[test]
    fn mutated_texts_agree_with_serde_json() {
        let seeds = seeds();
        let alphabet = b"{}[]:,\" \t\n\r\\/u0123456789abcdefABCDEF-+.eEtrueflsn\x01\x1f\x7f";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut valid, mut agreed) = (0, 0);
        for _ in 0..200_000 {
            let mut b = seeds[rng.below(seeds.len())].clone().into_bytes();
            for _ in 0..=rng.below(3) {
                if b.is_empty() {
                    b.push(b'{');
                }
                let at = rng.below(b.len());
                match rng.below(4) {
                    0 => b[at] = alphabet[rng.below(alphabet.len())],
                    1 => b.insert(at, alphabet[rng.below(alphabet.len())]),
                    2 => {
                        b.remove(at);
                    }
                    _ => {
                        let run = b[at..(at + 1 + rng.below(8)).min(b.len())].to_vec();
                        let to = rng.below(b.len());
                        b.splice(to..to, run);
                    }
                }
            }
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            let fast = check(&s);
            let slow = serde_accepts(&s);
            if let Some(compact) = fast {
                assert!(slow, "accepted what serde_json refuses: {s:?}");
                assert_eq!(compact, !spaced(&s), "compact wrong: {s:?}");
                agreed += 1;
            } else if slow {
                let deep = s.matches(['[', '{']).count() > 60;
                assert!(s.contains("\\u") || deep, "refused valid JSON: {s:?}");
            }
            valid += usize::from(slow);
        }
        assert!(
            valid > 10_000 && agreed > 10_000,
            "too few valid cases: {valid}"
        );
    }
}
