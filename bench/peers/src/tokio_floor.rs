//! Where a tokio client's sequential rate goes: the same `"id":1` round trip sent raw over a
//! std socket (the baseline of every ratio), raw over a tokio socket, and through qmp-tokio, each
//! tokio one awaited the three ways a tokio program awaits: in `block_on` of a multi-thread
//! runtime (the body of `#[tokio::main]`), in a task spawned on that runtime, and in `block_on`
//! of a current-thread runtime. Raw tokio is the floor of its row: the same bytes with no client
//! at all.
//!
//! Run: `cargo run --release --manifest-path bench/peers/Cargo.toml -- tokio [ROUNDS]`.

use crate::measure::{load_average, sample, Rounds, Sample};
use crate::qsd::Daemon;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const COMMAND: &[u8] = b"{\"execute\":\"query-version\",\"id\":1}\n";
const NEGOTIATE: &[u8] = b"{\"execute\":\"qmp_capabilities\",\"id\":1}\n";
const PER_ROUND: usize = 150;

/// How the caller awaits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Await {
    /// `block_on` of a multi-thread runtime (`#[tokio::main]`'s body): the caller's thread is not
    /// a worker, so the reactor runs on a worker thread.
    MultiBlockOn,
    /// A task spawned on a multi-thread runtime, awaited by `block_on`.
    MultiSpawned,
    /// `block_on` of a current-thread runtime: the caller's thread runs the reactor.
    CurrentThread,
}

impl Await {
    fn name(self) -> &'static str {
        match self {
            Await::MultiBlockOn => "multi-thread, block_on",
            Await::MultiSpawned => "multi-thread, spawned task",
            Await::CurrentThread => "current-thread, block_on",
        }
    }

    fn runtime(self) -> Runtime {
        match self {
            Await::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            _ => Runtime::new(),
        }
        .expect("tokio runtime")
    }
}

/// A raw tokio loop: the baseline's bytes over tokio's socket.
struct RawTokio {
    stream: tokio::io::BufReader<tokio::net::UnixStream>,
    line: String,
}

impl RawTokio {
    async fn connect(path: &Path) -> std::io::Result<RawTokio> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let mut raw = RawTokio {
            stream: tokio::io::BufReader::new(stream),
            line: String::new(),
        };
        raw.read_line().await?;
        raw.stream.get_mut().write_all(NEGOTIATE).await?;
        while !raw.line.contains("\"return\"") {
            raw.read_line().await?;
        }
        Ok(raw)
    }

    async fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn calls(mut self, n: usize) -> (Self, Duration) {
        let t = Instant::now();
        for _ in 0..n {
            self.stream
                .get_mut()
                .write_all(COMMAND)
                .await
                .expect("write");
            self.read_line().await.expect("read");
            assert!(self.line.contains("\"return\""), "{}", self.line);
        }
        (self, t.elapsed())
    }
}

async fn client_calls(client: qmp_tokio::Client, n: usize) -> (qmp_tokio::Client, Duration) {
    let t = Instant::now();
    for _ in 0..n {
        client
            .execute("query-version", ())
            .await
            .expect("query-version");
    }
    (client, t.elapsed())
}

enum Contender {
    RawStd {
        writer: UnixStream,
        reader: BufReader<UnixStream>,
        line: String,
    },
    RawTokio {
        how: Await,
        runtime: Arc<Runtime>,
        raw: Option<RawTokio>,
    },
    Client {
        how: Await,
        runtime: Arc<Runtime>,
        client: Option<qmp_tokio::Client>,
    },
}

/// Runs `work` the way `how` says, on `runtime`.
fn run_on<T: Send + 'static>(
    how: Await,
    runtime: &Runtime,
    work: Pin<Box<dyn Future<Output = T> + Send>>,
) -> T {
    match how {
        Await::MultiSpawned => {
            runtime.block_on(async { runtime.handle().spawn(work).await.expect("task") })
        }
        _ => runtime.block_on(work),
    }
}

impl Contender {
    fn name(&self) -> String {
        match self {
            Contender::RawStd { .. } => "raw std `\"id\":1` (baseline)".into(),
            Contender::RawTokio { how, .. } => format!("raw tokio, {}", how.name()),
            Contender::Client { how, .. } => format!("qmp-tokio, {}", how.name()),
        }
    }

