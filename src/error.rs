//! The crate's error type for the engine core (configs, weights, backends, models).
//!
//! Every error names what is wrong: the field of a config, the tensor of a
//! weights file, the input of a forward pass. Other rooms (ensemble, market,
//! features) keep their own error enums; the CLI turns any of them into a
//! message through `anyhow`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A config field is out of its allowed range or inconsistent with another.
    #[error("invalid config: {field}: {reason}")]
    Config { field: String, reason: String },

    /// A weights file does not match the model it claims to be. All problems
    /// of one file are collected into one error, one per line.
    #[error("weights file {path}: {}", problems.join("; "))]
    Weights { path: String, problems: Vec<String> },

    /// An input tensor is missing, mis-shaped or not finite.
    #[error("input {name}: {reason}")]
    Input { name: String, reason: String },

    /// The backend could not do what it was asked (device missing, launch failed).
    #[error("backend {backend}: {reason}")]
    Backend { backend: String, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { field: field.into(), reason: reason.into() }
    }

    pub fn input(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Input { name: name.into(), reason: reason.into() }
    }

    pub fn weights(path: impl Into<String>, problems: Vec<String>) -> Self {
        Error::Weights { path: path.into(), problems }
    }
}
