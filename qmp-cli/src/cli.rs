//! The command line: options, subcommands, help text.

use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Connecting:
  Give one of --socket, --tcp, --pipe, --listen or --spawn; without any, the Unix socket in
  $QMP_SOCKET is used. QEMU must offer a QMP monitor there, for example:
    qemu-system-x86_64 ... -qmp unix:/tmp/qmp.sock,server=on,wait=off
    qemu-storage-daemon --chardev socket,path=/tmp/qmp.sock,server=on,wait=off,id=m0 --monitor chardev=m0
  A QMP monitor serves one client at a time: if another client is connected, the greeting never
  comes and qmp gives up after --timeout.

Exit status:
  0  success
  1  QEMU answered with an error (its class and description are printed on stderr),
     or `schema NAME` found no such command or event
  2  usage error (bad option, bad key=value argument)
  3  connection or protocol error, or a timeout
  4  --qga: nothing answered the guest agent's sync (no qemu-ga running behind the socket)

Examples:
  qmp demo
  qmp -s /tmp/qmp.sock exec query-version
  qmp -s /tmp/qmp.sock exec blockdev-add driver=null-co node-name=n0 cache.direct=true
  qmp -s /tmp/qmp.sock events --name BLOCK_JOB_COMPLETED --count 1 --timeout 60
  qmp -s /tmp/qmp.sock hmp 'info status'
  qmp -s /tmp/qmp.sock schema blockdev-add
  qmp --spawn 'qemu-system-x86_64 -M none -display none' shell
  qmp --qga -s /tmp/qga.sock exec guest-info
  qmp --qga -s /tmp/qga.sock shell";

/// A client for the QEMU Machine Protocol (QMP): run commands, watch events, read the schema,
/// or work in an interactive shell.
#[derive(Debug, Parser)]
#[command(name = "qmp", version, after_help = AFTER_HELP, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// Print JSON on one line (the default when stdout is not a terminal).
    #[arg(long, global = true, conflicts_with = "pretty")]
    pub(crate) compact: bool,

    /// Print JSON indented (the default on a terminal).
    #[arg(long, global = true)]
    pub(crate) pretty: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where QEMU's monitor is.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["socket", "tcp", "pipe", "listen", "spawn"])))]
pub(crate) struct ConnectArgs {
    /// Connect to the Unix socket at PATH [default: $QMP_SOCKET].
    #[arg(short, long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,

    /// Connect over TCP to HOST:PORT (QEMU: -qmp tcp:HOST:PORT,server=on,wait=off).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) tcp: Option<String>,

    /// Talk through the pipes BASE.in (to QEMU) and BASE.out (from QEMU) (QEMU: -qmp pipe:BASE).
    #[arg(long, value_name = "BASE")]
    pub(crate) pipe: Option<PathBuf>,

    /// Listen on the Unix socket PATH and wait for QEMU to connect (QEMU: -qmp unix:PATH, without
    /// server=on).
    #[arg(long, value_name = "PATH")]
    pub(crate) listen: Option<PathBuf>,

    /// Start QEMU with this command line and talk over its stdin/stdout. A QMP monitor on stdio is
    /// added unless the command line already mentions "stdio". QEMU is killed when qmp exits
    /// (unless it quit first).
    #[arg(long, value_name = "COMMAND LINE")]
    pub(crate) spawn: Option<String>,

    /// Talk to a QEMU guest agent (qemu-ga) instead of a QMP monitor, with --socket or --tcp: the
    /// host end of its virtio-serial port (QEMU: -chardev socket,path=PATH,server=on,wait=off,id=qga0
    /// -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0).
    /// With exec, shell and schema (which lists the agent's enabled commands).
    #[arg(long, global = true)]
    pub(crate) qga: bool,

