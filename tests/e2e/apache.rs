//! A private Apache 2.4 (Debian's `apache2`) running the guide's configuration on 127.0.0.1, for
//! differential tests. Set up as `shared/apache/README.md` describes: a ServerRoot of our own with
//! Debian's apache2.conf and default modules plus headers, proxy, proxy_http, proxy_balancer,
//! lbmethod_byrequests (and slotmem_shm), `Listen 127.0.0.1:PORT`, and the guide's two files
//! (`tests/apache/*.conf.in`) rendered. The system service is never touched. With [`ModSsl`] it
//! also loads Debian's mod_ssl (`ssl.load`, `ssl.conf`, `socache_shmcb.load`), and can serve the
//! guide's vhost over TLS on the same port (`SSLEngine on` with the test's certificate, put in
//! the template's `@SSL@` line, empty otherwise).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::repo_root;

const APACHE: &str = "/usr/sbin/apache2";
const DEBIAN: &str = "/etc/apache2";
const EXTRA_MODULES: [&str; 8] = [
    "headers.load",
    "proxy.load",
    "proxy.conf",
    "proxy_http.load",
    "proxy_balancer.load",
    "proxy_balancer.conf",
    "lbmethod_byrequests.load",
    "slotmem_shm.load",
];

/// mod_ssl in the private Apache.
#[derive(Clone, Copy)]
pub enum ModSsl<'a> {
    /// Not loaded: the guide's set-up as recorded (`%{REMOTE_ADDR}s` is `(null)`).
    Off,
    /// Loaded (Debian's ssl.load and ssl.conf), the vhost still plain HTTP.
    Loaded,
    /// Loaded, and the vhost serves TLS with this certificate and key (PEM files).
    Tls { certificate: &'a Path, key: &'a Path },
}

const MOD_SSL: [&str; 3] = ["socache_shmcb.load", "ssl.load", "ssl.conf"];

pub struct Apache {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// The guide's member parameters (`retry=60 timeout=300 connectiontimeout=25`) or a variant's.
pub struct Members<'a> {
    pub web1: &'a str,
    pub web2: &'a str,
    pub web1_params: &'a str,
    pub web2_params: &'a str,
}

impl Apache {
    pub fn start(members: &Members<'_>) -> Apache {
        Apache::start_with(members, ModSsl::Off)
    }

    pub fn start_with(members: &Members<'_>, ssl: ModSsl<'_>) -> Apache {
        assert!(
            Path::new(APACHE).exists(),
            "{APACHE} is missing: install Debian's apache2 (`apt-get install -y apache2`; .ci/run does it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        for sub in ["mods-enabled", "conf-available", "conf-enabled", "sites-enabled", "run", "lock", "log"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        for sub in ["run", "lock", "log"] {
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::copy(format!("{DEBIAN}/apache2.conf"), root.join("apache2.conf")).unwrap();
        symlink(format!("{DEBIAN}/mods-available"), root.join("mods-available")).unwrap();
        for entry in std::fs::read_dir(format!("{DEBIAN}/mods-enabled")).unwrap().flatten() {
            let name = entry.file_name();
            symlink(Path::new(DEBIAN).join("mods-available").join(&name), root.join("mods-enabled").join(&name))
                .unwrap();
        }
        let ssl_modules: &[&str] = if matches!(ssl, ModSsl::Off) { &[] } else { &MOD_SSL };
        for &name in EXTRA_MODULES.iter().chain(ssl_modules) {
            let link = root.join("mods-enabled").join(name);
            if !link.exists() {
                symlink(Path::new(DEBIAN).join("mods-available").join(name), link).unwrap();
            }
        }
        for entry in std::fs::read_dir(format!("{DEBIAN}/conf-available")).unwrap().flatten() {
            symlink(entry.path(), root.join("conf-available").join(entry.file_name())).unwrap();
        }
        for entry in std::fs::read_dir(format!("{DEBIAN}/conf-enabled")).unwrap().flatten() {
            let name = entry.file_name();
            symlink(Path::new(DEBIAN).join("conf-available").join(&name), root.join("conf-enabled").join(&name))
                .unwrap();
        }
        std::fs::write(root.join("ports.conf"), format!("Listen 127.0.0.1:{port}\n")).unwrap();
        let ssl_lines = match ssl {
            ModSsl::Tls { certificate, key } => format!(
                "    SSLEngine on\n    SSLCertificateFile {}\n    SSLCertificateKeyFile {}\n",
                certificate.display(),
                key.display()
            ),
            ModSsl::Off | ModSsl::Loaded => String::new(),
        };
        let render = |template: &str| {
            std::fs::read_to_string(repo_root().join("tests/apache").join(template))
                .unwrap()
                .replace("@PORT@", &port.to_string())
                .replace("@WEB1_URL@", members.web1)
                .replace("@WEB2_URL@", members.web2)
                .replace("@WEB1_PARAMS@", members.web1_params)
                .replace("@WEB2_PARAMS@", members.web2_params)
                .replace("@ALLOW_IP@", "127.0.0.1")
                .replace("@SSL@\n", &ssl_lines)
        };
        std::fs::write(root.join("conf-available/main-balancer.conf"), render("main-balancer.conf.in")).unwrap();
        std::fs::write(root.join("sites-enabled/000-default.conf"), render("000-default.conf.in")).unwrap();

        let apache = Apache { dir, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let out = apache.command("start");
        assert!(
            out.status.success(),
            "apache2 -k start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            apache.error_log()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(apache.addr).is_err() {
            assert!(Instant::now() < deadline, "Apache did not start listening:\n{}", apache.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        apache
    }

    fn command(&self, action: &str) -> std::process::Output {
        let root = self.dir.path();
        Command::new(APACHE)
            .arg("-d")
            .arg(root)
            .arg("-f")
            .arg(root.join("apache2.conf"))
            .args(["-k", action])
            .env("APACHE_RUN_USER", "www-data")
            .env("APACHE_RUN_GROUP", "www-data")
            .env("APACHE_PID_FILE", root.join("run/apache2.pid"))
            .env("APACHE_RUN_DIR", root.join("run"))
            .env("APACHE_LOCK_DIR", root.join("lock"))
            .env("APACHE_LOG_DIR", root.join("log"))
            .env("LANG", "C")
            .output()
            .expect("run apache2")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.log_dir().join("error.log")).unwrap_or_default()
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("run/apache2.pid");
        let _ = self.command("stop");
        // Wait for the parent to exit, so the next instance can take a port and the temp dir goes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
