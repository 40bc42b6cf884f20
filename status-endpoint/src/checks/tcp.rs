//! An extra TCP dependency: the check passes when a connection is accepted. The connection is
//! closed at once; nothing is kept.

use super::{CheckError, Probe};

pub struct TcpCheck {
    address: String,
}

impl TcpCheck {
    /// `address`: `host:port`.
    pub fn new(address: &str) -> Self {
        TcpCheck {
            address: address.to_owned(),
        }
    }

    pub fn target(&self) -> &str {
        &self.address
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| CheckError::Connect(e.to_string()))?;
        Ok(Probe::pass())
    }
}
