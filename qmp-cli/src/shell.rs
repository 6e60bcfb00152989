//! `qmp shell`: an interactive shell on a terminal, a line-by-line command reader otherwise.
//!
//! The parts that need no terminal — reading a line into an action, completing a line from the
//! schema — are plain functions with unit tests; the loops around them are thin.

use crate::monitor::{Monitor, Recv};
use crate::output::{self, Style};
use crate::schema::Schema;
use crate::transport::{self, Events, Target};
use crate::{args, Failure};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter, Helper};
use serde_json::{Map, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub(crate) const HELP: &str = "\
Commands:
  COMMAND [key=value ...]     run a QMP command, e.g.  query-status
                                blockdev-add driver=null-co node-name=n0 cache.direct=true
                              values are JSON when they parse (42, true, [1,2], {\"a\":1},
                              \"quoted string\"), else plain strings; dotted keys nest
  COMMAND {JSON}              arguments as one JSON object
  {\"execute\": ..., \"arguments\": {...}}   a raw QMP command
  !HMP COMMAND                one human monitor command, e.g.  !info status
  /hmp                        switch to HMP mode: every line is a human monitor command
  /qmp                        back to QMP mode
  /schema [NAME]              describe a command or event (no NAME: list them)
  help                        this text
  /exit, Ctrl-D               leave (`quit` is QEMU's command: it stops QEMU)
Tab completes command names, argument names (cache. → cache.direct=) and enum values.
Events are printed as they arrive. History is kept across sessions (Up, Down, Ctrl-R).";

/// Which language lines are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// QMP commands (the default).
    Qmp,
    /// Human monitor commands, sent through `human-monitor-command`.
    Hmp,
}

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// An empty line.
    Nothing,
    /// `help`.
    Help,
    /// `/hmp` or `/qmp`.
    SetMode(Mode),
    /// `/exit`.
    Exit,
    /// `/schema [NAME]`.
    Schema(Option<String>),
    /// An HMP command line.
    Hmp(String),
    /// A QMP command.
    Execute {
        /// Its name.
        name: String,
        /// Its arguments, if any.
        args: Option<Map<String, Value>>,
    },
}

/// Reads one line.
pub(crate) fn parse_line(line: &str, mode: Mode) -> Result<Action, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Action::Nothing);
    }
    if let Some(rest) = line.strip_prefix('/') {
        let mut words = rest.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let arg = words.next().map(str::to_owned);
        return match cmd {
            "hmp" => Ok(Action::SetMode(Mode::Hmp)),
            "qmp" => Ok(Action::SetMode(Mode::Qmp)),
            "exit" | "quit" | "q" => Ok(Action::Exit),
            "help" => Ok(Action::Help),
            "schema" => Ok(Action::Schema(arg)),
            _ => Err(format!("unknown shell command '/{cmd}' (try help)")),
        };
    }
    if let Some(hmp) = line.strip_prefix('!') {
        return Ok(Action::Hmp(hmp.trim().to_owned()));
    }
    if mode == Mode::Hmp {
        return Ok(Action::Hmp(line.to_owned()));
    }
    if line == "help" || line == "?" {
        return Ok(Action::Help);
    }
    if line.starts_with('{') {
        return raw_command(line);
    }
    let words = tokenize(line).words()?;
    let (name, rest) = words.split_first().ok_or("empty line")?;
    let args = args::parse(rest).map_err(|e| e.to_string())?;
    Ok(Action::Execute {
        name: name.clone(),
        args,
    })
}

fn raw_command(line: &str) -> Result<Action, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let name = v
        .get("execute")
        .and_then(Value::as_str)
        .ok_or("a JSON line must be a QMP command: {\"execute\": NAME, \"arguments\": {...}}")?;
    let args = match v.get("arguments") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err("\"arguments\" must be an object".into()),
    };
    Ok(Action::Execute {
        name: name.to_owned(),
        args,
    })
}

/// The words of a line: split at whitespace, except inside double-quoted JSON strings and inside
/// `{...}` / `[...]`, so that `cache={"direct": true}` is one word. Words are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Words {
    /// Each word with its byte offset in the line.
    pub(crate) words: Vec<(usize, String)>,
    /// Whether the line ends inside a word (no whitespace after the last one).
    pub(crate) open: bool,
    /// An unclosed string or bracket, if any.
    pub(crate) unclosed: Option<char>,
}

