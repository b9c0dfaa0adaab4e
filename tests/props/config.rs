//! The configuration loader (`Config::parse`) on arbitrary text and on structured mutations of
//! the guide's configuration: it never panics, and every error names the file and, wherever the
//! text has a place for the problem, its `path:line:col`.

use std::path::Path;

use fulcrum::config::{Config, ConfigError};
use proptest::prelude::*;
use toml::{Table, Value};

use crate::support::{config, noise, pick};

const GUIDE: &str = include_str!("../../examples/apache-guide.toml");

/// The problems that have no place in the text: what is missing from the top level.
const ABSENT: &[&str] = &["no address to listen on", "no virtual host"];

const TOML_CHARS: &[char] = &[
    '[', ']', '{', '}', '=', '"', '\'', '.', ',', '#', '\n', '\r', ' ', '\t', '\\', '0', '1', '9', '-', '+', ':', 'a',
    'e', 'l', 'n', 't', 'x', '_', 'é', '\0', '\u{7f}', '\u{feff}',
];

/// Every check made on an error: it names `file`, every problem has a line and column inside the
/// text (but a missing `listen` or `[[vhost]]`), and the message shows them as `file:line:col`.
fn check_error(text: &str, file: &Path, e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(&e.file, file);
    prop_assert!(!e.problems.is_empty(), "an error without problems");
    let shown = e.to_string();
    let name = file.display().to_string();
    prop_assert!(shown.starts_with(&name), "{shown:?} does not start with {name:?}");
    let lines: Vec<&str> = text.split('\n').collect();
    for p in &e.problems {
        // Known, reported: a_datetime_where_a_table_belongs_is_located_and_named.
        if p.key.as_deref().is_some_and(|k| k.contains("$__toml_private_datetime")) {
            continue;
        }
        match p.location {
            Some(loc) => {
                prop_assert!(loc.line >= 1 && loc.line <= lines.len(), "line {} of {}: {shown}", loc.line, lines.len());
                let width = lines[loc.line - 1].len();
                prop_assert!(loc.column >= 1 && loc.column <= width + 1, "column {} of {width}: {shown}", loc.column);
                let at = format!("{name}:{}:{}: ", loc.line, loc.column);
                prop_assert!(shown.contains(&at), "{shown:?} lacks {at:?}");
            }
            None => prop_assert!(
                ABSENT.iter().any(|m| p.message.starts_with(m)),
                "a problem without a place: {p:?}\n{text}"
            ),
        }
    }
    Ok(())
}

fn file_name() -> impl Strategy<Value = String> {
    pick(&["fulcrum.toml", "/etc/fulcrum/fulcrum.toml", "conf dir/é.toml", "a:1:2.toml"])
}

// ---- structured mutations ------------------------------------------------------------------

