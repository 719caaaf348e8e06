//! The streaming response reader: reads one server response (a line, plus every literal it
//! announces, as [`super::framer`] finds them) from a buffered stream. Literals up to [`SPOOL_THRESHOLD`] stay in memory; larger
//! ones are written to an unnamed temporary file as they arrive, so memory per connection stays
//! bounded whatever the message size. Every read is bounded by an inactivity timeout. Spool files
//! are created, filled, copied and streamed back on tokio's blocking threads, never on the
//! threads that run connections (only [`Body::prefix`], a bounded read, is synchronous).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

use super::framer::{Event, FrameError, Framer, Limits, Literal};
use super::{ImapError, Result, Side};

/// Literals larger than this are spooled to disk instead of memory.
pub const SPOOL_THRESHOLD: usize = 256 * 1024;
/// Longest response line accepted (a `UID SEARCH` answer for a million messages fits).
const MAX_LINE: usize = 32 * 1024 * 1024;
/// Bytes gathered before one write to a spool file, and read back at once.
const SPOOL_IO: usize = 256 * 1024;

/// A message body (or any literal): in memory when small, in an unnamed temporary file otherwise.
#[derive(Debug)]
pub enum Body {
    Mem(Vec<u8>),
    File { file: std::fs::File, len: u64 },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Mem(v) => v.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `max` bytes (e.g. to find the header block without reading a whole spooled file):
    /// borrowed from memory, or a synchronous read of at most `max` bytes of a file just written
    /// (callers ask for a header's worth).
    pub fn prefix(&self, max: usize) -> std::io::Result<Cow<'_, [u8]>> {
        match self {
            Body::Mem(v) => Ok(Cow::Borrowed(&v[..v.len().min(max)])),
            Body::File { file, len } => {
                let mut f = file.try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                let mut out = vec![0; (*len as usize).min(max)];
                f.read_exact(&mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// The same message with `prefix` in front (e.g. a header line added by `--addheader`). A
    /// spooled body is copied to a new spool file on a blocking thread.
    pub async fn with_prefix(self, prefix: &[u8]) -> std::io::Result<Body> {
        match self {
            Body::Mem(mut v) => {
                v.splice(0..0, prefix.iter().copied());
                Ok(Body::Mem(v))
            }
            Body::File { mut file, len } => {
                let prefix = prefix.to_vec();
                blocking(move || {
                    let mut out = tempfile::tempfile()?;
                    out.write_all(&prefix)?;
                    file.seek(SeekFrom::Start(0))?;
                    std::io::copy(&mut file, &mut out)?;
                    Ok(Body::File {
                        file: out,
                        len: len + prefix.len() as u64,
                    })
                })
                .await
            }
        }
    }

    /// Small bodies as bytes; spooled ones read back whole (for tests and small tools only).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        self.prefix(usize::MAX).map(Cow::into_owned)
    }

    /// Writes the exact bytes to `out`, streaming a spooled file in chunks.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, out: &mut W) -> std::io::Result<()> {
        match self {
            Body::Mem(v) => out.write_all(v).await,
            Body::File { file, len } => {
                // Each piece is read into this buffer on a blocking thread, which hands it back.
                let mut file = file.try_clone()?;
                let mut buf = Vec::with_capacity(SPOOL_IO);
                let mut at = 0;
                while at < *len {
                    let n = (*len - at).min(SPOOL_IO as u64) as usize;
                    (file, buf) = blocking(move || {
                        buf.resize(n, 0);
                        file.read_exact_at(&mut buf, at)?;
                        Ok((file, buf))
                    })
                    .await?;
                    out.write_all(&buf).await?;
                    at += n as u64;
                }
                Ok(())
            }
        }
    }
}

/// Runs blocking file work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// One piece of a response: text (without CRLF) or a literal announced at the end of the text before it.
#[derive(Debug)]
pub enum Part {
    Text(Vec<u8>),
    Literal(Body),
}

/// Reads one complete response. `Ok(None)` means the server closed the connection cleanly.
pub async fn read_response<S: AsyncBufRead + AsyncRead + Unpin>(
    stream: &mut S,
    side: Side,
    timeout: Duration,
) -> Result<Option<Vec<Part>>> {
    let mut framer = Framer::new(Limits {
        max_line: MAX_LINE,
        max_literal: u64::MAX,
    });
    let mut parts = Vec::new();
    loop {
        let Some((line, literal)) = read_line(stream, &mut framer, side, timeout).await? else {
            return if parts.is_empty() {
                Ok(None)
            } else {
                Err(ImapError::Closed {
                    side,
                    text: "in the middle of a response".into(),
                })
            };
        };
        parts.push(Part::Text(line));
        if literal.is_none() {
            return Ok(Some(parts));
        }
        parts.push(Part::Literal(
            read_literal(stream, &mut framer, side, timeout).await?,
        ));
    }
}

async fn fill<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    side: Side,
    timeout: Duration,
) -> Result<&[u8]> {
    within(side, timeout, stream.fill_buf()).await
}

