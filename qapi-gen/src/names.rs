//! QAPI names in Rust case: types as they are, commands, events and enum values in UpperCamelCase,
//! members in snake_case, keywords escaped.

/// Rust's keywords (2021 edition, reserved ones included).
const KEYWORDS: [&str; 52] = [
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// UpperCamelCase of a dash/underscore/dot-separated name: `query-cpus-fast` → `QueryCpusFast`,
/// `JOB_STATUS_CHANGE` → `JobStatusChange`, `2_5` → `_2_5`.
pub fn camel(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['-', '_', '.']).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        // Digits on both sides of a separator stay apart: `2_5` is not `25`.
        if out.ends_with(|c: char| c.is_ascii_digit())
            && lower.starts_with(|c: char| c.is_ascii_digit())
        {
            out.push('_');
        }
        let mut chars = lower.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// snake_case of a member name, keywords escaped: `node-name` → `node_name`, `type` →
/// `r#type`, `cpuMax` → `cpu_max`.
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        match c {
            '-' | '.' | '_' => {
                out.push('_');
                prev_lower = false;
            }
            c if c.is_ascii_uppercase() => {
                if prev_lower {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
                prev_lower = false;
            }
            c => {
                out.push(c);
                prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            }
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    escape(out)
}

/// Names of Rust's prelude that a glob import of the generated module must not shadow.
const PRELUDE: [&str; 9] = [
    "String", "Option", "Result", "Box", "Vec", "Some", "None", "Ok", "Err",
];

/// A QAPI type name as a Rust type name (QAPI's are CamelCase already); one that is a name of
/// Rust's prelude gets a `Qapi` prefix (QAPI's struct `String` is `QapiString`).
pub fn type_name(name: &str) -> String {
    if PRELUDE.contains(&name) {
        return format!("Qapi{name}");
    }
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if let Some(first) = out.get(..1) {
        let upper = first.to_ascii_uppercase();
        out.replace_range(..1, &upper);
    }
    out
}

/// A QAPI module name as a Rust module name: `block-core` → `block_core`.
pub fn module(name: &str) -> String {
    escape(name.replace('-', "_"))
}

fn escape(s: String) -> String {
    match s.as_str() {
        "self" | "Self" | "super" | "crate" | "_" => format!("{s}_"),
        k if KEYWORDS.contains(&k) => format!("r#{s}"),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert_eq!(camel("query-cpus-fast"), "QueryCpusFast");
        assert_eq!(camel("JOB_STATUS_CHANGE"), "JobStatusChange");
        assert_eq!(camel("qmp_capabilities"), "QmpCapabilities");
        assert_eq!(camel("null-co"), "NullCo");
        assert_eq!(camel("2_5"), "_2_5");
        assert_eq!(camel("3des"), "_3des");
        assert_eq!(camel("x86_64"), "X86_64");
        assert_eq!(snake("node-name"), "node_name");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("self"), "self_");
        assert_eq!(snake("cpuMax"), "cpu_max");
        assert_eq!(snake("CPU"), "cpu");
        assert_eq!(snake("x-foo_bar"), "x_foo_bar");
        assert_eq!(type_name("ACPIOSTInfo"), "ACPIOSTInfo");
        assert_eq!(module("block-core"), "block_core");
        assert_eq!(type_name("String"), "QapiString");
    }
}
