//! Regular expressions as httpd uses them (PCRE through `ap_pregcomp`), on the Rust `regex` crate.
//!
//! httpd compiles patterns with PCRE in byte mode (no UTF-8 flag): `\d`, `\w`, `\s` and `\b` are
//! ASCII-only, `.` matches any byte but `\n`, and case-insensitive matching folds ASCII letters
//! only. [`compile`] asks the same of the `regex` crate (`regex::bytes` with Unicode mode off), so
//! `[\d]` matches `1` but not `١`, exactly as in Apache. Matching is leftmost-first with greedy
//! and lazy repetition preferring what PCRE prefers, so captures agree with PCRE.
//!
//! Where the `regex` crate differs from PCRE, and what happens then:
//! - no backreferences (`\1`), look-around (`(?=`, `(?!`, `(?<=`, `(?<!`), atomic groups,
//!   possessive quantifiers, recursion, conditionals, `\Q…\E`, `\K`, `\h`, `\R` or `\Z`: such a
//!   pattern does not compile, which is a configuration error naming the pattern;
//! - `$` matches only at the very end (PCRE also before a final `\n`; header values have none);
//! - `x{` and `{,n}`, literal text to PCRE, are syntax errors (write `x\{`);
//! - every match runs in linear time, so no pattern can make a request slow (PCRE can backtrack
//!   exponentially).
//!
//! [`pregsub`] is httpd's `ap_pregsub`: the substitution used by `SetEnvIf` values and `Header edit`.

use regex::bytes::{CaptureLocations, Captures, Regex, RegexBuilder};

/// Compiled programs bigger than this are refused (the default is 10 MiB; a plugin instance's
/// memory is better spent elsewhere, and no sensible header rule comes close).
const SIZE_LIMIT: usize = 2 << 20;

/// Compile `pattern` as httpd would (`AP_REG_EXTENDED`, plus `AP_REG_ICASE` when `icase`).
/// The error is a one-line message naming the pattern.
pub fn compile(pattern: &str, icase: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(icase)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| describe(pattern, &e))
}

fn describe(pattern: &str, error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => {
            // The crate's message is several lines (the pattern, a caret line, `error: why`).
            let why = text.lines().rev().find_map(|l| l.trim().strip_prefix("error: ")).unwrap_or(text.trim());
            let hint = if why.contains("backreference") || why.contains("look-around") {
                " (Fulcrum's regex engine has no backreferences or look-around, unlike PCRE)"
            } else {
                ""
            };
            format!("bad regex `{pattern}`: {why}{hint}")
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("regex `{pattern}` is too big (its compiled form exceeds {limit} bytes)")
        }
        other => format!("bad regex `{pattern}`: {other}"),
    }
}

/// httpd's `ap_pregsub`: in `template`, `$0`…`$9` become the text of that capture group (empty
/// when the group did not take part or does not exist), and a backslash makes the next character
/// literal (`\$1` is `$1`). A `$` not followed by a digit, and a final lone `\`, are literal.
pub fn pregsub(template: &str, caps: &Captures<'_>) -> String {
    // A byte-mode capture can end inside a multi-byte character; httpd would copy the raw bytes.
    into_text(pregsub_bytes(template, caps))
}

/// [`pregsub`] without the final conversion to text, for callers that splice bytes.
pub fn pregsub_bytes(template: &str, caps: &Captures<'_>) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(template.len());
    pregsub_into(template, |group| caps.get(group).map(|m| m.as_bytes()), &mut out);
    out
}

/// [`pregsub`] over capture locations (reused between matches: no allocation for the captures),
/// `haystack` being the text they index.
pub fn pregsub_locations(template: &str, locations: &CaptureLocations, haystack: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(template.len() + haystack.len());
    pregsub_into(template, |group| locations.get(group).and_then(|(start, end)| haystack.get(start..end)), &mut out);
    into_text(out)
}

/// [`pregsub`] for a match whose groups `template` may refer to are `$0` and `$1`, `$1` being the
/// whole match too (see [`groups_are_the_match`]): the match bounds are enough, no captures.
pub fn pregsub_match(template: &str, matched: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(template.len() + matched.len());
    pregsub_into(template, |group| (group <= 1).then_some(matched), &mut out);
    into_text(out)
}

/// Whether every group `template` refers to is the whole match of `pattern` (compiled with
/// `icase`): `$0`, and `$1` when the pattern is one group, as the guide's `(([\d]{1,3}\.?){4})`.
/// Then finding the match is enough, which is much cheaper than finding its groups.
pub fn groups_are_the_match(pattern: &str, icase: bool, template: &str) -> bool {
    let mut highest = 0;
    pregsub_into(
        template,
        |group| {
            highest = highest.max(group);
            None
        },
        &mut Vec::new(),
    );
    match highest {
        0 => true,
        1 => regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .case_insensitive(icase)
            .build()
            .parse(pattern)
            .is_ok_and(|hir| matches!(hir.kind(), regex_syntax::hir::HirKind::Capture(c) if c.index == 1)),
        _ => false,
    }
}