    /// Seconds to wait for the connection and the greeting, and for each reply.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub(crate) timeout: f64,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one QMP command and print its return value as JSON.
    #[command(after_help = "\
Arguments are key=value: the value is read as JSON when it parses, else as a string; dotted keys
nest. Or give one JSON object.
  qmp exec blockdev-add driver=null-co node-name=n0 size=1048576 cache.direct=true
    sends {\"driver\":\"null-co\",\"node-name\":\"n0\",\"size\":1048576,\"cache\":{\"direct\":true}}
  qmp exec blockdev-add '{\"driver\": \"null-co\", \"node-name\": \"n0\"}'
  qmp exec human-monitor-command command-line='\"info status\"'   (JSON quotes: a string)
Exit status: 0 success, 1 QMP error, 2 usage error, 3 connection or protocol error.")]
    Exec {
        /// The command, e.g. query-version.
        command: String,
        /// key=value arguments, or one JSON object.
        #[arg(value_name = "ARG", allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Print events as JSON lines as they arrive.
    #[command(after_help = "\
Without --count and --timeout, runs until interrupted or until QEMU closes the connection.
With --timeout alone, prints what arrives for SECS seconds and exits 0. With --count and
--timeout, exits 3 if fewer than N events arrived in time.
Every matching event is printed, in order, however slowly the output is read; if more than
65,536 wait to be printed, qmp stops (exit 3) rather than print past a gap.")]
    Events {
        /// Only events with this name (repeatable; case-insensitive).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Exit after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after SECS seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },

    /// Run a human monitor (HMP) command through human-monitor-command and print its text.
    Hmp {
        /// The HMP command line, e.g. 'info status'. Several words are joined with spaces.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        command_line: Vec<String>,
    },

    /// Describe a command's or event's arguments and return type from the live schema;
    /// without a name, list every command and event.
    Schema {
        /// A command or event name.
        name: Option<String>,
        /// Use the schema built into qmp (QEMU 10.0.2's, every target and build option) instead of
        /// asking a QEMU: works with no QEMU at all. A running QEMU's own schema is the truth for
        /// that QEMU.
        #[arg(long)]
        offline: bool,
    },

    /// Interactive shell: line editing, history, tab completion, events as they arrive.
    #[command(after_help = "\
Type `help` in the shell for its syntax. History is kept in $QMP_HISTORY, else
$XDG_STATE_HOME/qmp/history, else ~/.local/state/qmp/history.
When stdin is not a terminal, commands are read one per line (for scripts); the exit status is
then 1 if any command failed, 2 if a line could not be read, 3 if the connection was lost.")]
    Shell,

    /// Start qemu-storage-daemon and take a short tour of QMP (needs no other setup).
    Demo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for line in [
            "0  success",
            "1  QEMU answered with an error",
            "2  usage error",
            "3  connection or protocol error",
        ] {
            assert!(help.contains(line), "{help}");
        }
    }

    #[test]
    fn exec_takes_arguments_after_the_command() {
        let cli = Cli::try_parse_from(["qmp", "-s", "/x", "exec", "blockdev-add", "a.b=1", "c=-2"])
            .unwrap();
        match cli.command {
            Command::Exec { command, args } => {
                assert_eq!(command, "blockdev-add");
                assert_eq!(args, ["a.b=1", "c=-2"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_one_target_is_allowed() {
        let err = Cli::try_parse_from(["qmp", "-s", "/x", "--tcp", "h:1", "shell"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn events_has_its_own_timeout() {
        let cli = Cli::try_parse_from([
            "qmp",
            "--timeout",
            "5",
            "events",
            "--name",
            "STOP",
            "--name",
            "RESUME",
            "--count",
            "2",
            "--timeout",
            "1.5",
        ])
        .unwrap();
        assert!((cli.connect.timeout - 5.0).abs() < f64::EPSILON);
        match cli.command {
            Command::Events {
                names,
                count,
                timeout,
            } => {
                assert_eq!(names, ["STOP", "RESUME"]);
                assert_eq!(count, Some(2));
                assert_eq!(timeout, Some(1.5));
            }
            other => panic!("{other:?}"),
        }
    }
}
