//! mod_headers' value format strings (`parse_format_string` in `mod_headers.c`).
//!
//! A value is literal text with `%` tags, parsed once in `configure`:
//!
//! | tag | becomes |
//! | --- | --- |
//! | `%%`, or `%` at the very end | `%` |
//! | `%{VAR}e` | the environment variable (unset: `(null)`, as httpd prints it; see [`UNSET_ENV`]) |
//! | `%{REMOTE_ADDR}s` | the client address (a Fulcrum choice: httpd without mod_ssl prints `(null)`) |
//! | `%{HTTPS}s`, `%{SSL_PROTOCOL}s`, `%{SSL_CIPHER}s`, `%{SSL_TLS_SNI}s` | on a TLS connection, mod_ssl's values (`on`, `TLSv1.3`, `TLS_AES_256_GCM_SHA384`, the SNI name), which the host sets as the variables of those names; `(null)` on plain HTTP, as httpd without mod_ssl |
//! | `%{ANYTHING_ELSE}s` | `(null)`, as httpd without mod_ssl |
//! | `%{Name}i` | the request header, repeated lines joined with `, ` (Fulcrum extension, from mod_log_config) |
//! | `%{Name}o` | the response header, likewise (Fulcrum extension; `Header` only) |
//! | `%t` | `t=` and the request's start, microseconds since the epoch |
//! | `%D` | `D=` and the microseconds since the request started |
//!
//! In the literal text, as in httpd, `\\` is a backslash, `\t` a tab, and any other backslash is
//! kept as it is. httpd also turns `\n` and `\r` into line breaks, which would split the header:
//! here they are a configuration error, and so is a raw control character other than tab (a CR
//! inside a quoted word, a NUL), which no header value can hold. A line break that arrives in a
//! variable's value is turned into a space, as httpd does. Anything else after `%` (`%{X}q`, `%x`, an unterminated `%{`, and
//! httpd's `%l`, `%b` and brace-less `%i` load figures) is a configuration error.

use fulcrum_sdk::rules::RequestFields;

use crate::context::{Ctx, EnvRef};
use crate::needs::Reads;

/// What `%{VAR}e` gives for an unset variable. httpd's `header_request_env_var` returns `(null)`;
/// Fulcrum prints the same.
pub const UNSET_ENV: &str = "(null)";

/// What httpd prints for an SSL variable it cannot look up.
pub const NULL: &str = "(null)";

/// mod_ssl's variables that `%{NAME}s` reads: the host sets them (as environment variables of
/// those names) on requests that came over TLS.
const TLS_VARIABLES: [&str; 4] = ["HTTPS", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_TLS_SNI"];

/// Where a format string is used: `RequestHeader` values cannot read the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
    /// The length of the literal text: what a rendered value takes at least.
    literal_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Env(EnvRef),
    /// `%{REMOTE_ADDR}s`
    ClientAddr,
    /// Any other `%{X}s`
    Null,
    RequestHeader(String),
    ResponseHeader(String),
    Time,
    Duration,
}

