//! Test certificates, made by the test with rcgen: a CA of its own and server certificates it
//! signs, written as PEM files into a folder (the tests' Fulcrum config folder).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA: clients trust `ca.pem` in its folder.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub dir: PathBuf,
}

/// A server certificate, by its DER (to compare with what a handshake presents).
pub struct ServerCert {
    pub der: Vec<u8>,
}

impl TestCa {
    /// A CA whose certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Fulcrum test CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa { issuer: Issuer::new(params, key), dir: dir.to_path_buf() }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name` (its CN and only DNS name), as `dir/FILE.pem` and `dir/FILE.key`.
    pub fn issue(&self, name: &str, file: &str) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ServerCert { der: cert.der().to_vec() }
    }
}

/// The certificate `addr` presents for SNI `name` (none: no SNI), as `openssl s_client` shows its
/// subject (`CN = www.example.com`).
pub fn presented_subject(addr: &str, name: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", addr, "-brief"]);
    match name {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(std::process::Stdio::null()).output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Peer certificate: "))
        .unwrap_or_else(|| panic!("no peer certificate in openssl's output:\n{text}"))
        .to_string()
}
