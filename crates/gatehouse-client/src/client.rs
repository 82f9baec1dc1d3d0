//! The client: a base URL, an optional session, and requests that keep the
//! session alive (refresh before expiry and on soft logout, one refresh for
//! all concurrent requests, notifications when tokens change or die).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, ErrorCode, MatrixError};

/// What a logged-in client holds; persist it to resume later. Its `Debug`
/// output hides the tokens (sessions end up in logs).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub user_id: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires, in ms since the Unix epoch.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// New tokens from a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenRefresh {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Obtains new tokens from a refresh token (matrix-js-sdk's
/// `tokenRefreshFunction`). The default is [`Client::refresh_request`].
///
/// The hook runs while the client holds its refresh lock, so that
/// concurrent requests share one refresh. Inside it, the client's own
/// requests do not refresh (they would wait for the hook that waits for
/// them), and [`Client::refresh`] answers an error; call
/// [`Client::refresh_request`] to reach the standard endpoint.
pub type RefreshHook =
    Arc<dyn Fn(Client, String) -> BoxFuture<'static, Result<TokenRefresh, Error>> + Send + Sync>;

tokio::task_local! {
    /// Set while a refresh (hook or default) runs on this task.
    static IN_REFRESH: ();
}

fn in_refresh() -> bool {
    IN_REFRESH.try_with(|()| ()).is_ok()
}

/// The longest wait a server's `Retry-After` can impose on a refresh.
const MAX_REFRESH_WAIT: Duration = Duration::from_secs(60);

/// Told of every change of session: new tokens (`Some`), or the end of the
/// session (`None`: logout, or the server ended it).
type SessionListener = Arc<dyn Fn(Option<&Session>) + Send + Sync>;
type LogoutListener = Arc<dyn Fn(&MatrixError) + Send + Sync>;

/// Reads the session as persisted now (matrix-rust-sdk's reload callback):
/// another process sharing it may have refreshed it, or ended it (`None`).
pub type ReloadSession = Arc<dyn Fn() -> Result<Option<Session>, String> + Send + Sync>;

/// Persists a new session, or forgets it (`None`).
pub type SaveSession = Arc<dyn Fn(Option<&Session>) -> Result<(), String> + Send + Sync>;

/// Something held while locked; dropping it unlocks.
pub type LockGuard = Box<dyn Send>;

/// Takes a lock shared by every process using the same persisted session,
/// held around each refresh: one process refreshes, the others reload
/// what it saved instead of spending the refresh token again.
pub type CrossProcessLock =
    Arc<dyn Fn() -> BoxFuture<'static, Result<LockGuard, Error>> + Send + Sync>;

/// A Matrix client; cheap to clone (clones share the session).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base_url: String,
    http: reqwest::Client,
    session: RwLock<Option<Session>>,
    refreshing: tokio::sync::Mutex<()>,
    refresh_hook: Option<RefreshHook>,
    on_session_changed: Option<SessionListener>,
    on_logged_out: Option<LogoutListener>,
    persistence: Option<Persistence>,
    refresh_margin: Duration,
    /// The lifetime of the current access token, as known when it was set
    /// (ms; 0: unknown).
    /// The margin is at most half of it, or a short-lived token would be
    /// "about to expire" from birth and every request would refresh first.
    token_lifetime_ms: std::sync::atomic::AtomicU64,
    rate_limit_retries: u32,
}

/// Where the session is persisted, and how processes sharing it agree.
#[derive(Clone)]
struct Persistence {
    reload: ReloadSession,
    save: SaveSession,
    lock: Option<CrossProcessLock>,
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    base_url: String,
    session: Option<Session>,
    http: Option<reqwest::Client>,
    refresh_hook: Option<RefreshHook>,
    on_session_changed: Option<SessionListener>,
    on_logged_out: Option<LogoutListener>,
    persistence: Option<Persistence>,
    refresh_margin: Duration,
    rate_limit_retries: u32,
}

impl ClientBuilder {
    /// A stored session to resume.
    pub fn session(mut self, session: Session) -> Self {
        self.session = Some(session);
        self
    }

    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Replaces how refresh tokens are exchanged.
    pub fn refresh_hook(mut self, hook: RefreshHook) -> Self {
        self.refresh_hook = Some(hook);
        self
    }