/// The result of [`pregsub`] when `template` refers to no capture group (it is the same for every
/// match), or `None` when it does.
pub fn pregsub_constant(template: &str) -> Option<String> {
    let mut out = Vec::with_capacity(template.len());
    let mut uses_groups = false;
    pregsub_into(
        template,
        |_| {
            uses_groups = true;
            None
        },
        &mut out,
    );
    (!uses_groups).then(|| into_text(out))
}

/// Bytes as text, invalid UTF-8 replaced (`String::from_utf8_lossy`) without copying valid text.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The substitution itself: `group(n)` is the text of capture group `n`, if it took part.
fn pregsub_into<'h>(template: &str, mut group: impl FnMut(usize) -> Option<&'h [u8]>, out: &mut Vec<u8>) {
    let bytes = template.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        i += 1;
        match (c, bytes.get(i)) {
            (b'$', Some(&d)) if d.is_ascii_digit() => {
                i += 1;
                if let Some(text) = group(usize::from(d - b'0')) {
                    out.extend_from_slice(text);
                }
            }
            (b'\\', Some(&next)) => {
                i += 1;
                out.push(next);
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(pattern: &str, icase: bool, haystack: &str, template: &str) -> Option<String> {
        let re = compile(pattern, icase).unwrap();
        re.captures(haystack.as_bytes()).map(|caps| pregsub(template, &caps))
    }

    #[test]
    fn captures_and_substitution_match_pcre() {
        let guide = r"(([\d]{1,3}\.?){4})";
        let cases: &[(&str, bool, &str, &str, Option<&str>)] = &[
            (guide, false, "1.2.3.4", "$1", Some("1.2.3.4")),
            (guide, false, "1.2.3.4.5", "$1", Some("1.2.3.4.")),
            (guide, false, "2001:db8::1", "$1", Some("2001")),
            (guide, false, "unknown, 10.0.0.1", "$1", Some("10.0.0.1")),
            (guide, false, "12345678", "$1", Some("12345678")),
            (guide, false, "1.2.3", "$1", None),
            (guide, false, "١٢٣.١.١.١", "$1", None), // PCRE's \d is ASCII-only
            ("(a)(b)?", false, "a", "[$1|$2|$9|$0]", Some("[a|||a]")),
            ("(a)", false, "a", r"\$1 costs $$ \\ $x \", Some(r"$1 costs $$ \ $x \")),
            ("mozilla", true, "Mozilla/5.0", "$0", Some("Mozilla")),
            ("mozilla", false, "Mozilla/5.0", "$0", None),
            ("(.)", false, "é", "$1", Some("\u{fffd}")),
        ];
        for (pattern, icase, haystack, template, expected) in cases {
            assert_eq!(
                sub(pattern, *icase, haystack, template).as_deref(),
                *expected,
                "{pattern} on {haystack} -> {template}"
            );
        }
    }

    #[test]
    fn pcre_only_syntax_is_a_one_line_error() {
        let cases: &[(&str, &str)] = &[
            (r"(a)\1", "backreferences are not supported"),
            ("a(?=b)", "look-around"),
            ("(unclosed", "unclosed group"),
        ];
        for (pattern, needle) in cases {
            let err = compile(pattern, false).unwrap_err();
            assert!(err.contains(needle) && err.contains(pattern) && !err.contains('\n'), "{pattern}: {err}");
        }
        assert!(compile(r"(a)\1", false).unwrap_err().contains("unlike PCRE"));
    }

    #[test]
    fn whole_match_groups_need_no_captures() {
        let guide = r"(([\d]{1,3}\.?){4})";
        let cases: &[(&str, &str, bool)] = &[
            (guide, "$1", true),
            (guide, "ip=$0/$1", true),
            (guide, "$2", false),
            (guide, r"\$2 $1", true),
            ("(a)(b)", "$1", false),
            ("(a)|b", "$1", false),
            ("(?:a)", "$1", false),
            ("a", "$0", true),
            ("a", "$1", false),
        ];
        for (pattern, template, expected) in cases {
            assert_eq!(groups_are_the_match(pattern, false, template), *expected, "{pattern} {template}");
            if *expected {
                // The shortcut and the captures agree.
                let re = compile(pattern, false).unwrap();
                for haystack in ["1.2.3.4", "x 10.0.0.1, 2.2.2.2", "12345678", "a", "ba"] {
                    let caps = re.captures(haystack.as_bytes());
                    let found = re.find(haystack.as_bytes());
                    assert_eq!(
                        caps.map(|c| pregsub(template, &c)),
                        found.map(|m| pregsub_match(template, m.as_bytes())),
                        "{pattern} {template} {haystack}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_ascii_literals_still_match() {
        assert_eq!(sub("é+", false, "caféé", "$0").as_deref(), Some("éé"));
    }
}
