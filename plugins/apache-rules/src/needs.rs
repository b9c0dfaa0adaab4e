//! What the configured rules read and change, collected while they are parsed, so that
//! `configure` declares exactly that: the host then sends only those request fields, headers and
//! variables across the boundary, and the actions name only declared headers and variables.

use fulcrum_sdk::rules::{Needs, RequestFields};

#[derive(Debug, Default)]
pub struct Reads {
    needs: Needs,
}

impl Reads {
    pub fn field(&mut self, field: RequestFields) {
        self.needs.field(field);
    }

    pub fn request_header(&mut self, name: &str) {
        self.needs.request_header(name);
    }

    pub fn response_header(&mut self, name: &str) {
        self.needs.response_header(name);
    }

    /// An environment variable read (`%{X}e`, `env=X`, `env('X')`, a SetEnvIf attribute that
    /// falls back to the environment) or set (a SetEnvIf assignment).
    pub fn env(&mut self, name: &str) {
        self.needs.env(name);
    }

    /// A header the rules change.
    pub fn target(&mut self, name: &str) {
        self.needs.target(name);
    }

    pub fn into_needs(self) -> Needs {
        self.needs
    }
}
