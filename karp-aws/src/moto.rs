//! A moto_server (PyPI `moto[server]`) on a free loopback port: the real EC2 / SSM / SQS HTTP API
//! that karp's tests and the embedded demo talk to through the AWS SDK.
//!
//! The server is a child Python process that exits when its parent does; [`MotoServer`] also
//! kills it on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = include_str!("moto/server.py");

/// What to install when moto is missing.
pub const INSTALL_HINT: &str =
    "moto_server is required: install it with `pip install 'moto[server]==5.2.1'` (./scripts/test does this)";

/// Errors of [`MotoServer::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MotoError {
    /// Python could not be started.
    #[error("starting python3 failed: {0}; {INSTALL_HINT}")]
    StartPython(#[source] std::io::Error),
    /// moto is not installed or did not come up.
    #[error("moto_server did not start ({0}); {INSTALL_HINT}")]
    NotListening(String),
}

/// A running moto_server.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts a server on a free loopback port and waits until it listens.
    ///
    /// # Errors
    /// [`MotoError`] when python3 or moto is missing (the message says what to install).
    pub fn start() -> Result<Self, MotoError> {
        let python = std::env::var("KARP_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(MotoError::StartPython)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| MotoError::NotListening("no stdout".into()))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match read {
            Ok(_) => line
                .trim()
                .strip_prefix("port ")
                .and_then(|p| p.parse::<u16>().ok()),
            Err(_) => None,
        };
        match port {
            Some(port) => Ok(MotoServer { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(MotoError::NotListening(if line.trim().is_empty() {
                    "no output".into()
                } else {
                    line.trim().to_string()
                }))
            }
        }
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
