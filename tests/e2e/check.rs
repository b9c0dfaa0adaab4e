//! `fulcrum check`: a good configuration is described, a bad one is refused with every problem
//! and its line.

use crate::support::*;

#[test]
fn the_guide_example_checks_clean() {
    let root = repo_root();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", "examples/apache-guide.toml"], Some(&root));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("balancer default lbmethod=byrequests"), "{out}");
    assert!(out.contains("member http://127.0.0.1:18001 route=web1 loadfactor=1"), "{out}");
    assert!(out.contains("proxy_pass /balancer-manager !"), "{out}");
}

#[test]
fn a_bad_config_names_each_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"listen = ["127.0.0.1:0"]

[[vhost]]
server_name = "www.example.com"
proxy_pass = [{ path = "/", to = "balancer://default/" }]

[balancer.default]
lbmethod = "byrequests"

[[balancer.default.member]]
url = "http://127.0.0.1:18001"
lbfactor = 2

[[balancer.default.member]]
url = "http//127.0.0.1:18002"

[balancer.spare]
lbmethod = "byrequests"
"#,
    )
    .unwrap();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}:12:1: `balancer.default.member[0].lbfactor`: unknown key"),
        format!("{file}:15:7: `balancer.default.member[1].url`: bad member URL `http//127.0.0.1:18002`"),
        format!("{file}:17:1: `balancer.spare`: balancer `spare` has no members"),
    ] {
        assert!(err.contains(&expected), "expected `{expected}` in:\n{err}");
    }
}

#[test]
fn an_unknown_lbmethod_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let config = balancer_config(&[("http://127.0.0.1:1", "web1", 1)], "lbmethod = \"roundrobin\"", "");
    std::fs::write(&path, &config).unwrap();
    let (code, _, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    let expected = format!(
        "{}:{}: `balancer.default.lbmethod`: no plugin named `roundrobin` (known: ",
        path.display(),
        line_col(&config, config.find("\"roundrobin\"").unwrap())
    );
    assert!(err.contains(&expected), "expected `{expected}` in:\n{err}");
}

/// A bad rule fails `fulcrum check` with the file line of the rule inside the directives block.
#[test]
fn a_bad_rule_names_its_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    let config = balancer_config(&[("http://127.0.0.1:1", "web1", 1)], "", "");
    let config = config.replacen(
        "[balancer.default]",
        "[[vhost.rules]]\ndirectives = '''\nSetEnvIf X-Forwarded-For \"(([\\d]{1,3}\\.?){4})\" FORWARD_IP=$1\nRequestHeader sett X-A 1\n'''\n\n[balancer.default]",
        1,
    );
    std::fs::write(&path, &config).unwrap();
    let line = config.lines().position(|l| l.starts_with("RequestHeader sett")).unwrap() + 1;
    let (code, _, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    let expected = format!("{}:{line}:1: `vhost[0].rules[0]`: plugin `apache-rules`: line 2:", path.display());
    assert!(err.contains(&expected), "expected `{expected}` in:\n{err}");
    assert!(err.contains("sett"), "{err}");
}

#[test]
fn a_bad_admin_listen_address_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    let config = balancer_config(&[("http://127.0.0.1:1", "web1", 1)], "", "admin_listen = \"localhost\"");
    std::fs::write(&path, config).unwrap();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    let expected = format!(
        "{}:2:16: `admin_listen`: `localhost` is not an IP address with a port (like 127.0.0.1:9901)",
        path.display()
    );
    assert!(err.contains(&expected), "expected `{expected}` in:\n{err}");
}

/// `line:column` of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
    format!("{line}:{column}")
}

/// Check `config` (written to `NAME.toml` in `dir`): (exit code, stderr, the file's path).
fn check_file(dir: &std::path::Path, name: &str, config: &str) -> (i32, String, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert!(out.is_empty() || code == 0, "a refused config printed its set-up:\n{out}");
    (code, err, path.display().to_string())
}