/// A step in a TOML document: a table key or an array index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every value's path in `table` (tables and arrays too, not only leaves).
fn paths(table: &Table) -> Vec<Vec<Step>> {
    fn walk(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(at.clone());
        match value {
            Value::Table(t) => {
                for (k, v) in t {
                    at.push(Step::Key(k.clone()));
                    walk(v, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    at.push(Step::Index(i));
                    walk(v, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&Value::Table(table.clone()), &mut Vec::new(), &mut out);
    out.remove(0); // the root itself
    out
}

fn get_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |v, step| match (v, step) {
        (Value::Table(t), Step::Key(k)) => t.get_mut(k),
        (Value::Array(a), Step::Index(i)) => a.get_mut(*i),
        _ => None,
    })
}

/// Keys that the guide does not use, with the tables that take them.
const OTHER_KEYS: &[(&str, &str)] = &[
    ("", "admin_listen"),
    ("", "plugins_dir"),
    ("", "plugin_cache_dir"),
    ("", "plugin_cache_max_mib"),
    ("", "plugins"),
    ("vhost.0", "server_alias"),
    ("vhost.0", "proxy_pass_match"),
    ("vhost.0", "rules"),
    ("vhost.0.rules.0", "directives"),
    ("vhost.0.rules.0", "plugin"),
    ("vhost.0.proxy_pass.0", "to"),
    ("balancer.default", "lbmethod_config"),
    ("balancer.default", "timeout"),
    ("balancer.default", "fallback"),
    ("balancer.default", "stickysessionsep"),
    ("balancer.default", "scolonpathdelim"),
    ("balancer.default", "nofailover"),
    ("balancer.default", "maxattempts"),
    ("balancer.default", "forcerecovery"),
    ("balancer.default.member.0", "loadfactor"),
    ("balancer.default.member.1", "lbset"),
    ("balancer.default.member.0", "status"),
    ("balancer.default.member.1", "redirect"),
    ("balancer", "spare"),
    ("balancer.default.member", "2"),
    ("", "unknown_key"),
];

/// A random value of a random type, biased to what the loader checks.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        pick(&[
            "",
            "!",
            "/",
            "balancer://default/",
            "balancer://nope/",
            "http://127.0.0.1:18001",
            "http//127.0.0.1:1",
            "http://[::1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "[::1]:8080",
            "byrequests",
            "nope",
            "+H",
            "DSIHNR",
            "+Z",
            "web1",
            "combined",
            "%h %{X}q",
            "%",
            "(^/script.php)",
            "(",
            "SetEnvIf X (",
            ".",
            "..",
            "|",
            "a|b|c",
            "-",
        ])
        .prop_map(Value::String),
        noise(TOML_CHARS, 12).prop_map(Value::String),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(100),
            Just(101),
            Just(65_536),
            Just(1 << 40),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(Value::Integer),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(0.5), Just(1e300)].prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((pick(&["url", "path", "to", "x", "route", ""]), inner), 0..3)
                .prop_map(|kv| Value::Table(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Remove the value at the n-th path.
    Drop(usize),
    /// Replace the value at the n-th path.
    Retype(usize, Value),
    /// Add one of [`OTHER_KEYS`] with a value.
    Insert(usize, Value),
    /// Duplicate, drop or swap physical lines of the text (after the tree mutations).
    DuplicateLine(usize),
    DropLine(usize),
    /// Replace what follows the `=` of a `key = value` line with raw text.
    RawValue(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<usize>().prop_map(Mutation::Drop),
        4 => (any::<usize>(), value()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        3 => (any::<usize>(), value()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => any::<usize>().prop_map(Mutation::DropLine),
        2 => (any::<usize>(), prop_oneof![
            pick(&["", "\"", "'''", "[", "{", "1e", "0x", "tru", "\"a\" \"b\"", "[1,", "{ a = 1", "nan", "1979-13-40"]),
            noise(TOML_CHARS, 8),
        ]).prop_map(|(i, s)| Mutation::RawValue(i, s)),
    ]
}

/// Apply the tree mutations to the guide's table, render it, then apply the text mutations.
fn mutate(mutations: &[Mutation]) -> String {
    let mut root = Value::Table(GUIDE.parse::<Table>().expect("the guide is TOML"));
    for m in mutations {
        let Value::Table(table) = &root else { unreachable!() };
        let all = paths(table);
        match m {
            Mutation::Drop(i) if !all.is_empty() => {
                let path = &all[i % all.len()];
                let (last, parent) = path.split_last().expect("non-empty path");
                match (get_mut(&mut root, parent), last) {
                    (Some(Value::Table(t)), Step::Key(k)) => {
                        t.remove(k);
                    }
                    (Some(Value::Array(a)), Step::Index(i)) => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
            Mutation::Retype(i, v) if !all.is_empty() => {
                if let Some(slot) = get_mut(&mut root, &all[i % all.len()]) {
                    *slot = v.clone();
                }
            }
            Mutation::Insert(i, v) => {
                let (table, key) = OTHER_KEYS[i % OTHER_KEYS.len()];
                let path: Vec<Step> = table
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map(Step::Index).unwrap_or_else(|_| Step::Key(s.to_string())))
                    .collect();
                match (get_mut(&mut root, &path), key.parse::<usize>()) {
                    (Some(Value::Table(t)), _) => {
                        t.insert(key.to_string(), v.clone());
                    }
                    (Some(Value::Array(a)), Ok(_)) => a.push(v.clone()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let Value::Table(table) = root else { unreachable!() };
    let mut text = toml::to_string(&table).unwrap_or_else(|_| GUIDE.to_string());
    for m in mutations {
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        let n = lines.len();
        match m {
            Mutation::DuplicateLine(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::DropLine(i) => {
                lines.remove(i % n);
            }
            Mutation::RawValue(i, raw) => {
                let with_value: Vec<usize> = (0..n).filter(|&j| lines[j].contains(" = ")).collect();
                if !with_value.is_empty() {
                    let j = with_value[i % with_value.len()];
                    let key = lines[j].split(" = ").next().unwrap_or_default().to_string();
                    lines[j] = format!("{key} = {raw}");
                }
            }
            _ => continue,
        }
        text = lines.join("\n");
    }
    text
}

#[test]
fn the_guide_parses_and_survives_a_round_trip() {
    let file = Path::new("examples/apache-guide.toml");
    Config::parse(GUIDE, file).expect("the guide as written");
    Config::parse(&mutate(&[]), file).expect("the guide rendered by the toml crate");
}

/// Where a retyped value sits in the text, the error points at it.
#[test]
fn a_wrong_type_is_reported_at_its_line() {
    let text = GUIDE.replacen("proxy_timeout = 5", "proxy_timeout = \"5\"", 1);
    let file = Path::new("guide.toml");
    let e = Config::parse(&text, file).expect_err("a string timeout");
    let line = text.lines().position(|l| l.starts_with("proxy_timeout")).unwrap() + 1;
    assert!(e.to_string().starts_with(&format!("guide.toml:{line}:")), "{e}");
}

/// `stickysession = "COOKIE|"` or `"|param"`: httpd takes an empty cookie name as no stickiness
/// at all and an empty URL parameter name as matching the URI's first `=`; Fulcrum instead uses
/// the other half alone. Neither makes sense, so the loader should refuse an empty half.
#[test]
fn an_empty_half_of_stickysession_is_refused() {
    for spec in ["BALANCEID|", "|balanceid", "|"] {
        let text = GUIDE.replace("stickysession = \"BALANCEID\"", &format!("stickysession = \"{spec}\""));
        assert!(Config::parse(&text, Path::new("guide.toml")).is_err(), "accepted stickysession = {spec:?}");
    }
}

/// A datetime where a table of settings belongs: the problem is shown as an unknown key named
/// after the toml crate's internal field, without a line.
#[test]
fn a_datetime_where_a_table_belongs_is_located_and_named() {
    for text in [
        "listen = [\"127.0.0.1:0\"]\n[plugins]\nx = 1979-05-27T07:32:00Z\n",
        "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"a\"\nrules = [1979-05-27T07:32:00Z]\n",
    ] {
        let e = Config::parse(text, Path::new("f.toml")).expect_err("a datetime is no table");
        let shown = e.to_string();
        assert!(!shown.contains("$__toml_private"), "{shown}");
        assert!(shown.contains("f.toml:3:") || shown.contains("f.toml:4:"), "{shown}");
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in noise(TOML_CHARS, 80), file in file_name()) {
        let file = Path::new(&file);
        if let Err(e) = Config::parse(&text, file) {
            check_error(&text, file, &e)?;
        }
    }

    #[test]
    fn any_string_never_panics(text in any::<String>()) {
        let file = Path::new("any.toml");
        if let Err(e) = Config::parse(&text, file) {
            check_error(&text, file, &e)?;
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// The guide with keys dropped, retyped, added, duplicated, and values replaced by raw text.
    #[test]
    fn mutated_guide_never_panics_and_locates_errors(
        mutations in proptest::collection::vec(mutation(), 1..4),
        file in file_name(),
    ) {
        let text = mutate(&mutations);
        let file = Path::new(&file);
        if let Err(e) = Config::parse(&text, file) {
            check_error(&text, file, &e)?;
        }
    }
}