impl Words {
    fn words(self) -> Result<Vec<String>, String> {
        match self.unclosed {
            Some('"') => Err("unclosed string (\")".into()),
            Some(c) => Err(format!("unclosed '{c}'")),
            None => Ok(self.words.into_iter().map(|(_, w)| w).collect()),
        }
    }
}

pub(crate) fn tokenize(line: &str) -> Words {
    let mut words = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut stack: Vec<char> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if !in_string && stack.is_empty() && c.is_whitespace() {
            if let Some(w) = current.take() {
                words.push(w);
            }
            continue;
        }
        current.get_or_insert_with(|| (i, String::new())).1.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' if stack.last() == Some(&c) => {
                stack.pop();
            }
            _ => {}
        }
    }
    let open = current.is_some();
    if let Some(w) = current {
        words.push(w);
    }
    let unclosed = if in_string {
        Some('"')
    } else {
        stack.last().map(|c| if *c == '}' { '{' } else { '[' })
    };
    Words {
        words,
        open,
        unclosed,
    }
}

const SLASH_COMMANDS: [&str; 5] = ["/exit", "/help", "/hmp", "/qmp", "/schema"];

/// Completions for `line` with the cursor at `pos`: the offset where the replaced text starts,
/// and the candidates (display text, replacement).
pub(crate) fn complete(
    schema: Option<&Schema>,
    mode: Mode,
    line: &str,
    pos: usize,
) -> (usize, Vec<(String, String)>) {
    let before = &line[..pos];
    let none = (pos, Vec::new());
    let parsed = tokenize(before);
    let (start, word) = match (parsed.open, parsed.words.last()) {
        (true, Some((s, w))) => (*s, w.as_str()),
        _ => (pos, ""),
    };
    let index = if parsed.open {
        parsed.words.len() - 1
    } else {
        parsed.words.len()
    };
    if index == 0 && word.starts_with('/') {
        let c = SLASH_COMMANDS
            .iter()
            .filter(|s| s.starts_with(word))
            .map(|s| (s.to_string(), format!("{s} ")))
            .collect();
        return (start, c);
    }
    if mode == Mode::Hmp || before.trim_start().starts_with('!') {
        return none;
    }
    let Some(schema) = schema else { return none };
    if index == 0 {
        let mut names: Vec<&str> = schema.commands();
        names.push("help");
        let c = names
            .into_iter()
            .filter(|n| n.starts_with(word))
            .map(|n| (n.to_owned(), format!("{n} ")))
            .collect();
        return (start, c);
    }
    let Some(arg) = schema.arg_type(&parsed.words[0].1) else {
        return none;
    };
    // What is already typed, so that a union's tag (driver=...) selects its members.
    let typed: Vec<&str> = parsed.words[1..index]
        .iter()
        .map(|(_, w)| w.as_str())
        .filter(|w| args::parse(&[*w]).is_ok())
        .collect();
    let given = args::parse(&typed).ok().flatten();
    if let Some((key, value)) = word.split_once('=') {
        let path: Vec<&str> = key.split('.').collect();
        let Some(ty) = schema.type_at(arg, &path, given.as_ref()) else {
            return none;
        };
        let c = schema
            .values(&ty)
            .into_iter()
            .filter(|v| v.starts_with(value))
            .map(|v| (v.clone(), format!("{v} ")))
            .collect();
        return (start + key.len() + 1, c);
    }
    let (parents, partial) = match word.rsplit_once('.') {
        Some((p, l)) => (p.split('.').collect::<Vec<_>>(), l),
        None => (Vec::new(), word),
    };
    let Some(ty) = schema.type_at(arg, &parents, given.as_ref()) else {
        return none;
    };
    let nested = parents
        .iter()
        .try_fold(given.as_ref(), |g, p| {
            g.map(|g| g.get(*p).and_then(Value::as_object))
        })
        .flatten();
    let prefix: String = parents.iter().map(|p| format!("{p}.")).collect();
    let c = schema
        .members(&ty, nested)
        .into_iter()
        .filter(|m| m.name.starts_with(partial))
        .filter(|m| !nested.is_some_and(|g| g.contains_key(&m.name)))
        .map(|m| {
            // Objects are completed towards their members; anything else (alternates that take
            // a node name or an object, too) towards a value.
            let suffix = if schema.is_object(&m.ty) { "." } else { "=" };
            (
                format!("{}{suffix}", m.name),
                format!("{prefix}{}{suffix}", m.name),
            )
        })
        .collect();
    (start, c)
}

