//! The contenders: two raw loops, our four clients and the three peers, each used as its own
//! documentation shows, each on its own monitor of the same daemon.

use futures::future::{join_all, LocalBoxFuture};
use std::future::Future;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Every contender, in table order. The first is the baseline of every ratio.
pub const ALL: [Kind; 9] = [
    Kind::Raw,
    Kind::RawOurBytes,
    Kind::Blocking,
    Kind::Smol,
    Kind::AsyncStd,
    Kind::Tokio,
    Kind::QapiTokio,
    Kind::QapiBlocking,
    Kind::Qmp01,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{"execute":"query-version","id":1}` over a std `UnixStream`: the baseline.
    Raw,
    /// The bytes our clients send (ids reused, smallest first: `"id":1` one at a time, `1`..=`n`
    /// for `n` together), over a std `UnixStream`.
    RawOurBytes,
    Blocking,
    Smol,
    AsyncStd,
    Tokio,
    QapiTokio,
    QapiBlocking,
    Qmp01,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw `\"id\":1` (baseline)",
            Kind::RawOurBytes => "raw, our clients' bytes",
            Kind::Blocking => "qmp-blocking",
            Kind::Smol => "qmp-smol",
            Kind::AsyncStd => "qmp-async-std",
            Kind::Tokio => "qmp-tokio",
            Kind::QapiTokio => "qapi-rs 0.15 tokio",
            Kind::QapiBlocking => "qapi-rs 0.15 blocking + BufWriter",
            Kind::Qmp01 => "qmp 0.1 (tokio)",
        }
    }

    /// The name on the command line of the child modes.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::RawOurBytes => "raw-ours",
            Kind::Blocking => "blocking",
            Kind::Smol => "smol",
            Kind::AsyncStd => "async-std",
            Kind::Tokio => "tokio",
            Kind::QapiTokio => "qapi-tokio",
            Kind::QapiBlocking => "qapi-blocking",
            Kind::Qmp01 => "qmp01",
        }
    }

    pub fn from_id(id: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.id() == id)
    }

    /// Whether its wire ids are a counter whose length grows with use (warmed up before
    /// measuring, so all have as many digits throughout).
    pub fn counts_ids(self) -> bool {
        !matches!(self, Kind::Raw | Kind::RawOurBytes | Kind::QapiBlocking) && !self.is_ours()
    }

    pub fn is_ours(self) -> bool {
        matches!(
            self,
            Kind::Blocking | Kind::Smol | Kind::AsyncStd | Kind::Tokio
        )
    }

    /// Connects to the monitor at `path`, negotiated and ready.
    pub fn connect(self, path: &Path, tokio: &Arc<tokio::runtime::Runtime>) -> Box<dyn Contender> {
        let mut last = String::new();
        // QEMU's startup race (docs/async-engine.md): one retry is enough; three to be safe.
        for _ in 0..3 {
            match self.try_connect(path, tokio) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{}: connect failed: {last}", self.name());
    }

    fn try_connect(
        self,
        path: &Path,
        tokio: &Arc<tokio::runtime::Runtime>,
    ) -> Result<Box<dyn Contender>, String> {
        const LIMIT: Duration = Duration::from_secs(5);
        let e = |e: &dyn std::fmt::Display| e.to_string();
        Ok(match self {
            Kind::Raw => Box::new(Raw::connect(path, IdStyle::One).map_err(|x| e(&x))?),
            Kind::RawOurBytes => Box::new(Raw::connect(path, IdStyle::Reused).map_err(|x| e(&x))?),
            Kind::Blocking => Box::new(Blocking(
                qmp_blocking::Client::connect_unix(path).map_err(|x| e(&x))?,
            )),
            Kind::Smol => {
                let client = smol::block_on(qmp_smol::Client::connect_unix(path));
                Box::new(Ours {
                    exec: Exec::Smol,
                    client: client.map_err(|x| e(&x))?,
                })
            }
            Kind::AsyncStd => {
                let client = async_std::task::block_on(qmp_async_std::Client::connect_unix(path));
                Box::new(Ours {
                    exec: Exec::AsyncStd,
                    client: client.map_err(|x| e(&x))?,
                })
            }
            Kind::Tokio => {
                let client = tokio.block_on(qmp_tokio::Client::connect_unix(path));
                Box::new(Ours {
                    exec: Exec::Tokio(tokio.clone()),
                    client: client.map_err(|x| e(&x))?,
                })
            }
            Kind::QapiTokio => {
                // As qapi-rs's tokio_qmp_query example: open_uds, negotiate, spawn_tokio.
                let (service, events) = tokio
                    .block_on(async {
                        tokio::time::timeout(LIMIT, async {
                            let stream = qapi::futures::QmpStreamTokio::open_uds(path).await?;
                            let stream = stream.negotiate().await?;
                            Ok::<_, std::io::Error>(stream.spawn_tokio())
                        })
                        .await
                    })
                    .map_err(|x| e(&x))?
                    .map_err(|x| e(&x))?;
                Box::new(QapiTokio {
                    exec: Exec::Tokio(tokio.clone()),
                    service,
                    _events: events,
                })
            }
            Kind::QapiBlocking => {
                // As qapi-rs's qmp_query example, with a BufWriter: unbuffered, serde_json writes
                // each token with its own syscall.
                let stream = UnixStream::connect(path).map_err(|x| e(&x))?;
                stream.set_read_timeout(Some(LIMIT)).map_err(|x| e(&x))?;
                let reader = BufReader::new(stream.try_clone().map_err(|x| e(&x))?);
                let mut qmp = qapi::Qmp::new(qapi::Stream::new(reader, BufWriter::new(stream)));
                qmp.handshake().map_err(|x| e(&x))?;
                Box::new(QapiBlocking(qmp))
            }
            Kind::Qmp01 => {
                // As the qmp crate's README: Client::connect(Endpoint::unix(..)).
                let client = tokio
                    .block_on(async {
                        tokio::time::timeout(LIMIT, qmp::Client::connect(qmp::Endpoint::unix(path)))
                            .await
                    })
                    .map_err(|x| e(&x))?
                    .map_err(|x| e(&x))?;
                Box::new(Qmp01 {
                    exec: Exec::Tokio(tokio.clone()),
                    client,
                })
            }
        })
    }
}