impl Format {
    /// Parse `text` for use in `phase`; the error names the offending tag.
    pub fn parse(text: &str, phase: Phase) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let (tag, arg) = match chars.next() {
                        None | Some('%') => {
                            literal.push('%');
                            continue;
                        }
                        Some('{') => {
                            let mut arg = String::new();
                            loop {
                                match chars.next() {
                                    Some('}') => break,
                                    Some(ch) => arg.push(ch),
                                    None => return Err(format!("unterminated `%{{{arg}` in `{text}`")),
                                }
                            }
                            match chars.next() {
                                Some(tag) => (tag, Some(arg)),
                                None => {
                                    return Err(format!(
                                        "`%{{{arg}}}` needs a letter after it (e, s, i or o) in `{text}`"
                                    ));
                                }
                            }
                        }
                        Some(tag) => (tag, None),
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(tag_piece(tag, arg, phase).map_err(|(why, hint)| format!("{why} in `{text}`{hint}"))?);
                }
                '\\' => match chars.peek() {
                    Some('\\') => {
                        chars.next();
                        literal.push('\\');
                    }
                    Some('t') => {
                        chars.next();
                        literal.push('\t');
                    }
                    Some(e @ ('n' | 'r')) => {
                        return Err(format!("`\\{e}` would put a line break in the header, in `{text}`"));
                    }
                    _ => literal.push('\\'),
                },
                // A raw CR, NUL or other control character (a CR mid-line, inside quotes) would
                // make every header value built from this format invalid: refused here, once.
                c if c.is_ascii_control() && c != '\t' => {
                    return Err(format!(
                        "a control character ({}) in `{}` cannot be in a header value",
                        c.escape_debug(),
                        text.escape_debug()
                    ));
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        let literal_len = pieces.iter().map(|p| if let Piece::Text(t) = p { t.len() } else { 0 }).sum();
        Ok(Format { pieces, literal_len })
    }

    pub fn render(&self, ctx: &Ctx<'_>) -> String {
        let mut out = String::with_capacity(self.literal_len.saturating_add(32));
        self.render_into(ctx, &mut out);
        out
    }

    /// Append the value to `out` (a header action's value goes straight into the answer's
    /// values this way, without a `String` of its own). Reserves nothing: the answer's values
    /// are made as long as the last answer's (`fulcrum_sdk::rules::Outcome`), and reserving more
    /// here would make them grow, and be shrunk again when returned.
    pub fn render_into(&self, ctx: &Ctx<'_>, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Env(var) => push_unwrapped(out, ctx.env.get_ref(var).unwrap_or(UNSET_ENV)),
                Piece::ClientAddr if !ctx.request.client_addr.is_empty() => {
                    push_unwrapped(out, ctx.request.client_addr)
                }
                Piece::ClientAddr | Piece::Null => out.push_str(NULL),
                Piece::RequestHeader(name) => {
                    push_unwrapped(out, &ctx.request_headers.joined_cow(name).unwrap_or_default())
                }
                Piece::ResponseHeader(name) => {
                    let value = ctx.response_headers.and_then(|t| t.joined_cow(name)).unwrap_or_default();
                    push_unwrapped(out, &value)
                }
                Piece::Time => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "t={}", ctx.request.start_us);
                }
                Piece::Duration => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "D={}", ctx.request.now_us.saturating_sub(ctx.request.start_us));
                }
            }
        }
    }

    /// Record the request fields and headers this format reads.
    pub fn reads(&mut self, reads: &mut Reads) {
        for piece in &mut self.pieces {
            match piece {
                Piece::ClientAddr => reads.field(RequestFields::CLIENT_ADDR),
                Piece::RequestHeader(name) => reads.request_header(name),
                Piece::ResponseHeader(name) => reads.response_header(name),
                Piece::Env(var) => var.declare(reads),
                Piece::Text(_) | Piece::Null | Piece::Time | Piece::Duration => {}
            }
        }
    }
}

/// The piece for `%{arg}tag`, or why not and a hint to append after the offending text.
fn tag_piece(tag: char, arg: Option<String>, phase: Phase) -> Result<Piece, (String, &'static str)> {
    let named = |what: &str| match &arg {
        Some(name) if !name.is_empty() => Ok(name.clone()),
        _ => Err((format!("`%{tag}` needs {what}, as `%{{NAME}}{tag}`"), "")),
    };
    match tag {
        'e' => Ok(Piece::Env(EnvRef::new(named("a variable name")?))),
        's' => Ok(match arg {
            Some(name) if name.eq_ignore_ascii_case("REMOTE_ADDR") => Piece::ClientAddr,
            // The host sets these as variables on TLS connections (no WIT field needed).
            Some(name) if TLS_VARIABLES.iter().any(|v| name.eq_ignore_ascii_case(v)) => {
                Piece::Env(EnvRef::new(name.to_ascii_uppercase()))
            }
            _ => Piece::Null,
        }),
        'i' => Ok(Piece::RequestHeader(named("a request header name")?)),
        'o' if phase == Phase::Request => {
            Err(("`%{Name}o` reads a response header, which RequestHeader does not have".to_string(), ""))
        }
        'o' => Ok(Piece::ResponseHeader(named("a response header name")?)),
        't' => Ok(Piece::Time),
        'D' => Ok(Piece::Duration),
        'l' | 'b' => Err((format!("`%{tag}` (httpd's server load figures) is not supported"), "")),
        _ => Err((
            format!("unrecognized format `%{tag}`"),
            " (supported: %{VAR}e, %{VAR}s, %{Name}i, %{Name}o, %t, %D, %%)",
        )),
    }
}

