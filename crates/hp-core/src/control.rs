//! The control grammar: one command per write to /dev/hp_patcher.
//!
//! docs/control.md is the user's description; this is the rule. The module
//! parses with `parse` and refuses anything else with -EINVAL before it
//! changes anything; hpctl builds its lines with `Command`'s `Display`, so
//! both sides share one grammar.

use core::fmt;

use crate::fault::{Rule, RuleError};

/// Longest command accepted, newline included. Module names are at most 55
/// bytes and the catalogue's names fit many times over.
pub const MAX_COMMAND: usize = 1024;

/// Longest module name the kernel allows (MODULE_NAME_LEN - 1).
pub const MAX_MODULE_NAME: usize = 55;

/// Most printk lines per window a target may ask for.
pub const MAX_BURST: u32 = 1_000_000;

/// The leak table's size when `attach ... leaks` gives none, and the most
/// it may be (32 bytes an object: 512 kB and 128 MB).
pub const DEFAULT_LEAK_SLOTS: u32 = 16_384;
pub const MAX_LEAK_SLOTS: u32 = 4_194_304;

/// The name hp_patcher's own module has: never a target.
pub const OURSELVES: &str = "hp_patcher";

/// Where a target's calls go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sink {
    /// The `hp_patcher:hp_call` tracepoint (the default for the device).
    #[default]
    Trace,
    /// A rate-limited kernel log line per call (the seed's, and insmod's).
    Printk,
    /// Counters only.
    None,
}

