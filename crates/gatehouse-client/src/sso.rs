//! The loopback half of SSO login for native apps: a local callback that
//! receives the homeserver's redirect and hands back its `loginToken`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::Error;

/// How long one connection may take to send its request line.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Connections are served side by side, so one that sends nothing
    /// (browsers open spare ones) never holds up the redirect; it is
    /// dropped after a few seconds. Wrap the call in a timeout to bound the
    /// whole wait.
    pub async fn login_token(self) -> Result<String, Error> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (socket, _) =
                        accepted.map_err(|e| Error::InvalidResponse(e.to_string()))?;
                    connections.spawn(answer(socket));
                }
                // Every finished connection is looked at: a pattern that
                // failed to match would disable this branch until the next
                // accept, leaving a token that arrived meanwhile unseen.
                Some(served) = connections.join_next() => {
                    if let Ok(Some(token)) = served {
                        return Ok(token);
                    }
                }
            }
        }
    }
}

/// Reads one request, answers it, and returns its `loginToken`, if any.
async fn answer(mut socket: tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(READ_TIMEOUT, socket.read(&mut buf))
        .await
        .ok()?
        .ok()?;
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
    token
}
