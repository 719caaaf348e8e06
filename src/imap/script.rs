//! Recorded IMAP dialogues for unit tests of code that talks to servers (the copy pipeline, the
//! mirror): a loopback peer that sends a greeting, then, for each step, reads one client command
//! (literals read in full and inlined), checks it starts as expected after its tag, and answers
//! with the step's lines, `$tag` standing for the command's tag. Test-only.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ConnectOptions, Security, TlsOptions};

/// One exchange: the start of the command the client must send (after its tag), and the answer.
pub(crate) struct Step {
    pub expect: String,
    pub answer: String,
    /// Once the command arrived: says so, then answers only after the test says go (what the
    /// test does in between happens while the client waits for this answer).
    pub gate: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
    /// The answer is held until the next command has arrived: the client must send that one
    /// without waiting for this answer (pipelining), or the dialogue fails.
    pub pipelined: bool,
}

/// `expect` → `answer` (`$tag` is replaced; lines end with CRLF as given).
pub(crate) fn step(expect: &str, answer: &str) -> Step {
    Step {
        expect: expect.to_string(),
        answer: answer.to_string(),
        gate: None,
        pipelined: false,
    }
}

/// A [`step`] whose answer waits for the client's next command (see [`Step::pipelined`]).
pub(crate) fn pipelined_step(expect: &str, answer: &str) -> Step {
    Step {
        pipelined: true,
        ..step(expect, answer)
    }
}

/// A [`step`] that holds its answer: the first receiver hears when the command arrived, the
/// sender releases the answer.
pub(crate) fn gated_step(
    expect: &str,
    answer: &str,
) -> (Step, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (arrived, heard) = oneshot::channel();
    let (go, wait) = oneshot::channel();
    let step = Step {
        gate: Some((arrived, wait)),
        ..step(expect, answer)
    };
    (step, heard, go)
}

/// Plays `steps` to the first client that connects, after `* OK [CAPABILITY caps] ready`.
/// The task ends with the commands it received, or with the first mismatch.
pub(crate) async fn serve(
    caps: &str,
    steps: Vec<Step>,
) -> (ConnectOptions, JoinHandle<Result<Vec<String>, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let greeting = format!("* OK [CAPABILITY {caps}] ready\r\n");
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (read, mut write) = socket.into_split();
        let mut read = BufReader::new(read);
        let io = |e: std::io::Error| e.to_string();
        write.write_all(greeting.as_bytes()).await.map_err(io)?;
        let mut seen = Vec::new();
        let mut ahead = None;
        for step in steps {
            let command = match ahead.take() {
                Some(command) => command,
                None => read_command(&mut read, &mut write).await?,
            };
            let (tag, rest) = command.split_once(' ').unwrap_or((&command, ""));
            if !rest.starts_with(&step.expect) {
                return Err(format!(
                    "expected {:?}, got {rest:?} (after {seen:?})",
                    step.expect
                ));
            }
            if let Some((arrived, go)) = step.gate {
                let _ = arrived.send(());
                go.await
                    .map_err(|_| "the test never released the answer".to_string())?;
            }
            if step.pipelined {
                let next = tokio::time::timeout(
                    Duration::from_secs(2),
                    read_command(&mut read, &mut write),
                );
                ahead = Some(next.await.map_err(|_| {
                    format!(
                        "the client waited for the answer to {:?} before sending its next command",
                        step.expect
                    )
                })??);
            }
            let answer = step.answer.replace("$tag", tag);
            write.write_all(answer.as_bytes()).await.map_err(io)?;
            seen.push(rest.to_string());
        }
        Ok(seen)
    });
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        tls: TlsOptions::default(),
        timeout: Duration::from_secs(5),
    };
    (opts, task)
}

/// One command, literal data inlined (a synchronising literal gets its `+` first).
async fn read_command<R, W>(read: &mut R, write: &mut W) -> Result<String, String>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| e.to_string();
    let mut command = Vec::new();
    loop {
        let mut line = Vec::new();
        if read.read_until(b'\n', &mut line).await.map_err(io)? == 0 {
            return Err(format!(
                "connection closed in {:?}",
                String::from_utf8_lossy(&command)
            ));
        }
        let body = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
        command.extend_from_slice(&body);
        let Ok(Some(literal)) = super::framer::announcement(&body) else {
            return Ok(String::from_utf8_lossy(&command).into_owned());
        };
        if literal.sync {
            write.write_all(b"+ go\r\n").await.map_err(io)?;
        }
        let mut data = vec![0; usize::try_from(literal.len).map_err(|e| e.to_string())?];
        read.read_exact(&mut data).await.map_err(io)?;
        command.extend_from_slice(b"\r\n");
        command.extend_from_slice(&data);
    }
}