    /// Called whenever the session changes: new tokens (`Some`), or its
    /// end (`None`: a logout, or the server ending it).
    pub fn on_session_changed(
        mut self,
        f: impl Fn(Option<&Session>) + Send + Sync + 'static,
    ) -> Self {
        self.on_session_changed = Some(Arc::new(f));
        self
    }

    /// Persistence both ways (matrix-rust-sdk's `set_session_callbacks`):
    /// `save` is given every new session and `None` when it ends; `reload`
    /// is read before refreshing and when a token is refused, so that
    /// several clients (processes) sharing one persisted session use the
    /// tokens one of them refreshed instead of spending the refresh token
    /// again, or mistaking the token it replaced for a revoked session.
    pub fn session_callbacks(
        mut self,
        reload: impl Fn() -> Result<Option<Session>, String> + Send + Sync + 'static,
        save: impl Fn(Option<&Session>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let lock = self.persistence.take().and_then(|p| p.lock);
        self.persistence = Some(Persistence {
            reload: Arc::new(reload),
            save: Arc::new(save),
            lock,
        });
        self
    }

    /// A lock shared by every process using the persisted session, held
    /// from reload to save around each refresh (with
    /// [`Self::session_callbacks`], which it needs to be of use).
    pub fn cross_process_refresh_lock(mut self, lock: CrossProcessLock) -> Self {
        let persistence = self.persistence.get_or_insert_with(|| Persistence {
            reload: Arc::new(|| Ok(None)),
            save: Arc::new(|_| Ok(())),
            lock: None,
        });
        persistence.lock = Some(lock);
        self
    }

    /// Called when the server ends the session (`M_UNKNOWN_TOKEN` that no
    /// refresh can fix).
    pub fn on_logged_out(mut self, f: impl Fn(&MatrixError) + Send + Sync + 'static) -> Self {
        self.on_logged_out = Some(Arc::new(f));
        self
    }

    /// Refresh this long before a known expiry (default 30 s).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Opt in to retrying `M_LIMIT_EXCEEDED` answers, waiting as told, at
    /// most `times` times per request.
    pub fn retry_rate_limited(mut self, times: u32) -> Self {
        self.rate_limit_retries = times;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let parsed = url::Url::parse(&self.base_url)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidResponse(format!(
                "base URL must be http(s): {}",
                self.base_url
            )));
        }
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        let lifetime = self.session.as_ref().map_or(0, lifetime_left);
        Ok(Client {
            inner: Arc::new(Inner {
                base_url: self.base_url.trim_end_matches('/').to_owned(),
                http,
                session: RwLock::new(self.session),
                refreshing: tokio::sync::Mutex::new(()),
                refresh_hook: self.refresh_hook,
                on_session_changed: self.on_session_changed,
                on_logged_out: self.on_logged_out,
                persistence: self.persistence,
                refresh_margin: self.refresh_margin,
                token_lifetime_ms: std::sync::atomic::AtomicU64::new(lifetime),
                rate_limit_retries: self.rate_limit_retries,
            }),
        })
    }
}

/// Whether a request carries the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    Required,
}

