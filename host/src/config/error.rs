//! Configuration errors that point at the file, line and column of the problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file a problem is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte offset `offset` in `source`.
    pub fn of(source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = &source[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        Location { line, column }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub location: Option<Location>,
    /// The TOML key path the problem is about (`balancer.default.member[1].url`), when known.
    pub key: Option<String>,
    pub message: String,
}

/// Every problem found in one configuration file: load does not stop at the first.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem { location: None, key: None, message: message.into() }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(loc) = p.location {
                write!(f, ":{}:{}", loc.line, loc.column)?;
            }
            write!(f, ": ")?;
            if let Some(key) = &p.key {
                write!(f, "`{key}`: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