/// httpd's `unwrap_header`: line breaks inside a value become spaces.
fn push_unwrapped(out: &mut String, value: &str) {
    // Values almost never hold one (a header value cannot; a variable's may), so look eight bytes
    // at a time first: a loop per byte costs a deadline check per byte in a Wasm plugin.
    if !has_line_break(value.as_bytes()) {
        out.push_str(value);
        return;
    }
    let mut rest = value;
    while let Some(at) = rest.bytes().position(|b| b == b'\r' || b == b'\n') {
        out.push_str(rest.get(..at).unwrap_or_default());
        out.push(' ');
        rest = rest.get(at + 1..).unwrap_or_default();
    }
    out.push_str(rest);
}

/// Whether `bytes` holds a CR or an LF (never inside a UTF-8 sequence: bytes are enough).
fn has_line_break(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `word` is zero: exact as a yes or no (a borrow only marks a byte
    // above one that is really zero).
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        if zero_byte(word ^ (ONES * u64::from(b'\r'))) || zero_byte(word ^ (ONES * u64::from(b'\n'))) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == b'\r' || b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Env, HeaderTable, Request};

    /// A CR or LF anywhere (in a whole word, in the tail, at every position) is found; bytes
    /// next to them in value (0x0B, 0x0C, 0x8A, 0x8D, 0x00) are not taken for them.
    #[test]
    fn line_breaks_are_found_wherever_they_are() {
        for len in 0..20 {
            for fill in [b'a', 0x0b, 0x0c, 0x8a, 0x8d, 0x00, 0xff] {
                let plain = vec![fill; len];
                assert!(!has_line_break(&plain), "{len} x {fill:#x}");
                for at in 0..len {
                    for brk in [b'\r', b'\n'] {
                        let mut with = plain.clone();
                        with[at] = brk;
                        assert!(has_line_break(&with), "{len} x {fill:#x}, {brk:#x} at {at}");
                    }
                }
            }
        }
    }

    fn render(format: &str, client_addr: &str) -> String {
        let request = Request {
            method: "GET",
            path: "/",
            client_addr,
            start_us: 1700000000000000,
            now_us: 1700000000001234,
            ..Request::default()
        };
        let request_lines = [("x-a".into(), "1".into()), ("x-a".into(), "2".into())];
        let vars = [("FORWARD_IP".into(), "1.2.3.4".into()), ("MULTI".into(), "a\r\nb".into())];
        let env = Env::new(&vars);
        let request_headers = HeaderTable::new(&request_lines);
        let response_lines = [("set-cookie".into(), "c=1".into())];
        let response_headers = HeaderTable::new(&response_lines);
        let ctx =
            Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&response_headers) };
        Format::parse(format, Phase::Response).unwrap_or_else(|e| panic!("{format}: {e}")).render(&ctx)
    }

    #[test]
    fn formats_render_as_mod_headers() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain text", "127.0.0.1", "plain text"),
            ("%{FORWARD_IP}e", "127.0.0.1", "1.2.3.4"),
            ("ip=%{forward_ip}e;", "127.0.0.1", "ip=1.2.3.4;"),
            ("[%{UNSET}e]", "127.0.0.1", "[(null)]"),
            ("%{MULTI}e", "127.0.0.1", "a  b"),
            ("%{REMOTE_ADDR}s", "127.0.0.1", "127.0.0.1"),
            ("%{remote_addr}s", "::1", "::1"),
            ("%{REMOTE_ADDR}s", "", "(null)"),
            ("%{SSL_PROTOCOL}s", "127.0.0.1", "(null)"),
            ("%{HTTPS}s", "127.0.0.1", "(null)"),
            ("%{SSL_CLIENT_S_DN}s", "127.0.0.1", "(null)"),
            ("%{X-A}i|%{x-b}i|%{Set-Cookie}o", "127.0.0.1", "1, 2||c=1"),
            ("%t %D", "127.0.0.1", "t=1700000000000000 D=1234"),
            ("%{ignored}t", "127.0.0.1", "t=1700000000000000"),
            ("100%% sure %", "127.0.0.1", "100% sure %"),
            (r"a\\b\tc\d", "127.0.0.1", "a\\b\tc\\d"),
            ("BALANCEID=balancer.%{FORWARD_IP}e; path=/;", "127.0.0.1", "BALANCEID=balancer.1.2.3.4; path=/;"),
        ];
        for (format, client, expected) in cases {
            assert_eq!(render(format, client), *expected, "{format}");
        }
    }

    #[test]
    fn bad_formats_are_refused() {
        let cases: &[(&str, Phase, &str)] = &[
            ("%{X}q", Phase::Response, "unrecognized format `%q`"),
            ("%x", Phase::Response, "unrecognized format `%x`"),
            ("a %{X", Phase::Response, "unterminated `%{X`"),
            ("%{X}", Phase::Response, "needs a letter"),
            ("%e", Phase::Response, "`%e` needs a variable name"),
            ("%{}i", Phase::Response, "`%i` needs a request header name"),
            ("%{X}o", Phase::Request, "RequestHeader"),
            ("%l", Phase::Response, "not supported"),
            (r"a\nb", Phase::Response, "line break"),
        ];
        for (format, phase, needle) in cases {
            let err = Format::parse(format, *phase).unwrap_err();
            assert!(err.contains(needle) && err.contains(format), "{format}: {err}");
        }
    }

    /// mod_ssl's variables come from the host's variables of the same names, set on TLS.
    #[test]
    fn tls_variables_render_the_hosts_values() {
        let request = Request { method: "GET", path: "/", client_addr: "10.0.0.1", ..Request::default() };
        let vars = [("HTTPS".into(), "on".into()), ("SSL_PROTOCOL".into(), "TLSv1.3".into())];
        let env = Env::new(&vars);
        let headers = HeaderTable::new(&[]);
        let ctx = Ctx { request, env: &env, request_headers: &headers, response_headers: None };
        let mut format = Format::parse("%{HTTPS}s %{ssl_protocol}s %{SSL_CIPHER}s", Phase::Request).unwrap();
        assert_eq!(format.render(&ctx), "on TLSv1.3 (null)");
        let mut reads = Reads::default();
        format.reads(&mut reads);
        assert_eq!(reads.into_needs().env_vars(), ["HTTPS", "SSL_PROTOCOL", "SSL_CIPHER"]);
    }

    #[test]
    fn reads_are_declared() {
        let mut reads = Reads::default();
        Format::parse("%{REMOTE_ADDR}s %{X-A}i %{B}o %{E}e %{OTHER}s", Phase::Response).unwrap().reads(&mut reads);
        let needs = reads.into_needs();
        assert_eq!(needs.fields(), RequestFields::CLIENT_ADDR);
        assert_eq!(needs.env_vars(), ["E"]);
        assert_eq!(needs.request_headers(), ["x-a"]);
        assert_eq!(needs.response_headers(), ["b"]);
    }
}
