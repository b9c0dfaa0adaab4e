//! TLS termination: certificates read from PEM files, chosen by SNI, and the rustls settings of a
//! TLS listener.
//!
//! Why here and not in the server: a bad certificate or key has to be a configuration error that
//! names the file and the key (`fulcrum check`, a refused reload), never a failed handshake found
//! by the first client. So the files are read and checked while the configuration is validated
//! ([`Certificate::load`]), and each TLS listener's [`rustls::ServerConfig`] is built then too
//! ([`server_config`]). A reload reads every file again and builds new settings; a connection
//! takes the settings in force when it is accepted, so open connections keep going on the ones
//! they started with.
//!
//! What a TLS listener speaks, as Apache's mod_ssl with `SSLProtocol -all +TLSv1.2 +TLSv1.3`:
//! TLS 1.2 and 1.3 only, rustls' default cipher suites (all AEAD with forward secrecy), ALPN
//! `h2` then `http/1.1`. The certificate is the one of the virtual host whose `server_name` or
//! `server_alias` is the client's SNI name, when that virtual host has one of its own, else the
//! listener's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN protocols a TLS listener offers, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The cryptography in use: rustls with *ring*.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, read from PEM files and checked to belong together.
#[derive(Clone)]
pub struct Certificate {
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("certificate_file", &self.certificate_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Why a certificate or key could not be used, and which of the two files it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// About the certificate file (`tls_certificate`).
    Certificate(String),
    /// About the key file (`tls_key`).
    Key(String),
}

impl Certificate {
    /// Read the chain (the server's certificate first, then its intermediates) and the key (PKCS#8,
    /// PKCS#1 RSA or SEC1 EC, the first one in the file), and check that the key is the
    /// certificate's. The error says what is wrong with which file, naming it.
    pub fn load(certificate_file: &Path, key_file: &Path) -> Result<Certificate, CertificateError> {
        let shown = |p: &Path| p.display().to_string();
        let cert_pem = std::fs::read(certificate_file).map_err(|e| {
            CertificateError::Certificate(format!(
                "cannot read {}: {}",
                shown(certificate_file),
                crate::config::os_reason(&e)
            ))
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            CertificateError::Certificate(format!("{} is not a PEM certificate file: {e}", shown(certificate_file)))
        })?;
        if chain.is_empty() {
            return Err(CertificateError::Certificate(format!(
                "{} holds no certificate (no -----BEGIN CERTIFICATE----- block)",
                shown(certificate_file)
            )));
        }
        let key_pem = std::fs::read(key_file).map_err(|e| {
            CertificateError::Key(format!("cannot read {}: {}", shown(key_file), crate::config::os_reason(&e)))
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => CertificateError::Key(format!(
                "{} holds no private key (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)",
                shown(key_file)
            )),
            e => CertificateError::Key(format!("{} is not a PEM private key file: {e}", shown(key_file))),
        })?;
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertificateError::Key(format!("{}: unusable private key: {e}", shown(key_file))))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertificateError::Key(format!(
                    "the private key in {} is not the key of the certificate in {}",
                    shown(key_file),
                    shown(certificate_file)
                )));
            }
            Err(e) => {
                return Err(CertificateError::Certificate(format!(
                    "{}: the first certificate is not a usable X.509 certificate: {e}",
                    shown(certificate_file)
                )));
            }
        }
        Ok(Certificate {
            certificate_file: certificate_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            key: Arc::new(certified),
        })
    }
}

/// Picks the certificate by the client's SNI name: a virtual host's own, else the listener's.
#[derive(Debug)]
struct BySni {
    names: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = name.trim_end_matches('.');
            match self.names.get(name) {
                Some(key) => Some(key),
                None => self.names.get(&name.to_ascii_lowercase()),
            }
        });
        Some(Arc::clone(by_name.unwrap_or(&self.default)))
    }
}

/// The rustls settings of a TLS listener whose certificate is `default`; `vhosts` are the
/// names (lower case) of each virtual host that has a certificate of its own, with it.
pub fn server_config<'a>(
    default: &Certificate,
    vhosts: impl IntoIterator<Item = (&'a str, &'a Certificate)>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let names = vhosts.into_iter().map(|(name, c)| (name.to_string(), Arc::clone(&c.key))).collect();
    let resolver = BySni { names, default: Arc::clone(&default.key) };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a request's rules and members may know about its connection's TLS (mod_ssl's variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `SSL_PROTOCOL`: `TLSv1.3`, `TLSv1.2`.
    pub protocol: &'static str,
    /// `SSL_CIPHER`: OpenSSL's name of the cipher suite, as mod_ssl gives it.
    pub cipher: &'static str,
    /// The SNI name the client sent, if any (`SSL_TLS_SNI`).
    pub sni: Option<Box<str>>,
}

