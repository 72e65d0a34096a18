//! Parameter names of an exported function from the kernel's headers: what
//! the catalogue's layout is chosen by when the kernel has no BTF (i386's
//! 6.1, the debug kernel) and a symbol has more than one layout.
//!
//! Enough of C for a prototype in include/linux: a line that names the
//! function after its return type (not a macro, not a call inside one),
//! read up to its closing parenthesis; each parameter's name is its last
//! identifier.

use std::path::Path;

use anyhow::Result;

/// The parameter names of `name`'s first declaration in `include/linux/*.h`
/// under `source` (the kernel's common headers), if any.
pub fn find(source: &Path, name: &str) -> Result<Option<Vec<String>>> {
    let Ok(dir) = std::fs::read_dir(source.join("include/linux")) else { return Ok(None) };
    let mut headers: Vec<_> =
        dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "h")).collect();
    headers.sort();
    for header in headers {
        let text = std::fs::read_to_string(&header).unwrap_or_default();
        if let Some(params) = in_text(&text, name) {
            return Ok(Some(params));
        }
    }
    Ok(None)
}

/// The parameter names of `name`'s first declaration or definition in `text`.
pub fn in_text(text: &str, name: &str) -> Option<Vec<String>> {
    let call = format!("{name}(");
    for (at, _) in text.match_indices(&call) {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let before = text[line_start..at].trim();
        // A declaration: a return type before the name, on a line of its own.
        let is_type_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '*' || c == ' ';
        if before.is_empty() || before.starts_with('#') || !before.chars().all(is_type_char) {
            continue;
        }
        if !text[..at].ends_with([' ', '*']) {
            continue; // part of a longer name
        }
        let rest = &text[at + call.len()..];
        let params = &rest[..rest.find(')')?];
        if params.trim() == "void" {
            return Some(Vec::new());
        }
        return params
            .split(',')
            .map(|p| {
                p.trim_end()
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            })
            .collect();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::in_text;

    #[test]
    fn finds_a_declaration_not_a_macro_or_a_call() {
        // Written for this test in the shape of 6.1's and 6.12's headers.
        let older = "#define kfree_rcu(p, f) \\\n\tkvfree_call_rcu(&((p)->f), (rcu_callback_t)0)\n\
            \tif (p) kvfree_call_rcu(NULL, p);\n\
            void kvfree_call_rcu(struct rcu_head *head, rcu_callback_t func);\n";
        assert_eq!(in_text(older, "kvfree_call_rcu"), Some(vec!["head".to_string(), "func".into()]));
        let newer = "static inline void kvfree_call_rcu(struct rcu_head *head,\n\t\t\t\t   void *ptr)\n{\n}\n";
        assert_eq!(in_text(newer, "kvfree_call_rcu"), Some(vec!["head".to_string(), "ptr".into()]));
        assert_eq!(in_text("void my_kvfree_call_rcu(int a);\n", "kvfree_call_rcu"), None);
        assert_eq!(in_text("int rcu_barrier_tasks(void);\n", "rcu_barrier_tasks"), Some(vec![]));
    }
}
