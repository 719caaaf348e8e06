//! A streaming, sans-I/O line/literal framer for IMAP command and response streams: it finds line
//! ends and literal announcements (`{n}`, `{n+}`, `~{n}`) and passes literal data through in pieces,
//! so memory stays bounded whatever the literal size. It never rewrites a byte.

use std::borrow::Cow;
use std::collections::VecDeque;

/// Size limits of a [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line in bytes, line ending included (at least 32 is enforced).
    pub max_line: usize,
    /// Largest literal that does not raise [`FrameError::LiteralTooLarge`].
    pub max_literal: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_literal: u64::MAX,
        }
    }
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    /// Announced length in bytes.
    pub len: u64,
    /// `{n}` (the sender waits for a `+` continuation) rather than `{n+}`.
    pub sync: bool,
    /// `~{n}` (RFC 3516 literal8).
    pub binary: bool,
}

/// Framing problems. None of them stops the framer; see each variant for how it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A line grew past [`Limits::max_line`]. The bytes follow as [`Event::Overlong`] pieces up to
    /// the next LF, then [`Event::OverlongEnd`]: the framer has resynchronised.
    LineTooLong,
    /// The literal just announced is larger than [`Limits::max_literal`]. Framing stays correct:
    /// its data still follows as [`Event::LiteralData`] unless [`Framer::reject_literal`] is called.
    LiteralTooLarge { len: u64, max: u64 },
    /// The line ends in `{digits}` whose value does not fit in a `u64`. The line is reported without
    /// a literal; whatever the sender sends next cannot be framed reliably (close the stream).
    LiteralLengthInvalid,
}

/// What the framer found, in stream order. Concatenating the bytes of `Line`, `LiteralData` and
/// `Overlong` events gives back exactly the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete line as received, line ending (CRLF or bare LF) included, and the literal it
    /// announces. The literal's data follows as `LiteralData`, then the line that continues the
    /// command (or response).
    Line {
        bytes: Vec<u8>,
        literal: Option<Literal>,
    },
    /// A piece of literal data, borrowed from the input (never larger than the input given).
    LiteralData(&'a [u8]),
    /// A piece of a line longer than the limit. The first piece is the buffered start of the line
    /// (it holds the tag); later pieces are borrowed from the input; the last one ends with LF.
    Overlong(Cow<'a, [u8]>),
    /// The overlong line ended. If it announced a literal, its data follows as `LiteralData`.
    OverlongEnd { literal: Option<Literal> },
    /// See [`FrameError`].
    Error(FrameError),
}

impl Event<'_> {
    /// The input bytes this event carries (empty for markers and errors).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Event::Line { bytes, .. } => bytes,
            Event::LiteralData(b) => b,
            Event::Overlong(b) => b,
            Event::OverlongEnd { .. } | Event::Error(_) => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line,
    Literal { remaining: u64, announced: u64 },
    Overlong,
}

/// Longest literal announcement, `~{` + 20 digits + `+}` + CRLF, with room to spare.
const TAIL: usize = 32;

