//! Splitting a command line into words, as a POSIX shell does for the simple cases: whitespace
//! separates words, single quotes keep everything literal, double quotes keep spaces and allow
//! `\"` and `\\`, a backslash outside quotes escapes the next character. No expansion of any kind.

/// The words of `line`, or why it cannot be split (an unclosed quote, a trailing backslash).
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_words(r#"  qemu-system-x86_64 -M none  -name 'my vm' -x "a \"b\" c" d\ e ''"#)
                .unwrap(),
            [
                "qemu-system-x86_64",
                "-M",
                "none",
                "-name",
                "my vm",
                "-x",
                "a \"b\" c",
                "d e",
                ""
            ]
        );
        assert!(split_words("").unwrap().is_empty());
    }

    #[test]
    fn unclosed_quotes_are_errors() {
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a \"b").is_err());
        assert!(split_words("a \\").is_err());
    }
}
