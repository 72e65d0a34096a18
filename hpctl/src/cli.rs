//! hpctl's command line, in the library rather than the binary so that
//! xtask can build the man pages and shell completions from the very
//! definitions the binary parses with (`Cli::command()`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::device::SinkArg;

/// A named set of functions (`--set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SetArg {
    /// Every memory-catalogue function this kernel exports (the default with no --fn).
    Memory,
}

const FN_HELP: &str = "Comma list of functions. A memory-catalogue name (kfree, __kmalloc_noprof, ...) keeps its \
    hand-written semantics; any other callee is typed from BTF and sent as name:SPEC, or refused with the reason \
    (variadic, struct_by_value, too_many_args, no_prototype). Default: the memory set.";

#[derive(Parser)]
#[command(
    name = "hpctl",
    version,
    about = "Control hp_patcher: hot-patch a live module's calls (memory functions, or any callee) and record them",
    long_about = "Control hp_patcher: hot-patch a live kernel module's calls to memory functions, \
                  or to any function it calls (typed from BTF), through kprobes, and record each \
                  call (arguments, result, duration, call site).\n\n\
                  hpctl talks to /dev/hp_patcher (one command per write) and reads the \
                  hp_patcher:hp_call trace event from a tracefs instance of its own. It must run \
                  as root.",
    after_help = "Examples:\n  hpctl attach cr_target\n  hpctl trace cr_target --duration 10\n  hpctl callees ext4\n  \
                  hpctl stats\n  hpctl detach --all"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// List targets: state, sink, sites found and armed, hits.
    #[command(
        long_about = "List hp_patcher's targets (the `targets` command).\n\n\
        Columns: NAME the module; STATE attached, awaited (followed, not loaded now) or refused \
        (followed, its last load could not be attached); SINK where calls go (trace, printk, none); \
        FOLLOW whether it is re-attached at every load; SITES call sites found; ARMED of those, \
        probes in place; HITS calls intercepted.",
        after_help = "Examples:\n  hpctl status\n  hpctl status --json"
    )]
    Status {
        /// One JSON object per target (docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Show which call sites an attach would arm, arming nothing.
    #[command(
        long_about = "Decode a loaded module and list the calls to the selected functions that \
        an attach would intercept (the `plan` command). Nothing is armed. --fn, --set and --raw \
        select as for attach.\n\n\
        Columns: CALLER the calling function and offset; CALLEE the function called; KIND call, \
        or tail (a tail jump); STATE planned (would be armed, kprobes permitting), foreign \
        (someone else's probe is on it), jcc (reached by a conditional jump), long (a prefixed \
        call or jump). The last line sums it up.",
        after_help = "Examples:\n  hpctl plan ext4\n  hpctl plan cr_target --fn kfree,__kmalloc_noprof\n  \
        hpctl plan ext4 --set memory --fn jbd2_journal_start"
    )]
    Plan {
        /// A loaded module, as lsmod names it (- and _ are the same).
        module: String,
        #[arg(long = "fn", value_name = "F1,F2", help = FN_HELP)]
        functions: Option<String>,
        /// Add a whole set: memory is the catalogue this kernel exports (what no --fn means).
        #[arg(long, value_enum, value_name = "SET")]
        set: Option<SetArg>,
        /// Also send --fn names BTF has no prototype for, untyped: 6 registers recorded raw.
        #[arg(long, requires = "functions")]
        raw: bool,
        /// One JSON object per site (docs/json-schema.md).
        #[arg(long)]
        json: bool,
        /// hp_patcher.ko to load if hp_patcher is not loaded (it decodes the module).
        #[arg(long, value_name = "PATH")]
        ko: Option<PathBuf>,
    },
    /// List the functions a loaded module calls, and which can be intercepted.
    #[command(
        long_about = "Decode a loaded module and list every function outside it that it calls or \
        tail-jumps to (the `callees` command), with the module's verdict joined with BTF's. \
        Nothing is armed.\n\n\
        Columns: NAME the kernel's symbol (sym+0xoff when the destination is not a symbol's \
        start); SITES calls; TAILS tail jumps; STATE interceptable (the module and BTF both \
        accept it) or refused; REASON the module's (not_function_start, static_call, \
        static_call_sites, noreturn, no_ftrace), else BTF's (variadic, struct_by_value, \
        too_many_args, no_prototype: --raw attaches those); SPEC what `attach --fn NAME` sends; \
        PROTOTYPE from BTF. The last line counts callees, interceptable ones and each reason.",
        after_help = "Examples:\n  hpctl callees ext4\n  hpctl callees cr_target --json"
    )]
    Callees {
        /// A loaded module, as lsmod names it (- and _ are the same).
        module: String,
        /// One JSON object per callee (docs/json-schema.md).
        #[arg(long)]
        json: bool,
        /// hp_patcher.ko to load if hp_patcher is not loaded (it decodes the module).
        #[arg(long, value_name = "PATH")]
        ko: Option<PathBuf>,
    },
    /// Attach to a loaded module (loads hp_patcher.ko first if needed).
    #[command(
        long_about = "Attach hp_patcher to a loaded module: every call it makes to a \
        selected function goes through hp_patcher from now on (all or nothing).\n\n\
        If hp_patcher is not loaded, hpctl loads it first: the hp_patcher.ko at --ko, else the \
        one beside the hpctl binary (finit_module), else the installed one (`modprobe hp_patcher`, \
        which finds a DKMS build), and creates /dev/hp_patcher if no udev or devtmpfs does.\n\n\
        With --follow, a module that is not loaded is awaited, and the module is re-attached at \
        every load, before its init runs.\n\n\
        Functions: with no --fn, the memory catalogue (kmalloc, kfree, ... as this kernel names \
        them). A catalogue name in --fn keeps its memory semantics. Any other name must be a \
        callee of the module (see `hpctl callees`): hpctl reads its prototype from BTF \
        (/sys/kernel/btf/vmlinux, then the module that defines it) and sends name:SPEC; a \
        variadic function, a struct or union passed by value, more than 6 arguments, or no \
        prototype at all (unless --raw) is refused with one line naming the function, and \
        nothing is sent. --set memory adds the whole catalogue to --fn's names.",
        after_help = "Examples:\n  hpctl attach cr_target\n  hpctl attach ext4 --fn kfree,kmem_cache_free --sink printk\n  \
        hpctl attach ext4 --fn jbd2_journal_start,kstrtoull\n  hpctl attach ext4 --set memory --fn jbd2_journal_start\n  \
        hpctl attach cr_target --fn some_asm_helper --raw\n  hpctl attach xfs --follow --ko ./hp_patcher.ko"
    )]
    Attach {
        /// The module to instrument, as lsmod names it (- and _ are the same).
        module: String,
        #[arg(long = "fn", value_name = "F1,F2", help = FN_HELP)]
        functions: Option<String>,
        /// Add a whole set: memory is the catalogue this kernel exports (what no --fn means).
        #[arg(long, value_enum, value_name = "SET")]
        set: Option<SetArg>,
        /// Also send --fn names BTF has no prototype for, untyped: 6 registers recorded raw.
        #[arg(long, requires = "functions")]
        raw: bool,
        /// Where calls go: the hp_call trace event, a kernel log line, or counters only.
        #[arg(long, value_enum, default_value = "trace")]
        sink: SinkArg,
        /// With --sink printk: lines per 5 s window, each CPU its even share (0: unlimited; default: the module's log_burst).
        #[arg(long, value_name = "N")]
        burst: Option<u32>,
        /// Await the module if it is not loaded, and re-attach at every load.
        #[arg(long)]
        follow: bool,
        /// Check the target for leaks, in a table of this many objects (default 16384); see `hpctl leaks`.
        #[arg(long, value_name = "OBJECTS", num_args = 0..=1, default_missing_value = "16384")]
        leaks: Option<u32>,
        /// With --leaks: also watch the kernel's own frees of the target's objects, at
        /// kfree, kvfree, kfree_sensitive, vfree and kmem_cache_free themselves (every
        /// caller in the kernel pays: `hpctl leaks` says how much).
        #[arg(long, requires = "leaks")]
        kernel_frees: bool,
        /// With --leaks: the module's own allocator and free, ALLOC:FREE[@N] (FREE's argument N,
        /// default 0, is the object; both typed from BTF); repeatable.
        #[arg(long, value_name = "ALLOC:FREE[@N]", requires = "leaks")]
        pair: Vec<String>,
        /// hp_patcher.ko to load if hp_patcher is not loaded.
        #[arg(long, value_name = "PATH")]
        ko: Option<PathBuf>,
    },
    /// Make a target's calls fail by rule, or clear its rules.
    #[command(
        long_about = "Add a fault rule to a target (attached, or awaited with follow): the calls it \
        selects return their failure value instead of running (NULL for an allocator, -errno for an \
        int, ERR_PTR(-errno) with --err-ptr). Conditions combine with and; --every, --after and \
        --times count the calls that pass the other conditions. A call with __GFP_NOFAIL is never \
        failed: it is counted as spared. A function that returns nothing, frees, or is not in the \
        memory catalogue is refused with the reason. Each failed call is an hp_patcher:hp_fault \
        event. At most 8 rules per target; --clear removes them all.",
        after_help = "Examples:\n  hpctl fail cr_target --fn kstrdup --every 10 --times 5\n  \
        hpctl fail ext4 --fn __kmalloc_noprof --percent 5 --min-size 256\n  hpctl fail cr_target --clear",
        group(clap::ArgGroup::new("what").required(true).args(["function", "clear", "next"]))
    )]
    Fail {
        /// The target.
        module: String,
        #[command(flatten)]
        rule: crate::faults::RuleArgs,
        /// Remove every rule of the target.
        #[arg(long, conflicts_with = "function")]
        clear: bool,
        /// End the round of the target's systematic rules: the next site reached may fail.
        #[arg(long, conflicts_with_all = ["function", "clear"])]
        next: bool,
        /// hp_patcher.ko to load if hp_patcher is not loaded.
        #[arg(long, value_name = "PATH")]
        ko: Option<PathBuf>,
    },
    /// What a target attached with --leaks allocated and has not freed, by site and stack.
    #[command(
        long_about = "The leak checker's report (the `leaks` command) for targets attached with --leaks: \
        the objects the target's own sites allocated and its sites have not freed, grouped by \
        allocating site, with count, bytes and the age of the oldest, and under each site by the \
        stack they were allocated from; then the frees of objects it was not seen to allocate \
        (unknown frees: allocated before the attach, by someone else, or a bad free). MODE \
        since_load: followed from its load, so what is left at its unload is a leak; \
        since_attach: attached while live, so outstanding since the attach. Objects the target \
        hands to the kernel, which frees them elsewhere, stay outstanding here, unless the target \
        was attached with --kernel-frees: then they count as freed by the kernel, per site, and \
        the report says what watching the kernel's frees cost.",
        after_help = "Examples:\n  hpctl leaks cr_target\n  hpctl leaks --json"
    )]
    Leaks {
        /// Only this target (default: all attached with --leaks).
        module: Option<String>,
        /// One JSON object per record (docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Fault rules with their counts, and the sites where calls failed.
    #[command(after_help = "Examples:\n  hpctl faults\n  hpctl faults cr_target")]
    Faults {
        /// Only this target (default: all).
        module: Option<String>,
    },
    /// Detach from one target, or from all.
    #[command(
        after_help = "Examples:\n  hpctl detach cr_target\n  hpctl detach --all",
        group(clap::ArgGroup::new("which").required(true).args(["module", "all"]))
    )]
    Detach {
        /// The target to detach from.
        module: Option<String>,
        /// Detach from every target.
        #[arg(long)]
        all: bool,
    },
    /// Counters per target and function.
    #[command(
        long_about = "hp_patcher's counters per target and catalogue function (the `stats` \
        command).\n\nColumns: HITS calls redirected to hp_patcher; INFLIGHT calls inside the real \
        function right now; EVENTS trace events written (sink trace) or lines logged (printk); \
        DROPPED calls that became no event (no tracer had hp_call enabled, or the printk rate \
        limit); MISSED probe hits kprobes did not hand over (the real call ran unseen).",
        after_help = "Examples:\n  hpctl stats\n  hpctl stats cr_target --json"
    )]
    Stats {
        /// Only this target (default: all).
        module: Option<String>,
        /// One JSON object per target and function (docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// The memory functions this kernel lets hp_patcher intercept, their
    /// arguments checked against the running kernel's BTF.
    #[command(
        long_about = "List the catalogue functions the loaded hp_patcher can intercept on this \
        kernel, with the argument names it prints them with, each checked against the running \
        kernel's BTF (/sys/kernel/btf/vmlinux). Exits with 1 if any differs or has no prototype.",
        after_help = "Examples:\n  hpctl catalogue"
    )]
    Catalogue,
    /// Sites of all targets or one, with their hits.
    #[command(after_help = "Examples:\n  hpctl sites\n  hpctl sites cr_target --json")]
    Sites {
        /// Only this target (default: all).
        module: Option<String>,
        /// One JSON object per site (docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Stream recorded calls (the hp_patcher:hp_call event) until Ctrl-C.
    #[command(
        long_about = "Stream the calls hp_patcher records, from a tracefs instance of \
        hpctl's own (instances/hpctl-<pid>: other tracing is not disturbed), read in binary \
        from every CPU's trace_pipe_raw.\n\n\
        One line per call: <time> cpu=N pid=N comm=X target site callee(args) = ret (dur ns). \
        The time is the call's entry (trace clock local, seconds); a void function has no result \
        and no duration. Events of each CPU are in order; CPUs are not merged.\n\n\
        A full buffer drops new events: hpctl reports on stderr whenever that count grows, \
        and at the end prints one line: events received, ring-buffer drops, and per function \
        what was received, lost in the ring buffer (events hp_patcher wrote minus events \
        received) and dropped by hp_patcher itself. Ends on Ctrl-C, SIGTERM or --duration.",
        after_help = "Examples:\n  hpctl trace\n  hpctl trace cr_target --fn kfree --duration 5\n  \
        hpctl trace ext4 xfs --json --buffer-kb 8192 > calls.jsonl"
    )]
    Trace {
        /// Only these targets (default: all).
        modules: Vec<String>,
        /// Only these functions, comma list.
        #[arg(long = "fn", value_name = "F1,F2")]
        functions: Option<String>,
        /// One JSON object per line: call, drop, summary (docs/json-schema.md).
        #[arg(long)]
        json: bool,
        /// Ring buffer per CPU, in kB.
        #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
        buffer_kb: u32,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Also save the raw pages and what decoding them needs in DIR
        /// (header_page, header_event, format, info, cpu<N>.raw, kallsyms,
        /// comms), for `hpctl decode DIR` and tests.
        #[arg(long, value_name = "DIR")]
        save_raw: Option<PathBuf>,
    },
    /// Decode a saved capture directory offline (no root, no device).
    #[command(
        hide = true,
        long_about = "Decode a capture saved from a live system: a directory \
        with header_page, header_event, format (the hp_call format file) and cpu<N>.raw (what \
        per_cpu/cpu<N>/trace_pipe_raw gave), plus optional info (the `info` reply), kallsyms and \
        comms (\"pid comm\" lines). Prints what `hpctl trace` would have, CPU by CPU.",
        after_help = "Example:\n  hpctl decode hpctl/tests/data/sample-6.12"
    )]
    Decode {
        /// A capture directory (see `trace --save-raw`).
        dir: PathBuf,
        /// One JSON `call` object per event.
        #[arg(long)]
        json: bool,
    },
}
