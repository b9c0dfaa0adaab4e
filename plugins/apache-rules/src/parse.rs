//! Apache configuration text → logical lines → words, as httpd reads its own files.
//!
//! Users paste directives verbatim from an Apache set-up, so lines and quotes must mean what they
//! mean to httpd: `ap_cfg_getline` joins a line ending in a single `\` with the next one and trims
//! the result; a line starting with `#` is a comment; `ap_getword_conf` splits arguments on
//! whitespace, where a word may be quoted with `"` or `'` and, inside quotes, only `\"` (resp. `\'`)
//! and `\\` are escapes — every other backslash is kept, so `"(([\d]{1,3}\.?){4})"` reaches the
//! regex compiler unchanged. Outside quotes only `\\` is an escape.
//!
//! One deliberate difference: httpd silently takes an unterminated quote to the end of the line;
//! here it is a configuration error, because it is always a typo.

/// One directive or section line, after continuation lines were joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the line's first physical line in the directives text.
    pub number: usize,
    /// The text, trimmed; never empty and never a comment.
    pub text: String,
}

/// `apr_isspace`: the C locale's white space.
pub fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Split the directives text into logical lines, dropping blank lines and `#` comments.
pub fn logical_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (number, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        // httpd: a line continues when it ends in `\` that is not itself escaped by a `\`.
        if raw.ends_with('\\') && !raw.ends_with("\\\\") {
            joined.push_str(raw.strip_suffix('\\').unwrap_or(raw));
            pending = Some((number, joined));
            continue;
        }
        joined.push_str(raw);
        push_line(&mut lines, number, &joined);
    }
    if let Some((number, joined)) = pending {
        push_line(&mut lines, number, &joined);
    }
    lines
}

fn push_line(lines: &mut Vec<Line>, number: usize, text: &str) {
    let text = text.trim_matches(is_space);
    if !text.is_empty() && !text.starts_with('#') {
        lines.push(Line { number, text: text.to_string() });
    }
}

/// Split a directive's arguments into words exactly as repeated `ap_getword_conf` calls do.
/// A quoted empty string (`""`) is a word of its own.
pub fn words(args: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = args.trim_start_matches(is_space);
    while !rest.is_empty() {
        let (word, after) = next_word(rest)?;
        out.push(word);
        rest = after.trim_start_matches(is_space);
    }
    Ok(out)
}

/// The first word of `s` (which starts with a non-space) and what follows it.
fn next_word(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('"' | '\''))) => q,
        _ => {
            let end = s.find(is_space).unwrap_or(s.len());
            let (word, after) = s.split_at(end);
            return Ok((unescape(word, None), after));
        }
    };
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            let body = s.get(1..i).unwrap_or_default();
            let after = s.get(i + 1..).unwrap_or_default();
            return Ok((unescape(body, Some(quote)), after));
        }
    }
    Err(format!("unterminated {quote} quote in `{s}`"))
}

/// httpd's `substring_conf`: `\\` and (inside quotes) `\<quote>` stand for the character itself.
fn unescape(s: &str, quote: Option<char>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && (next == '\\' || Some(next) == quote)
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_ap_getword_conf() {
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("  lead\ttab ", &["lead", "tab"]),
            (r#"X "(([\d]{1,3}\.?){4})" F=$1"#, &["X", r"(([\d]{1,3}\.?){4})", "F=$1"]),
            (r#""a b" 'c d'"#, &["a b", "c d"]),
            (r#""say \"hi\"""#, &[r#"say "hi""#]),
            (r#"'it\'s'"#, &["it's"]),
            (r#""back\\slash""#, &[r"back\slash"]),
            (r#""keep \n and \d""#, &[r"keep \n and \d"]),
            (r#""single ' inside""#, &["single ' inside"]),
            (r#"'double " inside'"#, &[r#"double " inside"#]),
            (r"un\\quoted un\quoted", &[r"un\quoted", r"un\quoted"]),
            (r#""" x"#, &["", "x"]),
            (r#""a"b"#, &["a", "b"]),
            ("%{REMOTE_ADDR}s", &["%{REMOTE_ADDR}s"]),
            ("", &[]),
        ];
        for (input, expected) in cases {
            assert_eq!(words(input).unwrap(), *expected, "input: {input}");
        }
    }

    #[test]
    fn an_unterminated_quote_is_an_error() {
        for input in [r#"set X "abc"#, "set X 'abc", r#"X "ends with \""#] {
            let err = words(input).unwrap_err();
            assert!(err.contains("unterminated"), "{input}: {err}");
        }
    }

    #[test]
    fn lines_skip_comments_and_blanks_and_join_continuations() {
        let text = "# comment\n\n  SetEnvIf A b C\r\n   # indented comment\nHeader set \\\n  X y\nlast \\\\\nnext";
        let got = logical_lines(text);
        let expected = vec![
            Line { number: 3, text: "SetEnvIf A b C".into() },
            Line { number: 5, text: "Header set   X y".into() },
            Line { number: 7, text: "last \\\\".into() },
            Line { number: 8, text: "next".into() },
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn a_continuation_on_the_last_line_is_kept() {
        assert_eq!(logical_lines("a \\"), vec![Line { number: 1, text: "a".into() }]);
    }
}