/// The streaming framer.
///
/// Bare LF is accepted as a line end (as Dovecot and imap-codec's Fragmentizer do), so the proxy
/// frames exactly as a lenient server would; the bytes are forwarded unchanged and the server
/// decides. A lone CR is an ordinary byte. Drive it with [`Framer::advance`]:
///
/// ```
/// use imapferry::imap::framer::{Event, Framer, Limits};
/// let mut framer = Framer::new(Limits::default());
/// let mut input: &[u8] = b"A1 LOGIN {5}\r\nalice x\r\n";
/// while let (n, Some(event)) = framer.advance(input) {
///     input = &input[n..];
///     if let Event::LiteralData(data) = event { assert_eq!(data, b"alice"); }
/// }
/// assert!(input.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Framer {
    limits: Limits,
    state: State,
    buf: Vec<u8>,
    tail: Vec<u8>,
    queue: VecDeque<Event<'static>>,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_line: limits.max_line.max(TAIL),
            ..limits
        };
        Framer {
            limits,
            state: State::Line,
            buf: Vec::new(),
            tail: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits from now on (e.g. a larger literal limit after login).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits {
            max_line: limits.max_line.max(TAIL),
            ..limits
        };
    }

    /// Consumes a prefix of `input` and returns how many bytes it took and at most one event.
    /// `(n, None)` means all `n == input.len()` bytes were buffered (a partial line, at most
    /// `max_line` bytes) and more input is needed. Call again with the rest while it returns events.
    pub fn advance<'a>(&mut self, input: &'a [u8]) -> (usize, Option<Event<'a>>) {
        if let Some(event) = self.queue.pop_front() {
            return (0, Some(event));
        }
        match self.state {
            State::Line => self.advance_line(input),
            State::Literal { remaining, .. } => {
                if input.is_empty() {
                    return (0, None);
                }
                let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                self.take_literal(n as u64);
                (n, Some(Event::LiteralData(&input[..n])))
            }
            State::Overlong => {
                if !self.buf.is_empty() {
                    let prefix = std::mem::take(&mut self.buf);
                    return (0, Some(Event::Overlong(Cow::Owned(prefix))));
                }
                if input.is_empty() {
                    return (0, None);
                }
                let end = input.iter().position(|&b| b == b'\n');
                let piece = &input[..end.map_or(input.len(), |p| p + 1)];
                self.push_tail(piece);
                if end.is_some() {
                    self.state = State::Line;
                    let tail = std::mem::take(&mut self.tail);
                    let literal = self.announced(&tail);
                    // Errors queued by `announced` come after the end marker.
                    self.queue.push_front(Event::OverlongEnd { literal });
                }
                (piece.len(), Some(Event::Overlong(Cow::Borrowed(piece))))
            }
        }
    }

    fn advance_line<'a>(&mut self, input: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let room = self.limits.max_line.saturating_sub(self.buf.len());
        let window = &input[..room.min(input.len())];
        if let Some(pos) = window.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&window[..=pos]);
            let bytes = std::mem::take(&mut self.buf);
            let literal = self.announced(&bytes);
            return (pos + 1, Some(Event::Line { bytes, literal }));
        }
        self.buf.extend_from_slice(window);
        if self.buf.len() >= self.limits.max_line {
            self.state = State::Overlong;
            self.tail.clear();
            let start = self.buf.len().saturating_sub(TAIL);
            self.tail.extend_from_slice(&self.buf[start..]);
            return (window.len(), Some(Event::Error(FrameError::LineTooLong)));
        }
        (window.len(), None)
    }

    /// Parses the literal announcement at the end of `line`, enters the literal state and queues
    /// the errors it raises.
    fn announced(&mut self, line: &[u8]) -> Option<Literal> {
        match announcement(line) {
            Ok(Some(literal)) => {
                if literal.len > self.limits.max_literal {
                    self.queue
                        .push_back(Event::Error(FrameError::LiteralTooLarge {
                            len: literal.len,
                            max: self.limits.max_literal,
                        }));
                }
                if literal.len > 0 {
                    self.state = State::Literal {
                        remaining: literal.len,
                        announced: literal.len,
                    };
                }
                Some(literal)
            }
            Ok(None) => None,
            Err(e) => {
                self.queue.push_back(Event::Error(e));
                None
            }
        }
    }

    fn push_tail(&mut self, piece: &[u8]) {
        let keep = piece.len().min(TAIL);
        self.tail.extend_from_slice(&piece[piece.len() - keep..]);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
    }

    /// Call right after a line announcing a literal when that literal will not be sent (a
    /// synchronising literal the server refused, or the proxy answered `BAD`): the framer goes back
    /// to reading lines. Returns false (and changes nothing) when no literal data is expected or
    /// some of it has already been framed.
    pub fn reject_literal(&mut self) -> bool {
        match self.state {
            State::Literal {
                remaining,
                announced,
            } if remaining == announced => {
                self.state = State::Line;
                true
            }
            _ => false,
        }
    }

    /// Literal bytes still expected, if the framer is inside a literal.
    pub fn literal_remaining(&self) -> Option<u64> {
        match self.state {
            State::Literal { remaining, .. } => Some(remaining),
            _ => None,
        }
    }

    /// The caller read `n` bytes of the current literal itself, straight into where they go (the
    /// IMAP client's reader does, saving a copy of each body), instead of passing them through
    /// [`Framer::advance`]. `n` is at most [`Framer::literal_remaining`]; more is a caller bug and
    /// ends the literal.
    pub fn take_literal(&mut self, n: u64) {
        if let State::Literal {
            remaining,
            announced,
        } = self.state
        {
            let left = remaining.saturating_sub(n);
            self.state = if left == 0 {
                State::Line
            } else {
                State::Literal {
                    remaining: left,
                    announced,
                }
            };
        }
    }

    /// Bytes held for a partial line (bounded by `max_line`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The literal announced at the end of `line` (`{n}`, `{n+}`, `~{n}`, `~{n+}` before CRLF or LF).