/// Where history is kept: `$QMP_HISTORY`, else `$XDG_STATE_HOME/qmp/history`, else
/// `~/.local/state/qmp/history`.
pub(crate) fn history_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("QMP_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("qmp/history"))
}

struct ShellHelper {
    schema: Option<Arc<Schema>>,
    mode: Mode,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, c) = complete(self.schema.as_deref(), self.mode, line, pos);
        Ok((
            start,
            c.into_iter()
                .map(|(display, replacement)| Pair {
                    display,
                    replacement,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// What happened to one line.
enum Outcome {
    Done,
    /// A QMP error (exit status 1 in script mode).
    Failed,
    /// A line that could not be read (exit status 2 in script mode).
    Unreadable,
    Exit,
}

struct Shell<'m> {
    conn: &'m Monitor,
    /// Set when the user leaves or quits QEMU, so that the connection closing then is expected.
    leaving: Arc<AtomicBool>,
    schema: Option<Arc<Schema>>,
    style: Style,
    mode: Mode,
}

impl Shell<'_> {
    /// Runs one line; a lost connection is the error.
    fn run_line(&mut self, line: &str) -> Result<Outcome, Failure> {
        let action = match parse_line(line, self.mode) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Outcome::Unreadable);
            }
        };
        let result = match action {
            Action::Nothing => return Ok(Outcome::Done),
            Action::Exit => return Ok(Outcome::Exit),
            Action::Help => {
                outln!("{HELP}");
                return Ok(Outcome::Done);
            }
            Action::SetMode(m) => {
                self.mode = m;
                match m {
                    Mode::Hmp => outln!(
                        "HMP mode: lines are human monitor commands (try `help` or `info status`); /qmp to go back"
                    ),
                    Mode::Qmp => outln!("QMP mode"),
                }
                return Ok(Outcome::Done);
            }
            Action::Schema(name) => {
                let Some(schema) = &self.schema else {
                    eprintln!("error: the schema could not be read from QEMU");
                    return Ok(Outcome::Failed);
                };
                match name {
                    None => out!("{}", schema.summary()),
                    Some(n) => match schema.render(&n) {
                        Some(t) => out!("{t}"),
                        None => {
                            eprintln!("error: no command or event named '{n}'");
                            return Ok(Outcome::Failed);
                        }
                    },
                }
                return Ok(Outcome::Done);
            }
            Action::Hmp(cmd) => self.conn.hmp(&cmd).map(|text| {
                out!("{text}");
            }),
            Action::Execute { name, args } if name == "quit" && args.is_none() => {
                self.leaving.store(true, Ordering::SeqCst);
                // Returns once QEMU has closed the connection (rule 13, in qmp-proto).
                self.conn.quit()?;
                outln!("{}", self.style.json(&serde_json::json!({})));
                return Ok(Outcome::Exit);
            }
            Action::Execute { name, args } => self.conn.execute(&name, args).map(|v| {
                outln!("{}", self.style.json(&v));
            }),
        };
        let _ = std::io::stdout().flush();
        match result {
            Ok(()) => Ok(Outcome::Done),
            // Exit status 1: QEMU answered with an error.
            Err(f) if f.code == 1 => {
                eprintln!("error: {f}");
                Ok(Outcome::Failed)
            }
            Err(f) if f.code == 2 => {
                eprintln!("error: {f}");
                Ok(Outcome::Unreadable)
            }
            Err(f) => Err(f),
        }
    }
}

/// Connects to `target` and runs the shell: interactive on a terminal, line by line otherwise.
pub(crate) fn run(
    target: &Target,
    timeout: Duration,
    style: Style,
    agent: bool,
) -> Result<u8, Failure> {
    let terminal = std::io::stdin().is_terminal();
    // A script prints events from a handler as they arrive; nothing is left to queue.
    let events = if terminal {
        Events::Queued
    } else {
        Events::Handled
    };
    let conn = if agent {
        transport::connect_agent(target, timeout)?
    } else {
        transport::connect(target, timeout, events)?
    };
    let schema = match conn.schema() {
        Ok(s) => Some(Arc::new(s)),
        Err(f) if f.code == 1 => {
            let source = if agent {
                "guest-info"
            } else {
                "query-qmp-schema"
            };
            eprintln!("qmp: no completion: {source} failed: {f}");
            None
        }
        Err(f) => return Err(f),
    };
    let shell = Shell {
        conn: &conn,
        leaving: Arc::new(AtomicBool::new(false)),
        schema,
        style,
        mode: Mode::Qmp,
    };
    if terminal {
        interactive(shell)
    } else {
        script(shell)
    }
}

