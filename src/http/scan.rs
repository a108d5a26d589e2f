//! Where each request's head begins in the raw byte stream of a connection,
//! independently of hyper's buffering: the watchdog times a head from its
//! own first byte, even when that byte arrived in the same read as the end
//! of the previous request (issue 12, finding 8).
//!
//! A small state machine over the bytes read: a head runs to its blank line
//! (`\r\n\r\n`); a `Content-Length` body is skipped by counting. A chunked
//! (or otherwise unknown) body ends the tracking until the connection's
//! next answer (Tencent sends `Content-Length`; the idle timer bounds the
//! rest).

/// What the scanner is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: no byte of the next head yet.
    Between,
    /// Inside a head.
    Head,
    /// Inside a body with this many bytes left.
    Body(u64),
    /// A body whose length the scanner does not know.
    Unknown,
}

/// The longest header line the scanner looks into (for `Content-Length`
/// and `Transfer-Encoding`); longer lines are only skipped.
const LINE: usize = 64;

/// The scanner of one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// 1 right after a line feed (carriage returns aside): a second one ends
    /// the head.
    matched: u8,
    /// The current header line's first bytes, lower-cased.
    line: [u8; LINE],
    line_len: usize,
    /// The head's `Content-Length`, once seen.
    length: Option<u64>,
    /// The head has a `Transfer-Encoding` (its length is not `length`).
    chunked: bool,
}

/// What a read told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// A head began in this read (its first byte was read now).
    pub head_began: bool,
    /// A head ended in this read, and no other head began after it.
    pub head_ended: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Between,
            matched: 0,
            line: [0; LINE],
            line_len: 0,
            length: None,
            chunked: false,
        }
    }
}

impl Scanner {
    /// The connection answered a request: a body of unknown length is over
    /// (hyper read or discarded it), so the next byte starts a head.
    pub fn answered(&mut self) {
        if self.state == State::Unknown {
            self.state = State::Between;
        }
    }

    /// `true` while inside a head.
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// Feeds the bytes of one read.
    pub fn read(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            match self.state {
                State::Unknown => return seen,
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    self.state = match left - n {
                        0 => State::Between,
                        rest => State::Body(rest),
                    };
                }
                State::Between => {
                    // A head may be preceded by stray CRLFs (RFC 9112 §2.2).
                    if matches!(bytes[0], b'\r' | b'\n') {
                        bytes = &bytes[1..];
                        continue;
                    }
                    self.begin_head();
                    seen.head_began = true;
                    seen.head_ended = false;
                }
                State::Head => {
                    let (used, ended) = self.head(bytes);
                    bytes = &bytes[used..];
                    if ended {
                        seen.head_ended = true;
                        self.state = match (self.chunked, self.length) {
                            (true, _) => State::Unknown,
                            (false, Some(0) | None) => State::Between,
                            (false, Some(n)) => State::Body(n),
                        };
                    }
                }
            }
        }
        seen
    }

    fn begin_head(&mut self) {
        self.state = State::Head;
        self.matched = 0;
        self.line_len = 0;
        self.length = None;
        self.chunked = false;
    }

    /// Consumes head bytes; returns how many, and whether the head ended:
    /// at an empty line, `\r\n\r\n` or `\n\n` (httparse accepts bare LF).
    /// Line by line (memchr finds each line feed): only a line's first
    /// [`LINE`] bytes are copied, so a head costs little more than its lines
    /// (a callback's request line alone is a few hundred bytes).
    fn head(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let (segment, line_feed) = match memchr::memchr(b'\n', rest) {
                Some(n) => (&rest[..n], true),
                None => (rest, false),
            };
            // Carriage returns neither count as content nor are copied.
            if segment.iter().any(|&b| b != b'\r') {
                self.matched = 0;
                for &b in segment {
                    if self.line_len == LINE {
                        break;
                    }
                    if b != b'\r' {
                        self.line[self.line_len] = b.to_ascii_lowercase();
                        self.line_len += 1;
                    }
                }
            }
            if !line_feed {
                break;
            }
            at += segment.len() + 1;
            if self.matched == 1 {
                return (at, true);
            }
            self.matched = 1;
            self.end_line();
        }
        (bytes.len(), false)
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.line_len];
        if let Some(v) = line.strip_prefix(b"content-length:") {
            let digits = v.trim_ascii();
            self.length = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
            if self.length.is_none() {
                // Not a length the scanner can count: stop tracking.
                self.chunked = true;
            }
        } else if line.starts_with(b"transfer-encoding:") {
            self.chunked = true;
        }
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_bodies_are_told_apart_across_reads() {
        let mut s = Scanner::default();
        let seen = s.read(b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel");
        assert_eq!(
            seen,
            Seen {
                head_began: true,
                head_ended: true
            }
        );
        assert!(!s.in_head());
        // The body's end and a partial next head in one read.
        let seen = s.read(b"loPOST /callback HT");
        assert_eq!(
            seen,
            Seen {
                head_began: true,
                head_ended: false
            }
        );
        assert!(s.in_head());
        let seen = s.read(b"TP/1.1\r\ncontent-length:0\r\n\r\n");
        assert_eq!(
            seen,
            Seen {
                head_began: false,
                head_ended: true
            }
        );
        assert!(!s.in_head());
        // Nothing: no head.
        assert_eq!(s.read(b""), Seen::default());
    }

    #[test]
    fn a_chunked_body_stops_tracking_until_the_answer() {
        let mut s = Scanner::default();
        s.read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        assert!(!s.in_head());
        assert_eq!(s.read(b"0\r\n\r\nPOST"), Seen::default());
        s.answered();
        assert!(s.read(b"GET").head_began);
    }

    /// The scanner's whole state, for comparing two of them.
    fn state(s: &Scanner) -> (State, u8, Vec<u8>, Option<u64>, bool) {
        (
            s.state,
            s.matched,
            s.line[..s.line_len].to_vec(),
            s.length,
            s.chunked,
        )
    }

    proptest::proptest! {
        /// Issue 15: reading a line at a time (memchr) sees what reading a
        /// byte at a time (the scanner before issue 15 did exactly that per
        /// byte) sees, read for read.
        #[test]
        fn lines_at_a_time_agree_with_bytes_at_a_time(
            reads in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(b"\r\n\r\n:aZ 07Content-Length: 3Transfer-Encoding".to_vec()),
                    0..40,
                ),
                0..8,
            ),
        ) {
            let (mut whole, mut bytewise) = (Scanner::default(), Scanner::default());
            for read in &reads {
                let seen = whole.read(read);
                let mut folded = Seen::default();
                for b in read {
                    let one = bytewise.read(std::slice::from_ref(b));
                    if one.head_began {
                        folded = Seen { head_began: true, head_ended: false };
                    }
                    folded.head_ended |= one.head_ended;
                }
                proptest::prop_assert_eq!(seen, folded);
                proptest::prop_assert_eq!(state(&whole), state(&bytewise));
            }
        }
    }

    #[test]
    fn a_head_split_at_every_byte_is_found() {
        let req = b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut s = Scanner::default();
        let mut began = 0;
        let mut ended = 0;
        for b in req.iter() {
            let seen = s.read(std::slice::from_ref(b));
            began += usize::from(seen.head_began);
            ended += usize::from(seen.head_ended);
        }
        assert_eq!((began, ended), (1, 1));
        let mut s = Scanner::default();
        let seen = s.read(b"GET / HTTP/1.1\nHost: x\n\nGET");
        assert_eq!(
            seen,
            Seen {
                head_began: true,
                head_ended: false
            }
        );
    }
}