pub fn announcement(line: &[u8]) -> Result<Option<Literal>, FrameError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(line) = line.strip_suffix(b"}") else {
        return Ok(None);
    };
    let (line, sync) = match line.strip_suffix(b"+") {
        Some(rest) => (rest, false),
        None => (line, true),
    };
    let digits = line.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Ok(None);
    }
    let (line, number) = line.split_at(line.len() - digits);
    let Some(line) = line.strip_suffix(b"{") else {
        return Ok(None);
    };
    let binary = line.ends_with(b"~");
    let mut len: u64 = 0;
    for &d in number {
        len = len
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(d - b'0')))
            .ok_or(FrameError::LiteralLengthInvalid)?;
    }
    Ok(Some(Literal { len, sync, binary }))
}

/// Events with owned bytes and adjacent data pieces merged: the chunking-independent view.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Norm {
    Line(Vec<u8>, Option<Literal>),
    Data(Vec<u8>),
    Overlong(Vec<u8>),
    OverlongEnd(Option<Literal>),
    Error(FrameError),
}

/// Frames `data` fed in `chunk`-sized pieces and asserts that the output reassembles to the input
/// and that the events (data pieces merged) are the same as when fed in one piece. Synchronising
/// literals of odd length are rejected, to exercise [`Framer::reject_literal`]. For fuzzing.
pub fn fuzz_frame(data: &[u8], chunk: usize) {
    let whole = frame_all(data, data.len().max(1));
    let chunked = frame_all(data, chunk.max(1));
    assert_eq!(whole, chunked, "framing depends on chunking");
    let mut out = Vec::with_capacity(data.len());
    for e in &chunked {
        match e {
            Norm::Line(b, _) | Norm::Data(b) | Norm::Overlong(b) => out.extend_from_slice(b),
            Norm::OverlongEnd(_) | Norm::Error(_) => {}
        }
    }
    assert_eq!(out, data, "output differs from input");
}