fn script(mut shell: Shell<'_>) -> Result<u8, Failure> {
    // On qmp-blocking's handler thread; closing the client runs the handler for every event that
    // arrived before.
    shell.conn.on_any_event(|e| {
        outln!("{}", output::event_text(Style::Compact, e));
    });
    let mut code = 0;
    let stdin = std::io::stdin();
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        // A line that cannot be read is a usage error (exit status 2), like a line that does not
        // parse: a bad line is skipped, a stdin that fails ends the script.
        let mut line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: reading stdin: {e}");
                code = code.max(2);
                break;
            }
        };
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let Ok(line) = String::from_utf8(line) else {
            eprintln!("error: line {} is not UTF-8; skipped", n + 1);
            code = code.max(2);
            continue;
        };
        match shell.run_line(&line)? {
            Outcome::Done => {}
            Outcome::Failed => code = code.max(1),
            Outcome::Unreadable => code = code.max(2),
            Outcome::Exit => break,
        }
    }
    shell.conn.report();
    Ok(code)
}

fn interactive(mut shell: Shell<'_>) -> Result<u8, Failure> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(5000))
        .map(|b| b.completion_type(CompletionType::List).build())
        .map_err(|e| Failure::connection(format!("line editor: {e}")))?;
    let mut rl: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| Failure::connection(format!("line editor: {e}")))?;
    rl.set_helper(Some(ShellHelper {
        schema: shell.schema.clone(),
        mode: Mode::Qmp,
    }));
    let history = history_path();
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if h.exists() {
            if let Err(e) = rl.load_history(h) {
                eprintln!("qmp: cannot read history {}: {e}", h.display());
            }
        }
    }
    match shell.conn.greeting() {
        Some(g) => outln!(
            "Connected to QEMU {}{}.",
            g.version,
            if g.package.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.package)
            }
        ),
        None => outln!("Connected to the guest agent (commands: Tab, or `exec guest-info`)."),
    }
    outln!("Type `help` for help, Tab to complete, Ctrl-D to leave.");
    let mut printer = rl
        .create_external_printer()
        .map_err(|e| Failure::connection(format!("line editor: {e}")))?;
    let conn = shell.conn;
    let leaving = Arc::clone(&shell.leaving);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        // Prints events while the prompt waits. It polls, so that it ends soon after the shell
        // does (the scope waits for it).
        scope.spawn(|| loop {
            match conn.next_event(Some(Duration::from_millis(100))) {
                Recv::Event(e) => {
                    let _ = printer.print(format!("{}\n", event_line(&e)));
                }
                Recv::TimedOut if stop.load(Ordering::SeqCst) => return,
                Recv::TimedOut => {}
                Recv::Closed => {
                    if !leaving.load(Ordering::SeqCst) {
                        let _ = printer.print(
                            "qmp: QEMU closed the connection; press Enter or Ctrl-D to leave\n"
                                .into(),
                        );
                    }
                    return;
                }
            }
        });
        let result = prompt(&mut shell, &mut rl, history.as_deref());
        shell.leaving.store(true, Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        result
    })
}

/// Reads and runs lines until the user leaves.
fn prompt(
    shell: &mut Shell<'_>,
    rl: &mut Editor<ShellHelper, DefaultHistory>,
    history: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    loop {
        let prompt = match shell.mode {
            Mode::Qmp if shell.conn.is_agent() => "qga> ",
            Mode::Qmp => "qmp> ",
            Mode::Hmp => "(hmp) ",
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failure::connection(format!("reading the terminal: {e}"))),
        };
        if !shell.conn.is_connected() {
            return Err(Failure::connection("QEMU closed the connection"));
        }
        if !line.trim().is_empty() {
            let _ = rl.add_history_entry(line.trim());
            if let Some(h) = history {
                // Appended after every line, so that history survives a crash or a kill.
                if let Err(e) = rl.append_history(h) {
                    eprintln!("qmp: cannot write history {}: {e}", h.display());
                }
            }
        }
        match shell.run_line(&line) {
            Ok(Outcome::Exit) => break,
            Ok(_) => {}
            Err(f) => return Err(f),
        }
        if let Some(h) = rl.helper_mut() {
            h.mode = shell.mode;
        }
    }
    Ok(0)
}

