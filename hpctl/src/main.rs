//! hpctl: attach hp_patcher to live modules, list what it does, stream the
//! calls it records. See docs/hpctl.md.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use hpctl::btf::Btfs;
use hpctl::callees::{fn_item, is_catalogue, is_lookup_name, Judged, Lookup};
use hpctl::cli::{Cli, Cmd, SetArg};
use hpctl::device::{self, function_list, function_names, module_name, Command};
use hpctl::records::{parse_reply, Callee, Detached, Detaching, Func, Info, Site, Target};
use hpctl::{json, kmod, table, trace};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpctl: {}", device::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn module_arg(name: &str) -> Result<String> {
    module_name(name).map_err(anyhow::Error::msg)
}

fn functions_arg(list: &Option<String>) -> Result<String> {
    list.as_deref().map_or(Ok(String::new()), |l| function_list(l).map_err(anyhow::Error::msg))
}

/// The `fn=` items of --fn: a catalogue name bare, any other `name:SPEC` from
/// BTF (bare with --raw when BTF has none). Done before anything is loaded
/// or sent, so that a refusal sends nothing.
fn typed_functions(list: &Option<String>, raw: bool) -> Result<Vec<String>> {
    let names = list.as_deref().map(function_names).transpose().map_err(anyhow::Error::msg)?.unwrap_or_default();
    let mut btfs: Option<Result<Btfs, String>> = None;
    let mut items = Vec::new();
    for name in names {
        if is_catalogue(&name) {
            items.push(name);
            continue;
        }
        let btfs = btfs.get_or_insert_with(|| Btfs::load().map_err(|e| format!("{e:#}")));
        let found = btfs.as_mut().ok().and_then(|b| b.prototype(&name));
        let lookup = match (&found, &*btfs) {
            (Some(p), _) => Lookup::Found(p),
            (None, Err(why)) => Lookup::NoBtf(why),
            (None, Ok(_)) => Lookup::Missing,
        };
        items.push(fn_item(&name, raw, lookup)?);
    }
    Ok(items)
}

/// The `fn=` list sent: --fn's items, after the whole catalogue this
/// kernel exports (from `info`) with --set memory. Empty (the module's
/// default, the memory set) when --fn is not given.
fn functions_to_send(items: Vec<String>, set: Option<SetArg>) -> Result<String> {
    if set != Some(SetArg::Memory) || items.is_empty() {
        return Ok(items.join(","));
    }
    let info = Info::from_records(&send(&Command::Info)?)?;
    let mut all: Vec<String> = info.functions.into_iter().filter(|f| f.2).map(|f| f.1).collect();
    for item in items {
        if !all.contains(&item) {
            all.push(item);
        }
    }
    Ok(all.join(","))
}

/// Each callee with BTF's verdict (BTF is read once; without it every
/// callee is no_prototype, and one line on stderr says why).
fn judge(callees: Vec<Callee>) -> Vec<Judged> {
    let mut btfs = Btfs::load().map_err(|e| format!("{e:#}"));
    if let Err(why) = &btfs {
        eprintln!("hpctl: no BTF, so no prototypes: {why}");
    }
    callees
        .into_iter()
        .map(|c| {
            if !is_lookup_name(&c.name) {
                return Judged::new(c, Lookup::NotAsked);
            }
            let found = btfs.as_mut().ok().and_then(|b| b.prototype(&c.name));
            let lookup = match (&found, &btfs) {
                (Some(p), _) => Lookup::Found(p),
                (None, Err(why)) => Lookup::NoBtf(why),
                (None, Ok(_)) => Lookup::Missing,
            };
            Judged::new(c, lookup)
        })
        .collect()
}

fn send(command: &Command<'_>) -> Result<Vec<hpctl::records::Record>> {
    let reply = device::send(command)?;
    parse_reply(&reply)
}