fn frame_all(data: &[u8], chunk: usize) -> Vec<Norm> {
    let mut framer = Framer::new(Limits {
        max_line: 48,
        max_literal: 64,
    });
    let mut events: Vec<Norm> = Vec::new();
    for mut piece in data.chunks(chunk) {
        loop {
            let (n, event) = framer.advance(piece);
            assert!(n <= piece.len());
            piece = &piece[n..];
            let Some(event) = event else {
                assert!(piece.is_empty(), "no event but input left");
                break;
            };
            let announced = match &event {
                Event::Line { literal, .. } | Event::OverlongEnd { literal } => *literal,
                _ => None,
            };
            if let Some(l) = announced
                && l.sync
                && l.len % 2 == 1
            {
                assert!(framer.reject_literal());
            }
            let norm = match event {
                Event::Line { bytes, literal } => {
                    assert!(bytes.len() <= 48 && bytes.ends_with(b"\n"));
                    Norm::Line(bytes, literal)
                }
                Event::LiteralData(d) => {
                    assert!(!d.is_empty());
                    Norm::Data(d.to_vec())
                }
                Event::Overlong(d) => Norm::Overlong(d.into_owned()),
                Event::OverlongEnd { literal } => Norm::OverlongEnd(literal),
                Event::Error(e) => Norm::Error(e),
            };
            match (events.last_mut(), norm) {
                (Some(Norm::Data(prev)), Norm::Data(d)) => prev.extend_from_slice(&d),
                (Some(Norm::Overlong(prev)), Norm::Overlong(d)) => prev.extend_from_slice(&d),
                (_, norm) => events.push(norm),
            }
        }
    }
    // A trailing partial line stays buffered; account for it so reassembly holds.
    if framer.buffered() > 0 {
        events.push(Norm::Data(framer.buf.clone()));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(data: &[u8], limits: Limits) -> Vec<Event<'static>> {
        let mut framer = Framer::new(limits);
        let mut input = data;
        let mut out = Vec::new();
        while let (n, Some(e)) = framer.advance(input) {
            input = &input[n..];
            out.push(match e {
                Event::LiteralData(d) => Event::LiteralData(d.to_vec().leak()),
                Event::Overlong(d) => Event::Overlong(Cow::Owned(d.into_owned())),
                Event::Line { bytes, literal } => Event::Line { bytes, literal },
                Event::OverlongEnd { literal } => Event::OverlongEnd { literal },
                Event::Error(e) => Event::Error(e),
            });
        }
        out
    }

    fn line(b: &[u8], literal: Option<Literal>) -> Event<'static> {
        Event::Line {
            bytes: b.to_vec(),
            literal,
        }
    }

    const fn lit(len: u64, sync: bool, binary: bool) -> Option<Literal> {
        Some(Literal { len, sync, binary })
    }

    #[test]
    fn announcements() {
        type Case<'a> = (&'a [u8], Result<Option<Literal>, FrameError>);
        let cases: &[Case] = &[
            (b"A1 LOGIN {5}\r\n", Ok(lit(5, true, false))),
            (b"A1 APPEND x {12+}\r\n", Ok(lit(12, false, false))),
            (b"A1 APPEND x ~{3}\n", Ok(lit(3, true, true))),
            (b"A1 APPEND x ~{0+}\r\n", Ok(lit(0, false, true))),
            (b"* 1 FETCH (BODY[] {42}\r\n", Ok(lit(42, true, false))),
            (b"A1 NOOP\r\n", Ok(None)),
            (b"A1 X {}\r\n", Ok(None)),
            (b"A1 X {+}\r\n", Ok(None)),
            (b"A1 X 5}\r\n", Ok(None)),
            (b"A1 X {5} \r\n", Ok(None)),
            (b"A1 X {5}\r\r\n", Ok(None)),
            // Without a line end, as the IMAP client's response parser asks.
            (b"* 1 FETCH (BINARY[] ~{7}", Ok(lit(7, true, true))),
            (b"* OK {abc}", Ok(None)),
            (
                b"A1 X {99999999999999999999}\r\n",
                Err(FrameError::LiteralLengthInvalid),
            ),
        ];
        for (l, want) in cases {
            assert_eq!(&announcement(l), want, "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn a_literal_read_by_the_caller_frames_like_one_passed_through() {
        let input = b"* 1 FETCH (BODY[] {10}\r\n0123456789 UID 4)\r\n";
        let mut framer = Framer::new(Limits::default());
        let (n, event) = framer.advance(input);
        assert_eq!(
            event,
            Some(line(b"* 1 FETCH (BODY[] {10}\r\n", lit(10, true, false)))
        );
        // The caller takes 4 bytes, then 6: the framer follows and reads the next line.
        framer.take_literal(4);
        assert_eq!(framer.literal_remaining(), Some(6));
        framer.take_literal(6);
        assert_eq!(framer.literal_remaining(), None);
        let (_, event) = framer.advance(&input[n + 10..]);
        assert_eq!(event, Some(line(b" UID 4)\r\n", None)));
    }

    #[test]
    fn lines_and_literals() {
        let input =
            b"A1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\nA2 NOOP\nA3 APPEND INBOX ~{0}\r\n\r\n";
        assert_eq!(
            frame(input, Limits::default()),
            vec![
                line(b"A1 LOGIN {5}\r\n", lit(5, true, false)),
                Event::LiteralData(b"alice"),
                line(b" {6+}\r\n", lit(6, false, false)),
                Event::LiteralData(b"secret"),
                line(b"\r\n", None),
                line(b"A2 NOOP\n", None),
                line(b"A3 APPEND INBOX ~{0}\r\n", lit(0, true, true)),
                line(b"\r\n", None),
            ]
        );
    }

    #[test]
    fn literal_data_streams_in_pieces() {
        let mut framer = Framer::new(Limits::default());
        let (n, e) = framer.advance(b"A1 APPEND x {10}\r\n0123");
        assert_eq!(n, 18);
        assert!(matches!(e, Some(Event::Line { .. })));
        assert_eq!(
            framer.advance(b"0123"),
            (4, Some(Event::LiteralData(b"0123")))
        );
        assert_eq!(framer.literal_remaining(), Some(6));
        assert_eq!(
            framer.advance(b"456789\r\nA2"),
            (6, Some(Event::LiteralData(b"456789")))
        );
        assert_eq!(framer.literal_remaining(), None);
        assert_eq!(framer.advance(b"\r\nA2"), (2, Some(line(b"\r\n", None))));
        assert_eq!(framer.advance(b"A2"), (2, None));
        assert_eq!(framer.buffered(), 2);
    }

    #[test]
    fn overlong_line_resynchronises() {
        let limits = Limits {
            max_line: 32,
            max_literal: 100,
        };
        let long = [b'x'; 40];
        let mut input = b"A1 ".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\r\nA2 NOOP\r\n");
        let events = frame(&input, limits);
        assert_eq!(events[0], Event::Error(FrameError::LineTooLong));
        assert!(
            matches!(&events[1], Event::Overlong(b) if b.starts_with(b"A1 x") && b.len() == 32)
        );
        assert!(matches!(&events[2], Event::Overlong(b) if b.ends_with(b"x\r\n")));
        assert_eq!(events[3], Event::OverlongEnd { literal: None });
        assert_eq!(events[4], line(b"A2 NOOP\r\n", None));
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn overlong_line_with_literal_keeps_framing() {
        let limits = Limits {
            max_line: 32,
            max_literal: 100,
        };
        let mut input = b"A1 APPEND ".to_vec();
        input.extend_from_slice(&[b'x'; 40]);
        input.extend_from_slice(b" {3+}\r\n{9}\r\nA2 NOOP\r\n");
        let events = frame(&input, limits);
        let end = events
            .iter()
            .position(|e| matches!(e, Event::OverlongEnd { .. }));
        let end = end.unwrap_or(0);
        assert_eq!(
            events[end..],
            [
                Event::OverlongEnd {
                    literal: lit(3, false, false)
                },
                Event::LiteralData(b"{9}"),
                line(b"\r\n", None),
                line(b"A2 NOOP\r\n", None),
            ]
        );
    }

    #[test]
    fn literal_too_large_keeps_framing() {
        let limits = Limits {
            max_line: 64,
            max_literal: 4,
        };
        assert_eq!(
            frame(b"A1 APPEND x {6+}\r\nabcdef\r\nA2 NOOP\r\n", limits),
            vec![
                line(b"A1 APPEND x {6+}\r\n", lit(6, false, false)),
                Event::Error(FrameError::LiteralTooLarge { len: 6, max: 4 }),
                Event::LiteralData(b"abcdef"),
                line(b"\r\n", None),
                line(b"A2 NOOP\r\n", None),
            ]
        );
    }

    #[test]
    fn rejected_sync_literal_is_not_expected() {
        let mut framer = Framer::new(Limits::default());
        let (_, e) = framer.advance(b"A1 APPEND x {600}\r\n");
        assert!(matches!(e, Some(Event::Line { .. })));
        assert!(framer.reject_literal());
        assert!(!framer.reject_literal());
        assert_eq!(
            framer.advance(b"A2 NOOP\r\n"),
            (9, Some(line(b"A2 NOOP\r\n", None)))
        );
    }

    #[test]
    fn invalid_literal_length_is_reported() {
        assert_eq!(
            frame(b"A1 X {99999999999999999999}\r\nA2\r\n", Limits::default()),
            vec![
                line(b"A1 X {99999999999999999999}\r\n", None),
                Event::Error(FrameError::LiteralLengthInvalid),
                line(b"A2\r\n", None),
            ]
        );
    }

    #[test]
    fn fuzz_frame_samples() {
        let samples: &[&[u8]] = &[
            b"",
            b"A1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
            b"A1 APPEND INBOX {3}\r\nabc\r\nA2 APPEND INBOX {4}\r\nabcd\r\n",
            b"A1 APPEND xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {3+}\r\nabc\r\n",
            b"A1 APPEND x {1000+}\r\nabc",
            b"no newline at all, longer than the line limit of the fuzz framer",
        ];
        for s in samples {
            for chunk in 1..=s.len().max(1) {
                fuzz_frame(s, chunk);
            }
        }
    }

    proptest! {
        #[test]
        fn framing_is_chunking_independent(
            data in proptest::collection::vec(
                prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'{'), Just(b'}'), Just(b'+'), Just(b'~'),
                    (b'0'..=b'9'), any::<u8>()
                ],
                0..400,
            ),
            chunk in 1usize..64,
        ) {
            fuzz_frame(&data, chunk);
        }
    }
}