/// Configs that `check` passed although `run` could not work with them (every request a 502, a
/// socket that cannot be bound twice) or would fail at start: refused, every problem at once, each
/// at its file:line:column and key. Table: the config's extra top-level and balancer lines, then
/// each expected problem as (the text right before its value, its key, its message).
#[test]
fn configs_that_cannot_work_are_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let not_a_dir = not_a_dir.display().to_string();
    let missing = dir.path().join("no-such-folder").display().to_string();
    type Case = (&'static str, String, &'static str, Vec<(&'static str, &'static str, String)>);
    let cases: Vec<Case> = vec![
        (
            "zero timeouts",
            "proxy_timeout = 0".into(),
            "timeout = 0",
            vec![
                ("proxy_timeout = ", "proxy_timeout", "must be at least 1 second".into()),
                ("\ntimeout = ", "balancer.default.timeout", "must be at least 1 second".into()),
            ],
        ),
        (
            "zero member timeouts",
            String::new(),
            "",
            vec![
                ("\ntimeout = ", "balancer.default.member[0].timeout", "must be at least 1 second".into()),
                (
                    "connectiontimeout = ",
                    "balancer.default.member[0].connectiontimeout",
                    "must be at least 1 second".into(),
                ),
            ],
        ),
        (
            "the same socket twice",
            "listen = [\"127.0.0.1:80\", \"127.0.0.1:080\"]\nadmin_listen = \"127.0.0.1:80\"".into(),
            "",
            vec![
                ("\"127.0.0.1:80\", ", "listen[1]", "127.0.0.1:80 is already `listen[0]` (line 1)".into()),
                ("admin_listen = ", "admin_listen", "127.0.0.1:80 is already `listen[0]` (line 1)".into()),
            ],
        ),
        (
            "wrong types",
            "proxy_timeout = \"5\"\nlisten = 80".into(),
            "maxattempts = \"x\"",
            vec![
                ("proxy_timeout = ", "proxy_timeout", "invalid type: string \"5\", expected u64".into()),
                ("listen = ", "listen", "invalid type: integer `80`, expected a sequence".into()),
                ("maxattempts = ", "balancer.default.maxattempts", "invalid type: string \"x\", expected i64".into()),
            ],
        ),
        (
            "a plugins_dir that is not there",
            "plugins_dir = \"no-such-folder\"".into(),
            "",
            vec![("plugins_dir = ", "plugins_dir", format!("{missing}: No such file or directory"))],
        ),
        (
            "a plugins_dir that is a file",
            format!("plugins_dir = {not_a_dir:?}"),
            "",
            vec![("plugins_dir = ", "plugins_dir", format!("{not_a_dir} is not a directory"))],
        ),
    ];
    for (name, top, balancer, expected) in cases {
        let mut config = balancer_config(&[("http://127.0.0.1:1", "web1", 1)], balancer, &top);
        if top.contains("listen =") {
            // The case's own listen replaces the default one.
            config = config.replacen("listen = [\"127.0.0.1:0\"]\n", "", 1);
        }
        if name == "zero member timeouts" {
            config = config.replacen("loadfactor = 1", "loadfactor = 1\ntimeout = 0\nconnectiontimeout = 0", 1);
        }
        let (code, err, file) = check_file(dir.path(), "bad", &config);
        assert_eq!(code, 1, "{name}: {err}");
        for (before, key, message) in &expected {
            let offset = config.find(before).unwrap_or_else(|| panic!("{name}: `{before}` is not in:\n{config}"));
            let at = line_col(&config, offset + before.len());
            let expected = format!("{file}:{at}: `{key}`: {message}");
            assert!(err.contains(&expected), "{name}: expected `{expected}` in:\n{err}");
        }
        assert_eq!(err.lines().count(), expected.len(), "{name}: one line per problem:\n{err}");
    }
}

/// What `run` would fail on at start, `check` refuses too, every problem at once and each at its
/// key: plugin files that do not load (a core module gets the command that makes it a component),
/// an lbmethod no plugin provides, an access log that cannot be opened (the OS's reason, not a Rust
/// debug value). A balancer whose plugin file failed is not reported twice.
#[test]
fn start_up_failures_are_refused_by_check_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).unwrap();
    let core = plugins.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(plugins.join("junk.wasm"), b"not wasm at all").unwrap();
    // Writable by nobody, root included.
    let log = "/proc/sys/kernel/version";
    let mut config = balancer_config(
        &[("http://127.0.0.1:1", "web1", 1)],
        "lbmethod = \"core\"",
        &format!("plugins_dir = \"plugins.d\"\naccess_log = {log:?}"),
    );
    config.push_str(
        "\n[balancer.other]\nlbmethod = \"roundrobin\"\n[[balancer.other.member]]\nurl = \"http://127.0.0.1:2\"\n",
    );
    let at = |before: &str| line_col(&config, config.find(before).unwrap() + before.len());
    let (code, err, file) = check_file(dir.path(), "start", &config);
    assert_eq!(code, 1, "{err}");
    let core = core.display();
    let expected = [
        format!(
            "{file}:{}: `plugins_dir`: plugin `core` ({core}): it is a core WebAssembly module, not a component: turn it \
             into one with `fulcrum plugin componentize {core} -o OUT.wasm`",
            at("plugins_dir = ")
        ),
        format!("{file}:{}: `plugins_dir`: plugin `junk` (", at("plugins_dir = ")),
        format!("{file}:{}: `access_log`: cannot open {log} for appending: Permission denied", at("access_log = ")),
        format!(
            "{file}:{}: `balancer.other.lbmethod`: no plugin named `roundrobin`",
            at("[balancer.other]\nlbmethod = ")
        ),
    ];
    for expected in &expected {
        assert!(err.contains(expected.as_str()), "expected `{expected}` in:\n{err}");
    }
    assert_eq!(err.lines().count(), expected.len(), "one line per problem:\n{err}");
    assert!(!err.contains("Os {"), "{err}");

    // `run` refuses it the same way, before listening.
    let (code, out, run_err) = fulcrum_cmd(&["run", "--config", &file], None);
    assert_eq!(code, 1, "{out}{run_err}");
    assert!(run_err.contains(&expected[2]), "{run_err}");
}