/// How long a session's access token has left (ms; 0 if unknown): for a
/// session fresh from a login or refresh, its lifetime.
fn lifetime_left(session: &Session) -> u64 {
    session
        .expires_at_ms
        .map_or(0, |at| at.saturating_sub(now_ms()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Client {
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            session: None,
            http: None,
            refresh_hook: None,
            on_session_changed: None,
            on_logged_out: None,
            persistence: None,
            refresh_margin: Duration::from_secs(30),
            rate_limit_retries: 0,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The current session, if logged in.
    pub fn session(&self) -> Option<Session> {
        self.inner
            .session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the session, persists it (see
    /// [`ClientBuilder::session_callbacks`]) and tells the listener.
    pub fn set_session(&self, session: Option<Session>) {
        self.adopt(session.clone());
        if let Some(p) = &self.inner.persistence
            && let Err(e) = (p.save)(session.as_ref())
        {
            tracing::warn!(error = %e, "could not persist the session");
        }
        if let Some(f) = &self.inner.on_session_changed {
            f(session.as_ref());
        }
    }

    /// Takes `session` as the current one, without persisting it (it came
    /// from the persisted copy).
    fn adopt(&self, session: Option<Session>) {
        if let Some(s) = &session {
            self.inner
                .token_lifetime_ms
                .store(lifetime_left(s), std::sync::atomic::Ordering::Relaxed);
        }
        *self
            .inner
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner()) = session;
    }

    /// What the persisted copy holds now, if it differs from `used` (the
    /// access token this client last used): tokens another process
    /// refreshed, or `Some(None)` when it ended the session. `None` when it
    /// is the same, or there is no persistence.
    fn persisted_change(&self, used: &str) -> Result<Option<Option<Session>>, Error> {
        let Some(p) = &self.inner.persistence else {
            return Ok(None);
        };
        let stored = (p.reload)().map_err(Error::Persistence)?;
        let current_user = self.session().map(|s| s.user_id);
        Ok(match stored {
            // Another account's session now: ours is not there any more.
            Some(s) if Some(&s.user_id) != current_user.as_ref() => Some(None),
            Some(s) if s.access_token == used => None,
            other => Some(other),
        })
    }

    /// Takes the cross-process refresh lock, if there is one.
    async fn lock_persisted(&self) -> Result<Option<LockGuard>, Error> {
        match self.inner.persistence.as_ref().and_then(|p| p.lock.clone()) {
            Some(lock) => lock().await.map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    /// Sends a request and decodes the JSON answer (or the Matrix error).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
    ) -> Result<Value, Error> {
        let mut refreshed = false;
        let mut rate_limited = 0;
        loop {
            let token = match auth {
                Auth::None => None,
                Auth::Required => Some(self.fresh_access_token().await?),
            };
            match self
                .send_once(method.clone(), path, body, token.as_deref())
                .await
            {
                Err(Error::Matrix(e))
                    if auth == Auth::Required && e.errcode == ErrorCode::UnknownToken =>
                {
                    let has_refresh = self.session().and_then(|s| s.refresh_token).is_some();
                    if e.soft_logout && has_refresh && !refreshed && !in_refresh() {
                        self.refresh_after(token.as_deref().unwrap_or_default())
                            .await?;
                        refreshed = true;
                        continue;
                    }
                    // Another process sharing the session may have
                    // refreshed it (the server then revokes the token it
                    // replaced): take its tokens and try again.
                    if !refreshed
                        && let Some(change) =
                            self.persisted_change(token.as_deref().unwrap_or_default())?
                    {
                        refreshed = true;
                        let ended = change.is_none();
                        self.adopt(change);
                        if ended {
                            return Err(Error::NotLoggedIn);
                        }
                        continue;
                    }
                    if !e.soft_logout {
                        self.set_session(None);
                    }
                    if let Some(f) = &self.inner.on_logged_out {
                        f(&e);
                    }
                    return Err(Error::LoggedOut(e));
                }
                Err(Error::Matrix(e))
                    if e.errcode == ErrorCode::LimitExceeded
                        && rate_limited < self.inner.rate_limit_retries =>
                {
                    rate_limited += 1;
                    let wait = e
                        .retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(60));
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// One HTTP exchange, no retries.
    pub(crate) async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Value, Error> {
        let mut req = self.inner.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return json
                .ok_or_else(|| Error::InvalidResponse(format!("non-JSON success body: {text}")));
        }
        match json.and_then(|v| MatrixError::from_response(status, retry_after.as_deref(), v)) {
            Some(e) => Err(Error::Matrix(e)),
            None => Err(Error::Http { status, body: text }),
        }
    }

    /// The access token to use now, refreshing first if it is about to expire.
    async fn fresh_access_token(&self) -> Result<String, Error> {
        let session = self.session().ok_or(Error::NotLoggedIn)?;
        let mut margin = u64::try_from(self.inner.refresh_margin.as_millis()).unwrap_or(0);
        let lifetime = self
            .inner
            .token_lifetime_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if lifetime > 0 {
            margin = margin.min(lifetime / 2);
        }
        let near_expiry = session
            .expires_at_ms
            .is_some_and(|at| at.saturating_sub(margin) <= now_ms());
        if near_expiry && session.refresh_token.is_some() && !in_refresh() {
            self.refresh_after(&session.access_token).await?;
            return self
                .session()
                .map(|s| s.access_token)
                .ok_or(Error::NotLoggedIn);
        }
        Ok(session.access_token)
    }

    /// Refreshes unless another task (or process) already replaced
    /// `stale` meanwhile: concurrent requests share one refresh.
    async fn refresh_after(&self, stale: &str) -> Result<(), Error> {
        let _guard = self.inner.refreshing.lock().await;
        let _shared = self.lock_persisted().await?;
        if self.take_persisted(stale)? {
            return Ok(());
        }
        let current = self.session().ok_or(Error::NotLoggedIn)?;
        if current.access_token != stale {
            return Ok(());
        }
        self.refresh_locked(current).await
    }

    /// Adopts what another process persisted since `used`, if anything;
    /// `true` if it did. A session that process ended is ended here too.
    fn take_persisted(&self, used: &str) -> Result<bool, Error> {
        match self.persisted_change(used)? {
            None => Ok(false),
            Some(None) => {
                self.adopt(None);
                Err(Error::NotLoggedIn)
            }
            Some(session) => {
                self.adopt(session);
                Ok(true)
            }
        }
    }

    /// Refreshes now (matrix-js-sdk's `refreshToken`), whatever the expiry.
    pub async fn refresh(&self) -> Result<Session, Error> {
        if in_refresh() {
            return Err(Error::InvalidResponse(
                "refresh() called from inside a refresh hook; use refresh_request()".into(),
            ));
        }
        let _guard = self.inner.refreshing.lock().await;
        let _shared = self.lock_persisted().await?;
        let used = self.session().ok_or(Error::NotLoggedIn)?.access_token;
        self.take_persisted(&used)?;
        let current = self.session().ok_or(Error::NotLoggedIn)?;
        self.refresh_locked(current).await?;
        self.session().ok_or(Error::NotLoggedIn)
    }

    async fn refresh_locked(&self, current: Session) -> Result<(), Error> {
        let refresh_token = current.refresh_token.clone().ok_or(Error::NoRefreshToken)?;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        let tokens = loop {
            let attempt_once = async {
                match &self.inner.refresh_hook {
                    Some(hook) => hook(self.clone(), refresh_token.clone()).await,
                    None => self.refresh_request(&refresh_token).await,
                }
            };
            let error = match IN_REFRESH.scope((), attempt_once).await {
                Ok(t) => break t,
                Err(e) => e,
            };
            // Transient failures (network, server errors, rate limits) are
            // tried again with back-off, and end as errors, not as a
            // logout: the refresh token may well still be good.
            let transient = match &error {
                Error::Transport(_) | Error::Http { .. } => true,
                Error::Matrix(e) => e.status >= 500 || e.errcode == ErrorCode::LimitExceeded,
                _ => false,
            };
            match error {
                _ if transient && attempt >= 3 => return Err(error),
                Error::Matrix(e) if transient => {
                    if let Some(wait) = e.retry_after {
                        delay = wait.min(MAX_REFRESH_WAIT);
                    }
                }
                _ if transient => {}
                Error::Matrix(e) => {
                    // The refresh token is dead: the session cannot
                    // continue (after a soft logout the client may log in
                    // again to the same device, so its state is kept).
                    if !e.soft_logout {
                        self.set_session(None);
                    }
                    if let Some(f) = &self.inner.on_logged_out {
                        f(&e);
                    }
                    return Err(Error::LoggedOut(e));
                }
                other => return Err(other),
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REFRESH_WAIT);
        };
        let next = Session {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.or(current.refresh_token),
            expires_at_ms: tokens.expires_in_ms.map(|ms| now_ms().saturating_add(ms)),
            ..current
        };
        self.set_session(Some(next));
        Ok(())
    }

    /// `POST /refresh` with `refresh_token`, without the (expired) access
    /// token: the default refresh, and the one a [`RefreshHook`] may call.
    /// It changes nothing in the client; [`Client::refresh`] does.
    pub async fn refresh_request(&self, refresh_token: &str) -> Result<TokenRefresh, Error> {
        let v = self
            .send_once(
                Method::POST,
                "/_matrix/client/v3/refresh",
                Some(&json!({ "refresh_token": refresh_token })),
                None,
            )
            .await?;
        serde_json::from_value(v).map_err(|e| Error::InvalidResponse(e.to_string()))
    }
}