/// `query-version` round trips, in the shapes a contender supports. Each returns the wall time
/// of the work itself (a thread pool's start-up excluded), or `None` when the client cannot do it.
pub trait Contender: Send {
    /// `n` calls, one at a time.
    fn sequential(&mut self, n: usize) -> Duration;
    /// `callers` callers at once, each making `each` calls one at a time.
    fn concurrent(&mut self, _callers: usize, _each: usize) -> Option<Duration> {
        None
    }
    /// `batches` times: `batch` calls issued together, then all their replies awaited.
    fn pipelined(&mut self, _batch: usize, _batches: usize) -> Option<Duration> {
        None
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Raw loops

enum IdStyle {
    One,
    /// As qmp-proto's sessions make them: the smallest id no command in flight holds, so `1`
    /// for one command at a time and `1`..=`n` for `n` written together (docs/PROTOCOL.md rule 5).
    Reused,
}

struct Raw {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
    ids: IdStyle,
    batch: Vec<u8>,
}

impl Raw {
    fn connect(path: &Path, ids: IdStyle) -> std::io::Result<Raw> {
        let writer = UnixStream::connect(path)?;
        writer.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut raw = Raw {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            line: String::new(),
            ids,
            batch: Vec::new(),
        };
        raw.read_line()?;
        raw.writer
            .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"r0\"}\n")?;
        loop {
            raw.read_line()?;
            if raw.line.contains("\"return\"") {
                return Ok(raw);
            }
        }
    }

    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The `k`-th (from 1) of the commands written together.
    fn push_command(&mut self, k: usize) {
        match &mut self.ids {
            IdStyle::One => self
                .batch
                .extend_from_slice(b"{\"execute\":\"query-version\",\"id\":1}\n"),
            IdStyle::Reused => {
                let _ = writeln!(self.batch, "{{\"execute\":\"query-version\",\"id\":{k}}}");
            }
        }
    }

    /// `n` commands written with one `write`, then `n` replies read.
    fn round_trips(&mut self, n: usize) {
        self.batch.clear();
        for k in 1..=n {
            self.push_command(k);
        }
        self.writer.write_all(&self.batch).expect("raw write");
        for _ in 0..n {
            self.read_line().expect("raw read");
        }
    }
}

impl Contender for Raw {
    fn sequential(&mut self, n: usize) -> Duration {
        timed(|| {
            for _ in 0..n {
                self.round_trips(1);
            }
        })
    }