    fn connect(which: usize, path: &Path) -> Contender {
        const HOWS: [Await; 3] = [
            Await::MultiBlockOn,
            Await::MultiSpawned,
            Await::CurrentThread,
        ];
        if which == 0 {
            let writer = UnixStream::connect(path).expect("connect");
            writer
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut reader = BufReader::new(writer.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("greeting");
            (&writer).write_all(NEGOTIATE).expect("negotiate");
            line.clear();
            reader.read_line(&mut line).expect("negotiated");
            return Contender::RawStd {
                writer,
                reader,
                line,
            };
        }
        let how = HOWS[(which - 1) % 3];
        let runtime = Arc::new(how.runtime());
        if which <= 3 {
            let raw = runtime
                .block_on(RawTokio::connect(path))
                .expect("raw tokio");
            Contender::RawTokio {
                how,
                runtime,
                raw: Some(raw),
            }
        } else {
            let client = runtime
                .block_on(qmp_tokio::Client::connect_unix(path))
                .expect("qmp-tokio");
            Contender::Client {
                how,
                runtime,
                client: Some(client),
            }
        }
    }

    fn sequential(&mut self, n: usize) -> Duration {
        match self {
            Contender::RawStd {
                writer,
                reader,
                line,
            } => {
                let t = Instant::now();
                for _ in 0..n {
                    writer.write_all(COMMAND).expect("write");
                    line.clear();
                    reader.read_line(line).expect("read");
                    assert!(line.contains("\"return\""), "{line}");
                }
                t.elapsed()
            }
            Contender::RawTokio { how, runtime, raw } => {
                let r = raw.take().expect("raw");
                let (r, d) = run_on(*how, runtime, Box::pin(r.calls(n)));
                *raw = Some(r);
                d
            }
            Contender::Client {
                how,
                runtime,
                client,
            } => {
                let c = client.take().expect("client");
                let (c, d) = run_on(*how, runtime, Box::pin(client_calls(c, n)));
                *client = Some(c);
                d
            }
        }
    }
}

/// The `tokio` mode: interleaved rounds of every contender, then the table.
/// `only`: measure just that contender (by its row number from 0), e.g. under `perf stat`.
pub fn run(rounds: usize, only: Option<usize>) {
    const COUNT: usize = 7;
    println!("# Where qmp-tokio's sequential rate goes\n");
    println!("load average at start: {}\n", load_average());
    let daemon = Daemon::start(COUNT);
    let mut contenders: Vec<Contender> = (0..COUNT)
        .map(|k| Contender::connect(k, &daemon.socket(k)))
        .collect();
    for c in &mut contenders {
        c.sequential(PER_ROUND); // warm up
    }
    let mut out = Rounds::default();
    for r in 0..rounds {
        let mut row: Vec<Option<Sample>> = vec![None; COUNT];
        for i in 0..COUNT {
            let k = (i + r) % COUNT;
            if only.is_some_and(|o| o != k) {
                continue;
            }
            row[k] = sample(PER_ROUND, || Some(contenders[k].sequential(PER_ROUND)));
        }
        out.rounds.push(row);
    }
    println!(
        "{rounds} rounds × {PER_ROUND} sequential `query-version` calls, contenders rotated each \
         round; ratios are paired medians of rates (min–max), client CPU the lower quartile.\n"
    );
    println!("| contender | µs/cmd | vs raw std | vs raw tokio, same await | client CPU µs/cmd |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let show = |r: Option<crate::measure::Ratio>| {
        r.map_or("—".into(), |r| {
            format!("{:.3} ({:.2}–{:.2})", r.median, r.lo, r.hi)
        })
    };
    for (k, c) in contenders.iter().enumerate() {
        let same = match k {
            4..=6 => show(out.ratio(k, k - 3)),
            1..=3 => "1".into(),
            _ => "—".into(),
        };
        println!(
            "| {} | {:.1} | {} | {} | {:.1} |",
            c.name(),
            out.us(k).unwrap_or(f64::NAN),
            show(out.ratio(k, 0)),
            same,
            out.cpu_us(k).unwrap_or(f64::NAN)
        );
    }
    println!("\nload average at the end: {}", load_average());
}
