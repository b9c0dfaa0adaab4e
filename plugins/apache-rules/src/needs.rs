//! What the configured rules read and change, collected while they are parsed, so that
//! `configure` declares exactly that: the host then sends only those request fields, headers and
//! variables across the boundary, and the actions name only declared headers and variables.

use fulcrum_sdk::rules::{EnvVar, Needs, RequestFields, Target};

#[derive(Debug, Default)]
pub struct Reads {
    needs: Needs,
    /// Whether a header rule or a condition reads a header (a format's `%{X}i`/`%{X}o`, an
    /// expression's `req()`/`resp()`, an `edit`): only then does the engine keep header tables.
    headers_read: bool,
}

impl Reads {
    pub fn field(&mut self, field: RequestFields) {
        self.needs.field(field);
    }

    pub fn request_header(&mut self, name: &str) {
        self.headers_read = true;
        self.needs.request_header(name);
    }

    pub fn response_header(&mut self, name: &str) {
        self.headers_read = true;
        self.needs.response_header(name);
    }

    /// The request header a `SetEnvIf` tests (read from the call directly, not through the
    /// header tables the other rules read); its position among the declared request headers.
    pub fn setenvif_header(&mut self, name: &str) -> usize {
        self.needs.request_header(name);
        let declared = self.needs.request_headers();
        declared.iter().position(|n| n.eq_ignore_ascii_case(name)).unwrap_or(declared.len())
    }

    /// Whether anything but `SetEnvIf` reads a header.
    pub fn headers_read(&self) -> bool {
        self.headers_read
    }

    /// An environment variable read (`%{X}e`, `env=X`, `env('X')`, a SetEnvIf attribute that
    /// falls back to the environment) or set (a SetEnvIf assignment).
    /// Its handle: the index actions on it use.
    pub fn env(&mut self, name: &str) -> EnvVar {
        self.needs.env(name)
    }

    /// A header the rules change; its handle, the index actions on it use.
    pub fn target(&mut self, name: &str) -> Target {
        self.needs.target(name)
    }

    pub fn into_needs(self) -> Needs {
        self.needs
    }
}