/// An event in the interactive shell: `event 12:06:03.648354 STOP {data}` (UTC time of day).
fn event_line(e: &qmp_blocking::Event) -> String {
    let mut line = String::from("event ");
    if let Some(t) = &e.timestamp {
        let day = t.seconds.rem_euclid(86_400);
        line.push_str(&format!(
            "{:02}:{:02}:{:02}.{:06} ",
            day / 3600,
            day / 60 % 60,
            day % 60,
            t.microseconds
        ));
    }
    line.push_str(&e.name);
    if !e.data.is_empty() {
        line.push(' ');
        line.push_str(&Style::Compact.json(&Value::Object(e.data.clone())));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::qsd_schema;
    use serde_json::json;

    fn exec(line: &str) -> (String, Value) {
        match parse_line(line, Mode::Qmp).unwrap() {
            Action::Execute { name, args } => (name, args.map_or(Value::Null, Value::Object)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_become_commands() {
        assert_eq!(exec("query-status"), ("query-status".into(), Value::Null));
        assert_eq!(
            exec("  blockdev-add driver=null-co node-name=n0 cache.direct=true  "),
            (
                "blockdev-add".into(),
                json!({"driver": "null-co", "node-name": "n0", "cache": {"direct": true}})
            )
        );
        assert_eq!(
            exec(r#"x a={"b": [1, 2], "c": "d e"} f="g h""#),
            (
                "x".into(),
                json!({"a": {"b": [1, 2], "c": "d e"}, "f": "g h"})
            )
        );
        assert_eq!(
            exec(r#"blockdev-del {"node-name": "n0"}"#),
            ("blockdev-del".into(), json!({"node-name": "n0"}))
        );
        assert_eq!(
            exec(r#"{"execute": "stop", "arguments": {"a": 1}}"#),
            ("stop".into(), json!({"a": 1}))
        );
    }

    #[test]
    fn shell_commands_and_modes() {
        assert_eq!(parse_line("", Mode::Qmp), Ok(Action::Nothing));
        assert_eq!(parse_line("# comment", Mode::Qmp), Ok(Action::Nothing));
        assert_eq!(parse_line("help", Mode::Qmp), Ok(Action::Help));
        assert_eq!(
            parse_line("/hmp", Mode::Qmp),
            Ok(Action::SetMode(Mode::Hmp))
        );
        assert_eq!(
            parse_line("/qmp", Mode::Hmp),
            Ok(Action::SetMode(Mode::Qmp))
        );
        assert_eq!(parse_line("/exit", Mode::Hmp), Ok(Action::Exit));
        assert_eq!(
            parse_line("/schema query-status", Mode::Qmp),
            Ok(Action::Schema(Some("query-status".into())))
        );
        assert_eq!(
            parse_line("!info status", Mode::Qmp),
            Ok(Action::Hmp("info status".into()))
        );
        assert_eq!(
            parse_line("info status", Mode::Hmp),
            Ok(Action::Hmp("info status".into()))
        );
        // `help` in HMP mode is HMP's help.
        assert_eq!(
            parse_line("help", Mode::Hmp),
            Ok(Action::Hmp("help".into()))
        );
        assert!(parse_line("/nope", Mode::Qmp).is_err());
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_line("x a=1 a.b=2", Mode::Qmp).is_err());
        assert!(parse_line("x a={\"b\": 1", Mode::Qmp).is_err());
        assert!(parse_line("x a=\"b", Mode::Qmp).is_err());
        assert!(parse_line("{\"arguments\": {}}", Mode::Qmp).is_err());
        assert!(parse_line("{nope", Mode::Qmp).is_err());
        assert!(parse_line("x novalue", Mode::Qmp).is_err());
    }

    #[test]
    fn tokenize_keeps_json_together() {
        let w = tokenize(r#"a b={"c": [1, 2]} d="e \" f" "#);
        let words: Vec<&str> = w.words.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(words, ["a", r#"b={"c": [1, 2]}"#, r#"d="e \" f""#]);
        assert!(!w.open);
        assert_eq!(w.words[1].0, 2);
        assert!(tokenize("a b").open);
        assert_eq!(tokenize("a {").unclosed, Some('{'));
    }

    fn candidates(line: &str) -> (usize, Vec<String>) {
        let s = qsd_schema();
        let (start, c) = complete(Some(&s), Mode::Qmp, line, line.len());
        (start, c.into_iter().map(|(_, r)| r).collect())
    }

    #[test]
    fn completes_command_names() {
        let (start, c) = candidates("query-v");
        assert_eq!(start, 0);
        assert_eq!(c, ["query-version "]);
        let (_, c) = candidates("blockdev-");
        assert!(c.contains(&"blockdev-add ".to_owned()) && c.contains(&"blockdev-del ".to_owned()));
        let (_, c) = candidates("/h");
        assert_eq!(c, ["/help ", "/hmp "]);
    }

    #[test]
    fn completes_the_agents_enabled_commands() {
        // guest-info's shape, as qemu-ga 10.0.2 sends it.
        let info = serde_json::json!({"version": "10.0.2", "supported_commands": [
            {"name": "guest-exec", "enabled": true, "success-response": true},
            {"name": "guest-exec-status", "enabled": true, "success-response": true},
            {"name": "guest-shutdown", "enabled": false, "success-response": false},
            {"name": "guest-ping", "enabled": true, "success-response": true},
        ]});
        let schema = Schema::from_value(&crate::schema::agent_commands(&info)).unwrap();
        let (start, c) = complete(Some(&schema), Mode::Qmp, "guest-ex", 8);
        assert_eq!(start, 0);
        let c: Vec<String> = c.into_iter().map(|(_, r)| r).collect();
        assert_eq!(c, ["guest-exec ", "guest-exec-status "]);
        let (_, c) = complete(Some(&schema), Mode::Qmp, "guest-sh", 8);
        assert!(c.is_empty(), "a disabled command is not offered: {c:?}");
    }

    #[test]
    fn completes_argument_names_from_the_schema() {
        let (start, c) = candidates("blockdev-backup dev");
        assert_eq!(start, 16);
        assert_eq!(c, ["device="]);
        let (_, c) = candidates("blockdev-add driver=null-co node-name=n0 ");
        assert!(c.contains(&"size=".to_owned()), "{c:?}");
        assert!(c.contains(&"cache.".to_owned()), "{c:?}");
        assert!(
            !c.contains(&"node-name=".to_owned()),
            "already given: {c:?}"
        );
        assert!(
            !c.contains(&"filename=".to_owned()),
            "not a null-co member: {c:?}"
        );
    }

    #[test]
    fn completes_nested_names_and_values() {
        let (start, c) = candidates("blockdev-add cache.");
        assert_eq!(start, 13);
        assert_eq!(c, ["cache.direct=", "cache.no-flush="]);
        let (start, c) = candidates("blockdev-add driver=null-");
        assert_eq!(start, 20);
        assert_eq!(c, ["null-aio ", "null-co "]);
        let (_, c) = candidates("blockdev-add cache.direct=");
        assert_eq!(c, ["true ", "false "]);
    }

    #[test]
    fn no_completion_where_nothing_fits() {
        assert!(candidates("no-such-command a").1.is_empty());
        assert!(candidates("!info").1.is_empty());
        let s = qsd_schema();
        assert!(complete(Some(&s), Mode::Hmp, "info", 4).1.is_empty());
        assert!(complete(None, Mode::Qmp, "query", 5).1.is_empty());
    }

    #[test]
    fn events_read_well_in_the_shell() {
        let mut data = Map::new();
        data.insert("guest".into(), json!(false));
        let e = qmp_blocking::Event {
            name: "RESET".into(),
            data,
            timestamp: Some(qmp_blocking::qmp_proto::Timestamp {
                seconds: 1_795_675_563,
                microseconds: 648_354,
            }),
        };
        assert_eq!(
            event_line(&e),
            r#"event 06:46:03.648354 RESET {"guest":false}"#
        );
    }

    #[test]
    fn history_path_follows_the_environment() {
        // One test touches these variables, so tests running in parallel do not race on them.
        std::env::set_var("QMP_HISTORY", "/tmp/h1");
        assert_eq!(history_path(), Some(PathBuf::from("/tmp/h1")));
        std::env::remove_var("QMP_HISTORY");
        std::env::set_var("XDG_STATE_HOME", "/tmp/state");
        assert_eq!(
            history_path(),
            Some(PathBuf::from("/tmp/state/qmp/history"))
        );
        std::env::remove_var("XDG_STATE_HOME");
        std::env::set_var("HOME", "/home/u");
        assert_eq!(
            history_path(),
            Some(PathBuf::from("/home/u/.local/state/qmp/history"))
        );
    }
}
