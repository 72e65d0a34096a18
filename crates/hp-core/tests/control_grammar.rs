//! Properties of the control grammar: whatever bytes arrive, parsing never
//! panics and accepts only printable one-line commands; every command prints
//! to a line that parses back to itself.

use hp_core::control::{parse, Command, Sink, MAX_COMMAND};
use proptest::prelude::*;

fn module() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,55}".prop_filter("not ourselves", |m| m != "hp_patcher")
}

fn functions() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z_]{1,20}(:[xsS]{0,8}[.]?)?(,[a-z_]{1,20}(:[xsS]{0,8}[.]?)?){0,4}"]
}

fn sink() -> impl Strategy<Value = Sink> {
    prop_oneof![Just(Sink::Trace), Just(Sink::Printk), Just(Sink::None)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_text_rules_hold(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(command) = parse(&bytes) {
            prop_assert!(bytes.len() <= MAX_COMMAND);
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            prop_assert!(body.iter().all(|&b| b == b' ' || b.is_ascii_graphic()));
            // What was accepted means the same once printed canonically.
            let line = command.to_string();
            prop_assert_eq!(parse(line.as_bytes()), Ok(command));
        }
    }

    #[test]
    fn commands_round_trip(
        m in module(), f in functions(), s in sink(), follow in any::<bool>(),
        burst in proptest::option::of(0u32..=hp_core::control::MAX_BURST), pick in 0u8..9,
    ) {
        let command = match pick {
            0 => Command::Attach { module: &m, functions: &f, sink: s, follow, burst, leaks: None, kernel_frees: false },
            1 => Command::Detach { module: &m },
            2 => Command::DetachAll,
            3 => Command::Plan { module: &m, functions: &f },
            4 => Command::Targets,
            5 => Command::Sites { module: follow.then_some(m.as_str()) },
            6 => Command::Stats { module: follow.then_some(m.as_str()) },
            7 => Command::Callees { module: &m },
            _ => Command::Info,
        };
        let line = command.to_string() + "\n";
        prop_assert_eq!(parse(line.as_bytes()), Ok(command));
    }

    #[test]
    fn one_wrong_byte_in_a_good_command_is_refused(m in module(), at in 0usize..64, byte in prop_oneof![0u8..0x20, 0x7fu8..=0xff]) {
        let mut line = format!("attach {m} sink=printk").into_bytes();
        let at = at % line.len();
        line[at] = byte;
        prop_assert!(parse(&line).is_err());
    }
}