/// A read of a response, bounded by `timeout`.
async fn within<T>(
    side: Side,
    timeout: Duration,
    read: impl Future<Output = std::io::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ImapError::Timeout {
            side,
            what: "a response".into(),
            secs: timeout.as_secs(),
        }),
        Ok(Err(source)) => Err(ImapError::Io { side, source }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// The next line (without its line end) and the literal it announces, framed by `framer`.
async fn read_line<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    side: Side,
    timeout: Duration,
) -> Result<Option<(Vec<u8>, Option<Literal>)>> {
    let protocol = |message: String| ImapError::Protocol { side, message };
    loop {
        let buf = fill(stream, side, timeout).await?;
        if buf.is_empty() {
            return if framer.buffered() == 0 {
                Ok(None)
            } else {
                Err(ImapError::Closed {
                    side,
                    text: "in the middle of a line".into(),
                })
            };
        }
        let (n, event) = framer.advance(buf);
        let line = match event {
            None => None,
            Some(Event::Line { bytes, literal }) => Some((bytes, literal)),
            Some(Event::Error(FrameError::LineTooLong) | Event::Overlong(_)) => {
                return Err(protocol(format!(
                    "response line longer than {MAX_LINE} bytes"
                )));
            }
            Some(other) => return Err(protocol(format!("unexpected framing: {other:?}"))),
        };
        stream.consume(n);
        if let Some((mut line, literal)) = line {
            // An announcement too large for a u64 is reported right after its line.
            if let (_, Some(Event::Error(e))) = framer.advance(&[]) {
                return Err(protocol(format!("{e:?} in a response line")));
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some((line, literal)));
        }
    }
}

