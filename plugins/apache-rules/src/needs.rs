//! What the configured rules read, collected while they are parsed, so that `configure` declares
//! exactly that: the host then sends only those request fields and headers across the boundary.

use fulcrum_sdk::rules::{Needs, RequestFields};

#[derive(Debug)]
pub struct Reads {
    fields: RequestFields,
    request_headers: Vec<String>,
    response_headers: Vec<String>,
}

impl Default for Reads {
    fn default() -> Self {
        Reads { fields: RequestFields::empty(), request_headers: Vec::new(), response_headers: Vec::new() }
    }
}

impl Reads {
    pub fn field(&mut self, field: RequestFields) {
        self.fields |= field;
    }

    pub fn request_header(&mut self, name: &str) {
        add(&mut self.request_headers, name);
    }

    pub fn response_header(&mut self, name: &str) {
        add(&mut self.response_headers, name);
    }

    pub fn into_needs(self) -> Needs {
        Needs { fields: self.fields, request_headers: self.request_headers, response_headers: self.response_headers }
    }
}

/// Lower-cased, first occurrence only.
fn add(names: &mut Vec<String>, name: &str) {
    let name = name.to_ascii_lowercase();
    if !names.contains(&name) {
        names.push(name);
    }
}
