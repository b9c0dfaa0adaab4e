//! Test support: the real `fulcrum` binary on 127.0.0.1 port 0, real echo backends, an HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use fulcrum::demo::EchoServer;

/// A running `fulcrum run` process, killed on drop.
pub struct Fulcrum {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Every listener announced, as `http://ADDR` or `https://ADDR`, in `listen`'s order.
    announced: std::sync::Mutex<(mpsc::Receiver<String>, Vec<String>)>,
}

impl Fulcrum {
    /// Write `config` to a fresh folder and run the real binary on it; returns once it listens.
    pub fn start(config: &str) -> Fulcrum {
        Self::start_with_log(config, "info")
    }

    /// Like [`Fulcrum::start`], logging at `filter` (`FULCRUM_LOG`).
    pub fn start_with_log(config: &str, filter: &str) -> Fulcrum {
        Self::start_with_env(config, filter, &[])
    }

    /// Like [`Fulcrum::start_with_log`], with extra environment variables for the process.
    pub fn start_with_env(config: &str, filter: &str, env: &[(&str, &str)]) -> Fulcrum {
        Self::start_with_args(config, filter, env, &[])
    }

    /// Like [`Fulcrum::start_with_env`], with extra arguments after `run --config FILE`.
    pub fn start_with_args(config: &str, filter: &str, env: &[(&str, &str)], args: &[&str]) -> Fulcrum {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("fulcrum.toml"), config).expect("write config");
        Self::spawn(dir, filter, env, args)
    }

    /// Stop the process and start it again on the same folder (its config and state files).
    pub fn restart(mut self) -> Fulcrum {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Self::spawn(dir, "info", &[], &[])
    }

    fn spawn(dir: tempfile::TempDir, filter: &str, env: &[(&str, &str)], args: &[&str]) -> Fulcrum {
        let path = dir.path().join("fulcrum.toml");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            .env("FULCRUM_LOG", filter)
            // The default plugin cache, kept under target/ rather than the user's home.
            .env("XDG_CACHE_HOME", repo_root().join("target/test-cache"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn fulcrum");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // `fulcrum listening on https://127.0.0.1:4321 (TLS: HTTP/2 and HTTP/1.1)`
                if let Some(url) = line.strip_prefix("fulcrum listening on ") {
                    let _ = tx.send(url.split(' ').next().unwrap_or(url).to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => {
                let addr = url.split_once("://").map_or(url.as_str(), |(_, a)| a).parse().expect("listening address");
                Fulcrum { child, addr, dir, announced: std::sync::Mutex::new((rx, vec![url])) }
            }
            Err(_) => {
                let _ = child.kill();
                let mut log = String::new();
                let _ = std::fs::File::open(dir.path().join("stderr.log")).and_then(|mut f| f.read_to_string(&mut log));
                panic!("fulcrum did not start listening; its log:\n{log}");
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The first `n` listeners announced (`http://ADDR`, `https://ADDR`), in `listen`'s order.
    pub fn listeners(&self, n: usize) -> Vec<String> {
        let mut announced = self.announced.lock().unwrap();
        while announced.1.len() < n {
            let url = announced.0.recv_timeout(Duration::from_secs(10)).expect("fewer listeners announced");
            announced.1.push(url);
        }
        announced.1[..n].to_vec()
    }

    /// A file in the folder that holds the config (relative paths in the config land there).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replace the configuration file the way deploy tools do (write aside, rename over).
    pub fn rewrite_config(&self, config: &str) {
        let aside = self.dir.path().join("fulcrum.toml.new");
        std::fs::write(&aside, config).expect("write config");
        std::fs::rename(&aside, self.dir.path().join("fulcrum.toml")).expect("replace config");
    }

    /// Send the process a signal (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// How the process ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("the state of fulcrum")
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two echo backends named web1 and web2 on ports the OS picked.
pub async fn two_backends() -> (EchoServer, EchoServer) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    (EchoServer::start(any, "web1").await.unwrap(), EchoServer::start(any, "web2").await.unwrap())
}

/// A config with one vhost proxying `/` to balancer `default` over `members` (url, route,
/// loadfactor), plus `extra` TOML lines in the balancer table.
pub fn balancer_config(members: &[(&str, &str, u32)], balancer_extra: &str, top_extra: &str) -> String {
    let mut c = format!(
        "listen = [\"127.0.0.1:0\"]\n{top_extra}\n\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://default/\" }}]\n\n[balancer.default]\n{balancer_extra}\n"
    );
    for (url, route, lf) in members {
        c.push_str(&format!(
            "\n[[balancer.default.member]]\nurl = \"{url}\"\nroute = \"{route}\"\nloadfactor = {lf}\n"
        ));
    }
    c
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// Which echo backend answered (`served-by:` line), or "" for Fulcrum's own answers.
    pub fn served_by(&self) -> &str {
        self.body.lines().find_map(|l| l.strip_prefix("served-by: ")).unwrap_or("")
    }
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET `url` with `headers`.
pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req.body(Empty::new()).unwrap()))
        .await
        .expect("no answer within 30 s")
        .expect("request failed");
    read_answer(response).await
}

/// A response read whole: its status, headers and body as text.
pub async fn read_answer(response: hyper::Response<hyper::body::Incoming>) -> Answer {
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer { status: head.status, headers: head.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Run `fulcrum` with `args` to completion: (exit code, stdout, stderr).
pub fn fulcrum_cmd(args: &[&str], cwd: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    cmd.args(args).env("XDG_CACHE_HOME", repo_root().join("target/test-cache"));
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().expect("run fulcrum");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository root (tests read examples/ from there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Like [`balancer_config`], with each member's own TOML lines (`("url", "route = \"web1\"\nlbset = 1")`).
pub fn members_config(members: &[(&str, &str)], balancer_extra: &str) -> String {
    let mut c = format!(
        "listen = [\"127.0.0.1:0\"]\n\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://default/\" }}]\n\n[balancer.default]\n{balancer_extra}\n"
    );
    for (url, lines) in members {
        c.push_str(&format!("\n[[balancer.default.member]]\nurl = \"{url}\"\n{lines}\n"));
    }
    c
}

/// A member written by hand, for answers no real server gives: it accepts connections on a port
/// of its own, reads each request's head (up to the blank line) and hands the stream and the head
/// to `answer`, which may write anything, reset, or wait. A connection closed before a whole head
/// is dropped.
pub async fn raw_member<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                answer(stream, head).await;
            });
        }
    });
    addr
}

/// One request written by hand to `addr` (send it with `Connection: close`): the status, the
/// head, and the body (de-chunked when the answer is chunked).
pub fn raw_exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}