/// The literal `framer` is in, read straight into memory or a spool file (not through the
/// framer's events, which would copy each piece once more).
async fn read_literal<S: AsyncBufRead + AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    side: Side,
    timeout: Duration,
) -> Result<Body> {
    let spool_err = |source| ImapError::Spool { side, source };
    let len = framer.literal_remaining().unwrap_or(0);
    // A large literal goes to a spool file in pieces of `SPOOL_IO` bytes gathered in `mem`, each
    // written on a blocking thread, which hands the file and the buffer back.
    let mut spool = None;
    if len > SPOOL_THRESHOLD as u64 {
        spool = Some(blocking(tempfile::tempfile).await.map_err(spool_err)?);
    }
    let mut mem = Vec::with_capacity(match spool {
        Some(_) => SPOOL_IO,
        None => len as usize,
    });
    while let Some(left) = framer.literal_remaining() {
        // Straight into `mem`: a buffered reader with nothing buffered hands a read larger than
        // its buffer to the socket, saving a copy of the body.
        let room = match spool {
            Some(_) => (SPOOL_IO - mem.len()) as u64,
            None => left,
        };
        let mut limited = (&mut *stream).take(left.min(room));
        let n = within(side, timeout, limited.read_buf(&mut mem)).await?;
        if n == 0 {
            return Err(ImapError::Closed {
                side,
                text: "in the middle of a literal".into(),
            });
        }
        framer.take_literal(n as u64);
        let done = framer.literal_remaining().is_none();
        if let Some(mut file) = spool.take_if(|_| mem.len() == SPOOL_IO || done) {
            (file, mem) = blocking(move || {
                file.write_all(&mem)?;
                mem.clear();
                Ok((file, mem))
            })
            .await
            .map_err(spool_err)?;
            spool = Some(file);
        }
    }
    Ok(match spool {
        Some(file) => Body::File { file, len },
        None => Body::Mem(mem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], chunk: usize) -> Vec<Vec<Part>> {
        let (mut tx, rx) = tokio::io::duplex(chunk.max(1));
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            for c in data.chunks(chunk.max(1)) {
                tx.write_all(c).await.unwrap();
            }
        });
        let mut rx = tokio::io::BufReader::with_capacity(chunk.max(1), rx);
        let mut out = Vec::new();
        while let Some(r) = read_response(&mut rx, Side::Old, Duration::from_secs(5))
            .await
            .unwrap()
        {
            out.push(r);
        }
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn frames_literals_across_any_chunking() {
        let big = vec![b'x'; SPOOL_THRESHOLD + 10];
        let mut input = b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n* 2 FETCH (BODY[] {".to_vec();
        input.extend_from_slice(format!("{}}}\r\n", big.len()).as_bytes());
        input.extend_from_slice(&big);
        input.extend_from_slice(b" UID 6)\r\nA1 OK done\r\n");
        for chunk in [1, 7, 4096, 1 << 20] {
            let responses = read_all(&input, chunk).await;
            assert_eq!(responses.len(), 3);
            match &responses[0][1] {
                Part::Literal(Body::Mem(v)) => assert_eq!(v, b"abc"),
                other => panic!("expected a small literal, got {other:?}"),
            }
            match &responses[1][1] {
                Part::Literal(b @ Body::File { .. }) => assert_eq!(b.to_vec().unwrap(), big),
                other => panic!("expected a spooled literal, got {other:?}"),
            }
            match &responses[1][2] {
                Part::Text(t) => assert_eq!(t, b" UID 6)"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_bad_announcement_or_an_overlong_line_is_an_error_not_a_misframing() {
        let overlong = format!("* OK {}\r\n", "x".repeat(MAX_LINE));
        for input in [
            &b"* 1 FETCH (BODY[] {99999999999999999999}\r\nabc)\r\n"[..],
            overlong.as_bytes(),
        ] {
            let mut rx = tokio::io::BufReader::new(input);
            let got = read_response(&mut rx, Side::Old, Duration::from_secs(5)).await;
            assert!(
                matches!(
                    got,
                    Err(ImapError::Protocol {
                        side: Side::Old,
                        ..
                    })
                ),
                "{got:?}"
            );
        }
    }

    #[tokio::test]
    async fn spooled_bodies_stream_back_and_take_a_prefix() {
        let big: Vec<u8> = (0..SPOOL_THRESHOLD + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut input = format!("* 1 FETCH (BODY[] {{{}}}\r\n", big.len()).into_bytes();
        input.extend_from_slice(&big);
        input.extend_from_slice(b")\r\n");
        let mut responses = read_all(&input, 4096).await;
        let Part::Literal(body) = responses[0].remove(1) else {
            panic!("no literal");
        };
        let mut out = Vec::new();
        body.write_to(&mut out).await.unwrap();
        assert_eq!(out, big);
        let body = body.with_prefix(b"Message-Id: <1@x>\r\n").await.unwrap();
        assert!(matches!(body, Body::File { .. }));
        let mut out = Vec::new();
        body.write_to(&mut out).await.unwrap();
        assert_eq!(&out[..19], b"Message-Id: <1@x>\r\n");
        assert_eq!(&out[19..], &big[..]);
        assert_eq!(body.len(), big.len() as u64 + 19);
    }
}