impl Sink {
    pub fn name(self) -> &'static str {
        match self {
            Sink::Trace => "trace",
            Sink::Printk => "printk",
            Sink::None => "none",
        }
    }

    fn from_name(name: &str) -> Option<Sink> {
        [Sink::Trace, Sink::Printk, Sink::None].into_iter().find(|s| s.name() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `functions` is the catalogue list as given (empty: all), checked by
    /// `catalogue::select` against what the kernel exports.
    /// `burst`: with sink printk, lines per 5 s window (0: unlimited).
    /// `leaks`: the leak table's size in objects, when the target is
    /// checked for leaks (`leaks` alone: [`DEFAULT_LEAK_SLOTS`]).
    /// `kernel_frees` (needs `leaks`): the kernel's own frees of the
    /// target's objects are watched too, callee-side.
    Attach {
        module: &'a str,
        functions: &'a str,
        sink: Sink,
        follow: bool,
        burst: Option<u32>,
        leaks: Option<u32>,
        kernel_frees: bool,
    },
    Detach { module: &'a str },
    DetachAll,
    Plan { module: &'a str, functions: &'a str },
    Targets,
    Sites { module: Option<&'a str> },
    Stats { module: Option<&'a str> },
    Info,
    /// Every function outside the module that it calls, with the verdict.
    Callees { module: &'a str },
    /// Adds a fault rule to an attached or awaited target: `rule` is its
    /// words as given, which `fault::Rule::parse` accepts.
    Fail { module: &'a str, rule: &'a str },
    /// Removes every fault rule of a target.
    FailClear { module: &'a str },
    /// Ends the round of the target's systematic rules: the next site may fail.
    FailNext { module: &'a str },
    /// The fault rules, with their counts.
    Faults { module: Option<&'a str> },
    /// What the leak checker holds: outstanding objects by site.
    Leaks { module: Option<&'a str> },
    /// How far an attach under way has got; answered without waiting for
    /// the command that holds the lock.
    Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    Empty,
    TooLong,
    /// A NUL, a control character or a byte outside ASCII.
    NotText,
    UnknownVerb(&'a str),
    MissingModule,
    BadModuleName(&'a str),
    Ourselves,
    /// An argument this verb does not take, or one given twice.
    UnexpectedArgument(&'a str),
    BadSink(&'a str),
    BadFunctionList(&'a str),
    BadNumber(&'a str),
    BadRule(RuleError<'a>),
    BadLeakSlots(&'a str),
    KernelFreesWithoutLeaks,
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty command"),
            ParseError::TooLong => write!(f, "command longer than {MAX_COMMAND} bytes"),
            ParseError::NotText => write!(f, "command has a NUL, control or non-ASCII byte"),
            ParseError::UnknownVerb(v) => write!(
                f,
                "unknown command '{v}' (attach, detach, detach-all, plan, callees, fail, faults, leaks, targets, sites, stats, info)"
            ),
            ParseError::MissingModule => write!(f, "a module name is required"),
            ParseError::BadModuleName(m) => {
                write!(f, "'{m}' is not a module name (1 to {MAX_MODULE_NAME} of A-Z a-z 0-9 _)")
            }
            ParseError::Ourselves => write!(f, "cannot instrument {OURSELVES} itself"),
            ParseError::UnexpectedArgument(a) => write!(f, "unexpected or repeated argument '{a}'"),
            ParseError::BadSink(s) => write!(f, "unknown sink '{s}' (trace, printk, none)"),
            ParseError::BadFunctionList(l) => write!(f, "'{l}' is not a comma list of names or name:SPEC (SPEC: x value, s string, S struct, final . variadic)"),
            ParseError::BadNumber(n) => write!(f, "'{n}' is not a decimal number up to {MAX_BURST}"),
            ParseError::BadRule(e) => write!(f, "fault rule: {e}"),
            ParseError::BadLeakSlots(n) => write!(f, "leaks={n}: the leak table holds 1 to {MAX_LEAK_SLOTS} objects"),
            ParseError::KernelFreesWithoutLeaks => write!(f, "kernel_frees needs leaks: it watches the leak table's objects"),
        }
    }
}

/// Parses one command. Only syntax: whether the module is loaded or the
/// functions are exported is decided by whoever acts on it.
pub fn parse(bytes: &[u8]) -> Result<Command<'_>, ParseError<'_>> {
    if bytes.len() > MAX_COMMAND {
        return Err(ParseError::TooLong);
    }
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if !bytes.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ParseError::NotText);
    }
    // All printable ASCII from here.
    let line = core::str::from_utf8(bytes).map_err(|_| ParseError::NotText)?;
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let verb = words.next().ok_or(ParseError::Empty)?;
    let command = match verb {
        "attach" => {
            let module = target_module(words.next())?;
            let (mut functions, mut sink, mut follow, mut burst, mut leaks) = (None, None, false, None, None);
            let mut kernel_frees = false;
            for word in words.by_ref() {
                if let Some(list) = word.strip_prefix("fn=").filter(|_| functions.is_none()) {
                    functions = Some(function_list(list)?);
                } else if let Some(name) = word.strip_prefix("sink=").filter(|_| sink.is_none()) {
                    sink = Some(Sink::from_name(name).ok_or(ParseError::BadSink(name))?);
                } else if let Some(n) = word.strip_prefix("burst=").filter(|_| burst.is_none()) {
                    burst = Some(number(n, MAX_BURST)?);
                } else if word == "follow" && !follow {
                    follow = true;
                } else if word == "leaks" && leaks.is_none() {
                    leaks = Some(DEFAULT_LEAK_SLOTS);
                } else if let Some(n) = word.strip_prefix("leaks=").filter(|_| leaks.is_none()) {
                    leaks = Some(number(n, MAX_LEAK_SLOTS).ok().filter(|&n| n > 0).ok_or(ParseError::BadLeakSlots(n))?);
                } else if word == "kernel_frees" && !kernel_frees {
                    kernel_frees = true;
                } else {
                    return Err(ParseError::UnexpectedArgument(word));
                }
            }
            if kernel_frees && leaks.is_none() {
                return Err(ParseError::KernelFreesWithoutLeaks);
            }
            let (functions, sink) = (functions.unwrap_or(""), sink.unwrap_or_default());
            Command::Attach { module, functions, sink, follow, burst, leaks, kernel_frees }
        }
        "plan" => {
            let module = target_module(words.next())?;
            let functions = match words.next() {
                Some(word) => match word.strip_prefix("fn=") {
                    Some(list) => function_list(list)?,
                    None => return Err(ParseError::UnexpectedArgument(word)),
                },
                None => "",
            };
            Command::Plan { module, functions }
        }
        "detach" => Command::Detach { module: module(words.next())? },
        "detach-all" => Command::DetachAll,
        "targets" => Command::Targets,
        "progress" => Command::Progress,
        "sites" => Command::Sites { module: words.next().map(|w| module(Some(w))).transpose()? },
        "stats" => Command::Stats { module: words.next().map(|w| module(Some(w))).transpose()? },
        "info" => Command::Info,
        "callees" => Command::Callees { module: target_module(words.next())? },
        "fail" => {
            let module = target_module(words.next())?;
            // The rest of the line, from the word after the module.
            let after = module.as_ptr() as usize - line.as_ptr() as usize + module.len();
            let rule = line[after..].trim_matches(' ');
            words.by_ref().for_each(drop);
            if rule == "clear" {
                Command::FailClear { module }
            } else if rule == "next" {
                Command::FailNext { module }
            } else {
                Rule::parse(rule.split(' ').filter(|w| !w.is_empty())).map_err(ParseError::BadRule)?;
                Command::Fail { module, rule }
            }
        }
        "faults" => Command::Faults { module: words.next().map(|w| module(Some(w))).transpose()? },
        "leaks" => Command::Leaks { module: words.next().map(|w| module(Some(w))).transpose()? },
        other => return Err(ParseError::UnknownVerb(other)),
    };
    match words.next() {
        Some(extra) => Err(ParseError::UnexpectedArgument(extra)),
        None => Ok(command),
    }
}

/// A plain decimal: digits only (no sign, no hex), at most `max`.
fn number(text: &str, max: u32) -> Result<u32, ParseError<'_>> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u32>() {
        Ok(n) if digits_only && n <= max => Ok(n),
        _ => Err(ParseError::BadNumber(text)),
    }
}

fn module(word: Option<&str>) -> Result<&str, ParseError<'_>> {
    let name = word.ok_or(ParseError::MissingModule)?;
    let valid = (1..=MAX_MODULE_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(ParseError::BadModuleName(name))
    }
}

/// A module we may instrument: anything but ourselves.
fn target_module(word: Option<&str>) -> Result<&str, ParseError<'_>> {
    match module(word)? {
        OURSELVES => Err(ParseError::Ourselves),
        name => Ok(name),
    }
}

fn function_list(list: &str) -> Result<&str, ParseError<'_>> {
    let valid = list.split(',').all(|item| {
        crate::proto::Wanted::parse(item).is_ok_and(|w| crate::proto::is_symbol_name(w.name))
    });
    if valid {
        Ok(list)
    } else {
        Err(ParseError::BadFunctionList(list))
    }
}

impl fmt::Display for Command<'_> {
    /// The canonical line, without a newline: `parse` gives the command back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let functions = |f: &mut fmt::Formatter<'_>, list: &str| match list {
            "" => Ok(()),
            list => write!(f, " fn={list}"),
        };
        let optional = |f: &mut fmt::Formatter<'_>, module: Option<&str>| match module {
            Some(m) => write!(f, " {m}"),
            None => Ok(()),
        };
        match *self {
            Command::Attach { module, functions: list, sink, follow, burst, leaks, kernel_frees } => {
                write!(f, "attach {module}")?;
                functions(f, list)?;
                write!(f, " sink={}", sink.name())?;
                if let Some(n) = burst {
                    write!(f, " burst={n}")?;
                }
                if let Some(n) = leaks {
                    write!(f, " leaks={n}")?;
                }
                if kernel_frees {
                    write!(f, " kernel_frees")?;
                }
                if follow {
                    write!(f, " follow")?;
                }
                Ok(())
            }
            Command::Detach { module } => write!(f, "detach {module}"),
            Command::DetachAll => write!(f, "detach-all"),
            Command::Plan { module, functions: list } => {
                write!(f, "plan {module}")?;
                functions(f, list)
            }
            Command::Targets => write!(f, "targets"),
            Command::Progress => write!(f, "progress"),
            Command::Callees { module } => write!(f, "callees {module}"),
            Command::Sites { module } => {
                write!(f, "sites")?;
                optional(f, module)
            }
            Command::Stats { module } => {
                write!(f, "stats")?;
                optional(f, module)
            }
            Command::Info => write!(f, "info"),
            Command::Fail { module, rule } => write!(f, "fail {module} {rule}"),
            Command::FailClear { module } => write!(f, "fail {module} clear"),
            Command::FailNext { module } => write!(f, "fail {module} next"),
            Command::Faults { module } => {
                write!(f, "faults")?;
                optional(f, module)
            }
            Command::Leaks { module } => {
                write!(f, "leaks")?;
                optional(f, module)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;
    use std::vec;

    #[test]
    fn attach_with_every_option() {
        let got = parse(b"attach cr_target fn=kfree,vfree sink=printk burst=0 follow\n").unwrap();
        assert_eq!(
            got,
            Command::Attach {
                module: "cr_target",
                functions: "kfree,vfree",
                sink: Sink::Printk,
                follow: true,
                burst: Some(0),
                leaks: None,
                kernel_frees: false
            }
        );
        assert_eq!(
            parse(b"attach  ext4").unwrap(),
            Command::Attach {
                module: "ext4",
                functions: "",
                sink: Sink::Trace,
                follow: false,
                burst: None,
                leaks: None,
                kernel_frees: false
            }
        );
    }

    #[test]
    fn the_other_verbs() {
        assert_eq!(parse(b"detach ext4").unwrap(), Command::Detach { module: "ext4" });
        assert_eq!(parse(b"detach-all").unwrap(), Command::DetachAll);
        assert_eq!(parse(b"plan ext4 fn=kfree").unwrap(), Command::Plan { module: "ext4", functions: "kfree" });
        assert_eq!(parse(b"targets\n").unwrap(), Command::Targets);
        assert_eq!(parse(b"progress").unwrap(), Command::Progress);
        assert_eq!(Command::Progress.to_string(), "progress");
        assert_eq!(parse(b"sites").unwrap(), Command::Sites { module: None });
        assert_eq!(parse(b"stats ext4").unwrap(), Command::Stats { module: Some("ext4") });
        assert_eq!(parse(b"info").unwrap(), Command::Info);
        assert_eq!(
            parse(b"fail cr_target  fn=kstrdup every=3 times=2 \n").unwrap(),
            Command::Fail { module: "cr_target", rule: "fn=kstrdup every=3 times=2" }
        );
        assert_eq!(parse(b"fail cr_target clear").unwrap(), Command::FailClear { module: "cr_target" });
        assert_eq!(parse(b"faults").unwrap(), Command::Faults { module: None });
        assert_eq!(parse(b"leaks cr_target").unwrap(), Command::Leaks { module: Some("cr_target") });
        let with_leaks = parse(b"attach cr_target leaks").unwrap();
        assert_eq!(with_leaks.to_string(), "attach cr_target sink=trace leaks=16384");
        assert_eq!(parse(with_leaks.to_string().as_bytes()).unwrap(), with_leaks);
        let kernel_frees = parse(b"attach cr_target kernel_frees leaks=64").unwrap();
        assert_eq!(kernel_frees.to_string(), "attach cr_target sink=trace leaks=64 kernel_frees");
        assert_eq!(parse(kernel_frees.to_string().as_bytes()).unwrap(), kernel_frees);
        assert_eq!(parse(b"fail cr_target next").unwrap(), Command::FailNext { module: "cr_target" });
        for line in ["fail cr_target fn=kstrdup every=3", "fail cr_target clear", "fail cr_target next", "faults ext4"] {
            assert_eq!(parse(line.as_bytes()).unwrap().to_string(), line);
        }
    }

    #[test]
    fn malformed_commands_say_why() {
        let long = vec![b'a'; 64 * 1024];
        let cases: &[(&[u8], ParseError<'_>)] = &[
            (b"", ParseError::Empty),
            (b"\n", ParseError::Empty),
            (b"   ", ParseError::Empty),
            (&long, ParseError::TooLong),
            (b"attach cr\0target", ParseError::NotText),
            (b"attach cr_target\n\n", ParseError::NotText),
            (b"attach \xff", ParseError::NotText),
            (b"attach\tcr_target", ParseError::NotText),
            (b"frobnicate", ParseError::UnknownVerb("frobnicate")),
            (b"attach", ParseError::MissingModule),
            (b"detach", ParseError::MissingModule),
            (b"attach ../etc", ParseError::BadModuleName("../etc")),
            (b"attach hp_patcher", ParseError::Ourselves),
            (b"plan hp_patcher", ParseError::Ourselves),
            (b"attach ext4 sink=file", ParseError::BadSink("file")),
            (b"attach ext4 sink=none sink=trace", ParseError::UnexpectedArgument("sink=trace")),
            (b"attach ext4 follow follow", ParseError::UnexpectedArgument("follow")),
            (b"attach ext4 fn=kfree,,vfree", ParseError::BadFunctionList("kfree,,vfree")),
            (b"attach ext4 fn=", ParseError::BadFunctionList("")),
            (b"detach ext4 xfs", ParseError::UnexpectedArgument("xfs")),
            (b"targets all", ParseError::UnexpectedArgument("all")),
            (b"plan ext4 follow", ParseError::UnexpectedArgument("follow")),
            (b"attach ext4 burst=", ParseError::BadNumber("")),
            (b"attach ext4 burst=-1", ParseError::BadNumber("-1")),
            (b"attach ext4 burst=+5", ParseError::BadNumber("+5")),
            (b"attach ext4 burst=0x10", ParseError::BadNumber("0x10")),
            (b"attach ext4 burst=1000001", ParseError::BadNumber("1000001")),
            (b"attach ext4 burst=99999999999999999999", ParseError::BadNumber("99999999999999999999")),
            (b"attach ext4 burst=1 burst=2", ParseError::UnexpectedArgument("burst=2")),
            (b"fail ext4", ParseError::BadRule(RuleError::MissingFunction)),
            (b"fail ext4 fn=kfree every=0", ParseError::BadRule(RuleError::NeverFires("every=0"))),
            (b"fail ext4 clear fn=kfree", ParseError::BadRule(RuleError::Unexpected("clear"))),
            (b"fail hp_patcher fn=kfree", ParseError::Ourselves),
            (b"faults ext4 xfs", ParseError::UnexpectedArgument("xfs")),
            (b"attach ext4 leaks=0", ParseError::BadLeakSlots("0")),
            (b"attach ext4 leaks=4194305", ParseError::BadLeakSlots("4194305")),
            (b"attach ext4 leaks leaks", ParseError::UnexpectedArgument("leaks")),
            (b"attach ext4 kernel_frees", ParseError::KernelFreesWithoutLeaks),
            (b"attach ext4 leaks kernel_frees kernel_frees", ParseError::UnexpectedArgument("kernel_frees")),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(*want), "{:?}", std::string::String::from_utf8_lossy(input));
            assert!(!want.to_string().is_empty());
        }
        let name = "m".repeat(MAX_MODULE_NAME + 1);
        assert_eq!(parse(std::format!("detach {name}").as_bytes()), Err(ParseError::BadModuleName(&name)));
    }

    #[test]
    fn a_command_at_the_size_limit_is_still_read() {
        let mut line = std::format!("attach {}", "m".repeat(MAX_MODULE_NAME)).into_bytes();
        line.push(b' ');
        line.resize(MAX_COMMAND, b' ');
        assert!(parse(&line).is_ok());
        line.push(b' ');
        assert_eq!(parse(&line), Err(ParseError::TooLong));
    }
}