impl TlsInfo {
    /// What a finished handshake agreed.
    pub fn of(connection: &rustls::ServerConnection) -> TlsInfo {
        let protocol = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let cipher = connection.negotiated_cipher_suite().map_or("unknown", |s| openssl_cipher_name(s.suite()));
        TlsInfo { protocol, cipher, sni: connection.server_name().map(Into::into) }
    }
}

/// OpenSSL's name for a cipher suite (what mod_ssl's `SSL_CIPHER` says): TLS 1.3 suites keep
/// their IANA name, TLS 1.2 suites have OpenSSL's own. A suite without one here (none that rustls
/// offers) gets rustls' IANA name.
pub fn openssl_cipher_name(suite: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other.as_str().unwrap_or("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn make(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn certificate_files_checked_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cert_a, key_a) = make("a.test");
        let (_, key_b) = make("b.test");
        let ca = write(d, "a.pem", &cert_a);
        let ka = write(d, "a.key", &key_a);
        let kb = write(d, "b.key", &key_b);
        let junk = write(d, "junk.pem", "hello\n");
        let broken = write(d, "broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let not_x509 = write(d, "notx509.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let missing = d.join("missing.pem");
        assert!(Certificate::load(&ca, &ka).is_ok());
        // (certificate, key, which file is blamed, words the message must hold)
        let cases: &[(&Path, &Path, &str, &str)] = &[
            (&missing, &ka, "certificate", "cannot read"),
            (&junk, &ka, "certificate", "holds no certificate"),
            (&broken, &ka, "certificate", "not a PEM certificate file"),
            (&not_x509, &ka, "certificate", "not a usable X.509 certificate"),
            (&ca, &missing, "key", "cannot read"),
            (&ca, &junk, "key", "holds no private key"),
            (&ca, &ca, "key", "holds no private key"),
            (&ca, &kb, "key", "is not the key of the certificate"),
        ];
        for (cert, key, blamed, words) in cases {
            let error = Certificate::load(cert, key).expect_err("loaded");
            let (which, message, file) = match &error {
                CertificateError::Certificate(m) => ("certificate", m, cert),
                CertificateError::Key(m) => ("key", m, key),
            };
            assert_eq!(which, *blamed, "{error:?}");
            assert!(message.contains(words), "{message}");
            assert!(message.contains(&file.display().to_string()), "names the file: {message}");
        }
    }

    #[test]
    fn cipher_names_are_openssl_s() {
        assert_eq!(openssl_cipher_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384), "TLS_AES_256_GCM_SHA384");
        assert_eq!(
            openssl_cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
        // Every suite rustls offers has its OpenSSL name here.
        for suite in rustls::crypto::ring::DEFAULT_CIPHER_SUITES {
            let name = openssl_cipher_name(suite.suite());
            assert!(!name.starts_with("TLS_ECDHE"), "{name}");
        }
    }
}

/// How Fulcrum speaks TLS to an `https://` member: the balancer's client settings (which CAs
/// it trusts, its client certificate) and the name the member's certificate must carry (its
/// URL's host, also sent as SNI unless it is an IP address).
///
/// As Apache's mod_ssl with `SSLProxyEngine on`, `SSLProxyVerify require` and
/// `SSLProxyCheckPeerName on`: a member whose certificate does not chain to a trusted CA or does
/// not name its host fails the handshake, and the request gets a 502.
#[derive(Clone)]
pub struct MemberTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl MemberTls {
    /// For a member whose URL's host is `host` (an IPv6 literal may keep its brackets).
    pub fn new(client: Arc<rustls::ClientConfig>, host: &str) -> Result<MemberTls, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))?;
        Ok(MemberTls { connector: tokio_rustls::TlsConnector::from(client), server_name })
    }
}

/// A balancer's TLS client settings for its `https://` members: the CA certificates in
/// `ca_file` (PEM), else the system's (`/etc/ssl/certs`, as OpenSSL finds them); a client
/// certificate when `client` is given (Apache's `SSLProxyMachineCertificateFile`); TLS 1.2 and
/// 1.3; ALPN `http/1.1`, the only protocol Fulcrum speaks to members. The error names the file.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<&Certificate>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| format!("cannot read {}: {}", file.display(), crate::config::os_reason(&e)))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{} is not a PEM certificate file: {e}", file.display()))?;
                roots.add(cert).map_err(|e| format!("{}: a certificate that cannot be a CA: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{} holds no certificate (no -----BEGIN CERTIFICATE----- block)", file.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(format!(
                    "no CA certificates found on this system ({}): install Debian's ca-certificates, or name a CA file \
                     with tls_ca",
                    found.errors.first().map_or("none in /etc/ssl/certs".to_string(), ToString::to_string)
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(certificate) => {
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(Arc::clone(&certificate.key))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The one client certificate a balancer presents to its members when they ask for one.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}