    fn pipelined(&mut self, batch: usize, batches: usize) -> Option<Duration> {
        Some(timed(|| {
            for _ in 0..batches {
                self.round_trips(batch);
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Blocking clients

struct Blocking(qmp_blocking::Client);

impl Contender for Blocking {
    fn sequential(&mut self, n: usize) -> Duration {
        timed(|| {
            for _ in 0..n {
                self.0.execute("query-version", ()).expect("query-version");
            }
        })
    }

    /// One thread per caller, all started before the clock.
    fn concurrent(&mut self, callers: usize, each: usize) -> Option<Duration> {
        let client = &self.0;
        let start = Barrier::new(callers + 1);
        Some(std::thread::scope(|s| {
            let threads: Vec<_> = (0..callers)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        for _ in 0..each {
                            client.execute("query-version", ()).expect("query-version");
                        }
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for thread in threads {
                thread.join().expect("caller thread");
            }
            t.elapsed()
        }))
    }

    /// `execute_async` with a completion callback per command, then `wait`.
    fn pipelined(&mut self, batch: usize, batches: usize) -> Option<Duration> {
        let failures = Arc::new(AtomicUsize::new(0));
        let d = timed(|| {
            for _ in 0..batches {
                for _ in 0..batch {
                    let failures = failures.clone();
                    self.0
                        .execute_async("query-version", (), move |r| {
                            if r.is_err() {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .expect("execute_async");
                }
                self.0.wait().expect("wait");
            }
        });
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "pipelined calls failed"
        );
        Some(d)
    }
}

type QapiStd = qapi::Qmp<qapi::Stream<BufReader<UnixStream>, BufWriter<UnixStream>>>;

struct QapiBlocking(QapiStd);

impl Contender for QapiBlocking {
    fn sequential(&mut self, n: usize) -> Duration {
        timed(|| {
            for _ in 0..n {
                self.0
                    .execute(&qapi::qmp::query_version {})
                    .expect("query-version");
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Async clients: the caller runs in its runtime's `block_on`, as in a `main` or a test.

#[derive(Clone)]
pub enum Exec {
    Smol,
    AsyncStd,
    Tokio(Arc<tokio::runtime::Runtime>),
}

impl Exec {
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Exec::Smol => smol::block_on(f),
            Exec::AsyncStd => async_std::task::block_on(f),
            Exec::Tokio(rt) => rt.block_on(f),
        }
    }
}

/// One call as a future; boxed the same way for every async contender (about 0.1 µs each).
type CallFn<'a> = &'a dyn Fn() -> LocalBoxFuture<'a, ()>;

fn async_sequential(exec: &Exec, n: usize, call: CallFn<'_>) -> Duration {
    exec.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            call().await;
        }
        t.elapsed()
    })
}

/// `callers` futures under one `join_all`, each a caller making `each` calls in turn.
fn async_concurrent(exec: &Exec, callers: usize, each: usize, call: CallFn<'_>) -> Duration {
    exec.block_on(async {
        let t = Instant::now();
        join_all((0..callers).map(|_| async {
            for _ in 0..each {
                call().await;
            }
        }))
        .await;
        t.elapsed()
    })
}

fn async_pipelined(exec: &Exec, batch: usize, batches: usize, call: CallFn<'_>) -> Duration {
    exec.block_on(async {
        let t = Instant::now();
        for _ in 0..batches {
            join_all((0..batch).map(|_| call())).await;
        }
        t.elapsed()
    })
}

/// An async client, measured the same way whatever its runtime.
trait AsyncClient: Send {
    /// Whether pipelined batches are measured (ours: a call submits when made, so a batch goes
    /// out in one write).
    const PIPELINED: bool = false;
    fn exec(&self) -> &Exec;
    /// One `query-version` call, checked.
    fn call(&self) -> LocalBoxFuture<'_, ()>;
}

impl<T: AsyncClient> Contender for T {
    fn sequential(&mut self, n: usize) -> Duration {
        async_sequential(self.exec(), n, &|| self.call())
    }

    fn concurrent(&mut self, callers: usize, each: usize) -> Option<Duration> {
        Some(async_concurrent(self.exec(), callers, each, &|| {
            self.call()
        }))
    }

    fn pipelined(&mut self, batch: usize, batches: usize) -> Option<Duration> {
        T::PIPELINED.then(|| async_pipelined(self.exec(), batch, batches, &|| self.call()))
    }
}

/// qmp-smol, qmp-async-std and qmp-tokio: one client type (qmp-async's), three runtimes.
struct Ours<R> {
    exec: Exec,
    client: qmp_async::Client<R>,
}

impl<R: qmp_async::Runtime> AsyncClient for Ours<R> {
    const PIPELINED: bool = true;

    fn exec(&self) -> &Exec {
        &self.exec
    }

    fn call(&self) -> LocalBoxFuture<'_, ()> {
        let call = self.client.execute("query-version", ());
        Box::pin(async move {
            call.await.expect("query-version");
        })
    }
}

type QapiService = qapi::futures::QapiService<
    qapi::futures::QmpStreamTokio<tokio::io::WriteHalf<tokio::net::UnixStream>>,
>;

struct QapiTokio {
    exec: Exec,
    service: QapiService,
    _events: tokio::task::JoinHandle<()>,
}

impl AsyncClient for QapiTokio {
    fn exec(&self) -> &Exec {
        &self.exec
    }

    fn call(&self) -> LocalBoxFuture<'_, ()> {
        let call = self.service.execute(qapi::qmp::query_version {});
        Box::pin(async move {
            call.await.expect("query-version");
        })
    }
}

struct Qmp01 {
    exec: Exec,
    client: qmp::Client,
}

impl AsyncClient for Qmp01 {
    fn exec(&self) -> &Exec {
        &self.exec
    }

    fn call(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            self.client
                .execute::<(), serde_json::Value>("query-version", None)
                .await
                .expect("query-version");
        })
    }
}