fn run(command: Cmd) -> Result<()> {
    if let Cmd::Decode { dir, json } = &command {
        return decode(dir, *json);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must be run as root (hp_patcher's device and tracefs are root's)");
    }
    match command {
        Cmd::Status { json } => {
            kmod::ensure_device()?;
            let records = send(&Command::Targets)?;
            let targets = Target::all(&records)?;
            if json {
                targets.iter().for_each(|t| println!("{}", json::target(t)));
            } else {
                print!("{}", table::status(&targets));
                Detaching::all(&records)?.iter().for_each(|d| println!("{}", d.describe()));
                // The targets' fault rules and their counts, if any.
                let rules = hpctl::faults::rules(&send(&Command::Faults { module: None })?)?;
                if !rules.is_empty() {
                    print!("\n{}", hpctl::faults::table(&rules, &[], &[]));
                }
            }
        }
        Cmd::Plan { module, functions, set, raw, json, ko } => {
            let (module, items) = (module_arg(&module)?, typed_functions(&functions, raw)?);
            kmod::ensure_loaded(ko.as_deref())?;
            let functions = functions_to_send(items, set)?;
            let sites = Site::all(&send(&Command::Plan { module: &module, functions: &functions })?)?;
            if json {
                sites.iter().for_each(|s| println!("{}", json::site(s)));
            } else {
                print!("{}", table::sites(&sites, true));
            }
        }
        Cmd::Callees { module, json, ko } => {
            let module = module_arg(&module)?;
            kmod::ensure_loaded(ko.as_deref())?;
            let judged = judge(Callee::all(&send(&Command::Callees { module: &module })?)?);
            if json {
                judged.iter().for_each(|j| println!("{}", json::callee(&module, j)));
            } else {
                print!("{}", table::callees(&judged));
            }
        }
        Cmd::Attach { module, functions, set, raw, sink, burst, follow, leaks, kernel_frees, pair, ko } => {
            let (module, mut items) = (module_arg(&module)?, typed_functions(&functions, raw)?);
            for text in &pair {
                let pair = hpctl::leaks::Pair::parse(text).map_err(anyhow::Error::msg)?;
                if let Some(name) = [&pair.alloc, &pair.free].into_iter().find(|n| is_catalogue(n)) {
                    bail!("--pair {text}: {name} is in the memory catalogue, which knows what it allocates or frees");
                }
                let typed = typed_functions(&Some(format!("{},{}", pair.alloc, pair.free)), false)?;
                items.retain(|i| [&pair.alloc, &pair.free].iter().all(|n| i.split(':').next() != Some(n.as_str())));
                items.extend(pair.items(&typed[0], &typed[typed.len() - 1]));
            }
            // Pairs alone still check the catalogue's allocators and frees.
            let set = if functions.is_none() && !pair.is_empty() { Some(SetArg::Memory) } else { set };
            kmod::ensure_loaded(ko.as_deref())?;
            let functions = functions_to_send(items, set)?;
            let sink = sink.into();
            let command =
                Command::Attach { module: &module, functions: &functions, sink, follow, burst, leaks, kernel_frees };
            let records = send_showing_progress(&command)?;
            match Target::all(&records)?.first() {
                Some(t) => println!("{}", table::attached(t)),
                None => bail!("attach {module}: the reply has no target line"),
            }
        }
        Cmd::Detach { module, all } => {
            let module = module.as_deref().map(module_arg).transpose()?;
            kmod::ensure_device()?;
            let command = match (&module, all) {
                (Some(m), false) => Command::Detach { module: m },
                _ => Command::DetachAll,
            };
            let detached = Detached::all(&send_showing_wait(&command)?)?;
            if detached.is_empty() {
                println!("no targets");
            }
            for d in detached {
                println!("detached from {} after {} calls", d.name, d.calls);
            }
        }
        Cmd::Fail { module, rule, clear, next, ko } => {
            let module = module_arg(&module)?;
            kmod::ensure_loaded(ko.as_deref())?;
            if clear {
                send(&Command::FailClear { module: &module })?;
                println!("{module}: fault rules cleared");
            } else if next {
                send(&Command::FailNext { module: &module })?;
                println!("{module}: next round");
            } else {
                // Outside the catalogue, the module needs the return type: BTF's.
                let returns = match rule.function.as_deref() {
                    Some(name) if !is_catalogue(name) => {
                        Btfs::load().ok().and_then(|mut b| b.prototype(name)).map(|p| hpctl::faults::returns_of(&p.ret))
                    }
                    _ => None,
                };
                let text = rule.to_rule_text(returns)?;
                let rules = hpctl::faults::rules(&send(&Command::Fail { module: &module, rule: &text })?)?;
                match rules.iter().rev().find(|r| r.text == text) {
                    Some(r) => println!(
                        "{module}: rule {}: {} (a failed call returns {})",
                        r.slot,
                        r.text,
                        hpctl::faults::value_name(
                            r.value,
                            rule.err_ptr || returns == Some(hp_core::fault::Returns::Pointer)
                        )
                    ),
                    None => println!("{module}: rule added: {text}"),
                }
            }
        }
        Cmd::Leaks { module, json } => {
            let module = module.as_deref().map(module_arg).transpose()?;
            kmod::ensure_device()?;
            let records = send(&Command::Leaks { module: module.as_deref() })?;
            let report = hpctl::leaks::Report::from_records(&records)?;
            if json {
                report.json_lines().iter().for_each(|l| println!("{l}"));
            } else {
                print!("{}", report.table());
            }
        }
        Cmd::Faults { module } => {
            let module = module.as_deref().map(module_arg).transpose()?;
            kmod::ensure_device()?;
            let records = send(&Command::Faults { module: module.as_deref() })?;
            let (rules, sites) = (hpctl::faults::rules(&records)?, hpctl::faults::sites(&records)?);
            let systematic = hpctl::faults::systematic_sites(&records)?;
            print!("{}", hpctl::faults::table(&rules, &sites, &systematic));
        }
        Cmd::Stats { module, json } => {
            let module = module.as_deref().map(module_arg).transpose()?;
            kmod::ensure_device()?;
            let funcs = Func::all(&send(&Command::Stats { module: module.as_deref() })?)?;
            if json {
                funcs.iter().for_each(|f| println!("{}", json::func(f)));
            } else {
                print!("{}", table::stats(&funcs));
            }
        }
        Cmd::Catalogue => {
            kmod::ensure_device()?;
            let info = Info::from_records(&send(&Command::Info)?)?;
            let mut btfs = Btfs::load()?;
            let rows = hpctl::catalogue::rows(&info, |name| {
                btfs.prototype(name).map(|p| p.params.into_iter().map(|p| p.name).collect())
            });
            print!("{}", hpctl::catalogue::table(&rows));
            if !rows.iter().all(|r| r.matches()) {
                std::process::exit(1);
            }
        }
        Cmd::Sites { module, json } => {
            let module = module.as_deref().map(module_arg).transpose()?;
            kmod::ensure_device()?;
            let sites = Site::all(&send(&Command::Sites { module: module.as_deref() })?)?;
            if json {
                sites.iter().for_each(|s| println!("{}", json::site(s)));
            } else {
                print!("{}", table::sites(&sites, false));
            }
        }
        Cmd::Trace { modules, functions, json, buffer_kb, duration, save_raw } => {
            let modules = modules.iter().map(|m| module_arg(m)).collect::<Result<Vec<_>>>()?;
            let functions = functions_arg(&functions)?;
            let functions = functions.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect();
            let duration = match duration {
                Some(d) if !(d > 0.0 && d.is_finite()) => bail!("--duration must be a positive number of seconds"),
                d => d.map(Duration::from_secs_f64),
            };
            kmod::ensure_device()?;
            trace::run(trace::Options { modules, functions, json, buffer_kb, duration, save_raw })?;
        }
        Cmd::Decode { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn decode(dir: &std::path::Path, json: bool) -> Result<()> {
    let capture = hpctl::capture::decode_dir(dir)?;
    let mut renderer = hpctl::capture::renderer_for(dir)?;
    for ev in &capture.events {
        if json {
            println!("{}", json::call(&renderer.json(ev)));
        } else {
            println!("{}", renderer.human(ev));
        }
    }
    for p in &capture.problems {
        eprintln!("hpctl: {p}");
    }
    eprintln!(
        "hpctl: {} pages, {} hp_call events, {} other records, {} pages with lost events before them",
        capture.pages,
        capture.events.len(),
        capture.other_records,
        capture.missed.len()
    );
    Ok(())
}

/// An attach arms one probe at a time (btrfs's 957 take 40 s under TCG):
/// on a terminal, say how far it has got, from `progress`, which the module
/// answers without waiting for the attach.
fn send_showing_progress(command: &Command<'_>) -> Result<Vec<hpctl::records::Record>> {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return send(command);
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut shown = false;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let Ok(records) = send(&Command::Progress) else { continue };
                let Some(p) = records.iter().find(|r| r.kind == "progress") else { continue };
                let (Ok(name), Ok(armed), Ok(sites)) = (p.get("name"), p.num("armed"), p.num("sites")) else { continue };
                if !done.load(std::sync::atomic::Ordering::Relaxed) {
                    eprint!("\rhpctl: arming {name}: {armed} of {sites} sites");
                    let _ = std::io::stderr().flush();
                    shown = true;
                }
            }
            if shown {
                eprint!("\r\x1b[K");
            }
        })
    };
    let reply = send(command);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    reply
}

/// A detach returns once the callers still inside an intercepted call come
/// out, which may take long (a callee may sleep): meanwhile, every 2 s, say
/// on stderr what it waits for. Ctrl-C ends hpctl; the kernel finishes the
/// detach in the background (`hpctl status` shows it).
fn send_showing_wait(command: &Command<'_>) -> Result<Vec<hpctl::records::Record>> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut ticks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                ticks += 1;
                if ticks % 20 != 0 {
                    continue;
                }
                let Ok(records) = send(&Command::Targets) else { continue };
                for d in Detaching::all(&records).unwrap_or_default() {
                    eprintln!("hpctl: {} (Ctrl-C leaves it to finish in the background)", d.describe());
                }
            }
        })
    };
    let reply = send(command);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    reply
}
