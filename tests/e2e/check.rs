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
fn an_unknown_lbmethod_is_refused_naming_the_balancer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, balancer_config(&[("http://127.0.0.1:1", "web1", 1)], "lbmethod = \"roundrobin\"", ""))
        .unwrap();
    let (code, _, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("balancer `default`: lbmethod: no plugin named `roundrobin`"), "{err}");
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
