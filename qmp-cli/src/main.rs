//! `qmp`: a command-line client for the QEMU Machine Protocol.
//!
//! Subcommands: `exec` (one command), `events` (watch events), `hmp` (human monitor commands),
//! `schema` (read the live schema), `shell` (interactive), `demo` (a tour against a
//! qemu-storage-daemon it starts). `qmp --help` documents the options and exit codes.

/// `println!` for stdout that stops the program quietly when the reader has gone
/// (`qmp schema | head`), unwinding so that a spawned QEMU is still stopped.
macro_rules! outln {
    () => { $crate::emit(format_args!(""), true) };
    ($($t:tt)*) => { $crate::emit(format_args!($($t)*), true) };
}

/// `print!` with [`outln!`]'s handling of a closed stdout.
macro_rules! out {
    ($($t:tt)*) => { $crate::emit(format_args!($($t)*), false) };
}

mod args;
mod cli;
mod demo;
mod events;
mod monitor;
mod output;
mod schema;
mod shell;
mod split;
mod transport;

use clap::Parser;
use cli::{Cli, Command};
use monitor::Monitor;
use output::Style;
use qmp_blocking::QmpError;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Why `qmp` stops with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The exit status: 1 QMP error, 2 usage, 3 connection or protocol.
    pub(crate) code: u8,
    /// What happened and what to check.
    pub(crate) message: String,
}

impl Failure {
    /// QEMU answered with an error (exit status 1).
    pub(crate) fn qmp(e: &QmpError) -> Failure {
        Failure {
            code: 1,
            message: format!("{}: {}", e.class, e.desc),
        }
    }

    /// A name or value the user asked for does not exist (exit status 1).
    pub(crate) fn not_found(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// The command line cannot be used (exit status 2).
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The connection failed, closed, timed out or broke the protocol (exit status 3).
    pub(crate) fn connection(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The unwind payload of a write to a closed stdout.
struct StdoutClosed;

/// Writes to stdout and flushes (output is read as it comes: events, shell results).
pub(crate) fn emit(args: fmt::Arguments<'_>, newline: bool) {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            drop(o);
            std::panic::resume_unwind(Box::new(StdoutClosed));
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(f)) => {
            eprintln!("qmp: {f}");
            ExitCode::from(f.code)
        }
        Err(payload) if payload.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Failure::usage(format!("{what} must be a non-negative number of seconds")))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let style = Style::choose(cli.compact, cli.pretty);
    let timeout = secs(cli.connect.timeout, "--timeout")?;
    match cli.command {
        Command::Demo if cli.connect.qga => {
            return Err(Failure::usage("--qga: the demo talks to a QMP monitor"))
        }
        Command::Demo => return demo::run(timeout),
        Command::Exec { command, args } => {
            // Read the arguments before connecting: a usage error should not need QEMU.
            let args = args::parse(&args).map_err(|e| Failure::usage(e.to_string()))?;
            let conn = connect(&cli.connect, timeout)?;
            let value = conn.execute(&command, args)?;
            outln!("{}", style.json(&value));
        }
        Command::Events {
            names,
            count,
            timeout: limit,
        } => {
            if cli.connect.qga {
                return Err(Failure::usage(
                    "--qga: the guest agent sends no events to watch",
                ));
            }
            let limit = limit.map(|s| secs(s, "events --timeout")).transpose()?;
            let target = transport::Target::from_args(&cli.connect)?;
            let conn = transport::connect(&target, timeout, transport::Events::Handled)?;
            // JSON lines: one event per line unless --pretty asks otherwise.
            let style = if cli.pretty {
                Style::Pretty
            } else {
                Style::Compact
            };
            events::run(&conn, &names, count, limit, style)?;
        }
        Command::Hmp { command_line } => {
            if cli.connect.qga {
                return Err(Failure::usage(
                    "--qga: the guest agent has no human monitor",
                ));
            }
            let conn = connect(&cli.connect, timeout)?;
            let text = conn.hmp(&command_line.join(" "))?;
            out!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                outln!();
            }
        }
        Command::Schema { name, offline } => {
            let schema = if offline && cli.connect.qga {
                return Err(Failure::usage(
                    "--qga: the guest agent's commands are listed by the agent itself (drop --offline)",
                ));
            } else if offline {
                schema::Schema::bundled()
            } else {
                connect(&cli.connect, timeout)?.schema()?
            };
            match name {
                None => out!("{}", schema.summary()),
                Some(n) => match schema.render(&n) {
                    Some(text) => out!("{text}"),
                    None => {
                        return Err(Failure::not_found(format!(
                        "the schema has no command or event named '{n}' (`qmp schema` lists them)"
                    )))
                    }
                },
            }
        }
        Command::Shell => {
            let target = transport::Target::from_args(&cli.connect)?;
            return shell::run(&target, timeout, style, cli.connect.qga);
        }
    }
    Ok(0)
}

/// Connects where the options say (to a guest agent with `--qga`); events are queued (the
/// latest 1024 unread are kept).
fn connect(args: &cli::ConnectArgs, timeout: Duration) -> Result<Monitor, Failure> {
    let target = transport::Target::from_args(args)?;
    if args.qga {
        return transport::connect_agent(&target, timeout);
    }
    transport::connect(&target, timeout, transport::Events::Queued)
}
