//! The loopback half of SSO login for native apps: a local callback that
//! receives the homeserver's redirect and hands back its `loginToken`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::Error;

/// A callback listener on 127.0.0.1; its URL is the `redirectUrl`.
pub struct SsoCallback {
    listener: TcpListener,
    url: String,
}

impl SsoCallback {
    /// Binds a free loopback port.
    pub async fn bind() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::InvalidResponse(format!("cannot listen on loopback: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::InvalidResponse(e.to_string()))?;
        Ok(Self {
            listener,
            url: format!("http://{addr}/callback"),
        })
    }

    /// The URL to pass as `redirectUrl`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits for the browser's redirect and returns its `loginToken`.
    /// Requests without one (favicon probes…) are answered and ignored.
    pub async fn login_token(self) -> Result<String, Error> {
        loop {
            let (mut socket, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| Error::InvalidResponse(e.to_string()))?;
            let mut buf = vec![0u8; 8192];
            let n = socket
                .read(&mut buf)
                .await
                .map_err(|e| Error::InvalidResponse(e.to_string()))?;
            let request = String::from_utf8_lossy(&buf[..n]);
            let token = request
                .split_whitespace()
                .nth(1)
                .and_then(|target| url::Url::parse(&format!("http://callback{target}")).ok())
                .and_then(|u| {
                    u.query_pairs()
                        .find(|(k, _)| k == "loginToken")
                        .map(|(_, v)| v.into_owned())
                });
            let body: &[u8] = if token.is_some() {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nLogged in. You can close this tab.\n"
            } else {
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = socket.write_all(body).await;
            if let Some(t) = token {
                return Ok(t);
            }
        }
    }
}
