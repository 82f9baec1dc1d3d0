//! The matrix-js-sdk authentication guides (seeds 000–002), in Rust. Every
//! example here compiles as a doc test.
//!
//! # Server discovery
//! ```no_run
//! # async fn f() {
//! use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
//! let config = AutoDiscovery::new().find_client_config("matrix.org").await;
//! let hs = config.homeserver;
//! match hs.state {
//!     DiscoveryState::Success => println!("Homeserver URL: {}", hs.base_url.unwrap()),
//!     // Terminal failure: do not proceed.
//!     DiscoveryState::FailError => eprintln!("Discovery failed: {:?}", hs.error),
//!     // FailPrompt or Prompt: warn the user but may still proceed.
//!     _ => eprintln!("Discovery incomplete: {:?}", hs.error),
//! }
//! # }
//! ```
//!
//! # Checking available login flows
//! ```no_run
//! # async fn f() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::Client;
//! let temp = Client::builder("https://matrix.org").build()?;
//! for flow in temp.login_flows().await? {
//!     println!("Supported flow: {} (identity providers: {})", flow.kind, flow.identity_providers.len());
//! }
//! # Ok(()) }
//! ```
//!
//! # Password login (and the temporary-client pattern)
//! `login_request` leaves the temporary client alone; a new client is built
//! from the whole response.
//! ```no_run
//! # async fn f() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{Client, LoginRequest, UserIdentifier};
//! let temp = Client::builder("https://matrix.org").build()?;
//! let response = temp
//!     .login_request(
//!         LoginRequest::password(UserIdentifier::user("@alice:matrix.org"), "correct horse battery staple")
//!             .initial_device_display_name("My App")
//!             .refresh_token(true),
//!     )
//!     .await?;
//! let client = Client::builder("https://matrix.org").session(response.session()).build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # Login with a phone number or an email address
//! ```no_run
//! # async fn f(temp: gatehouse_client::Client) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{LoginRequest, UserIdentifier};
//! let by_phone = temp.login_request(LoginRequest::password(UserIdentifier::phone("GB", "07700 900000"), "pw")).await?;
//! let by_email = temp.login_request(LoginRequest::password(UserIdentifier::email("alice@example.org"), "pw")).await?;
//! # let _ = (by_phone, by_email); Ok(()) }
//! ```
//!
//! # Using an existing access token
//! ```no_run
//! # async fn f() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{Client, Session};
//! let session = Session { access_token: "syt_…".into(), user_id: "@alice:matrix.org".into(), device_id: Some("ABCDEF".into()), ..Session::default() };
//! let client = Client::builder("https://matrix.org").session(session).build()?;
//! println!("{}", client.whoami().await?.user_id);
//! # Ok(()) }
//! ```
//!
//! # Token-based login and SSO
//! ```no_run
//! # async fn f(temp: gatehouse_client::Client, login_token_from_callback: String) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{LoginRequest, SsoAction, SsoKind};
//! let url = temp.sso_login_url("https://my-app.example.com/callback", SsoKind::Sso, Some("google"), Some(SsoAction::Login));
//! println!("Open {url}");
//! // The homeserver redirects back with ?loginToken=…; exchange it:
//! let response = temp.login_request(LoginRequest::token(login_token_from_callback)).await?;
//! # let _ = response; Ok(()) }
//! ```
//! The CLI does the whole round trip: `gatehouse client login --sso`.
//!
//! # Token refresh
//! The client refreshes by itself shortly before a known expiry and on a
//! soft-logout 401, once for all concurrent requests; the hook replaces how
//! (matrix-js-sdk's `tokenRefreshFunction`), and `on_session_changed` is
//! where new tokens are persisted.
//! ```no_run
//! # fn f(session: gatehouse_client::Session) -> Result<(), gatehouse_client::Error> {
//! use std::sync::Arc;
//! use gatehouse_client::{Client, Error, MatrixError, TokenRefresh};
//! let client = Client::builder("https://matrix.org")
//!     .session(session)
//!     .refresh_hook(Arc::new(|client: Client, refresh_token: String| {
//!         Box::pin(async move {
//!             // e.g. call a custom endpoint; here the standard one. What the
//!             // hook returns decides what happens next: a Matrix error
//!             // (M_UNKNOWN_TOKEN: the refresh token is dead) ends the
//!             // session (`on_logged_out`); a transport error, a 5xx or a
//!             // 429 is transient, retried with back-off, and the session
//!             // is kept. So pass errors on as they are, never turn a
//!             // network failure into a Matrix error.
//!             let http = reqwest::Client::new();
//!             let r = http.post(format!("{}/_matrix/client/v3/refresh", client.base_url()))
//!                 .json(&serde_json::json!({"refresh_token": refresh_token})).send().await?;
//!             let status = r.status().as_u16();
//!             let retry_after = r.headers().get("retry-after")
//!                 .and_then(|v| v.to_str().ok()).map(str::to_owned);
//!             let body: serde_json::Value = r.json().await?;
//!             if status != 200 {
//!                 return Err(match MatrixError::from_response(status, retry_after.as_deref(), body.clone()) {
//!                     Some(e) => Error::Matrix(e),           // dead (or 5xx/429: retried)
//!                     None => Error::Http { status, body: body.to_string() }, // transient
//!                 });
//!             }
//!             serde_json::from_value::<TokenRefresh>(body)
//!                 .map_err(|e| Error::InvalidResponse(e.to_string()))
//!         })
//!     }))
//!     .on_session_changed(|s| println!("persist {:?}", s.map(|s| s.expires_at_ms)))
//!     .on_logged_out(|e| eprintln!("logged out: {e}"))
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # Logout and deactivation
//! ```no_run
//! # async fn f(client: gatehouse_client::Client, session: String) -> Result<(), gatehouse_client::Error> {
//! use serde_json::json;
//! client.deactivate_account(
//!     Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:matrix.org"}, "password": "pw", "session": session})),
//!     true, // erase
//! ).await?;
//! # client.logout().await?; Ok(()) }
//! ```
//!
//! # Error handling
//! ```no_run
//! # async fn f(client: gatehouse_client::Client) {
//! use gatehouse_client::{Error, ErrorCode};
//! match client.whoami().await {
//!     Err(Error::Matrix(e)) if e.errcode == ErrorCode::LimitExceeded => eprintln!("retry after {:?}", e.retry_after),
//!     Err(Error::LoggedOut(e)) => eprintln!("session over (soft: {})", e.soft_logout),
//!     Err(e) => eprintln!("{e}"),
//!     Ok(me) => println!("{}", me.user_id),
//! }
//! # }
//! ```
//!
//! # InteractiveAuth: a password change (basic UIA flow)
//! ```no_run
//! # async fn f(client: gatehouse_client::Client) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{AuthDict, AuthType, InteractiveAuth, UserIdentifier};
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AuthType>();
//! let c = client.clone();
//! // The result type is the request's own: `()` here.
//! let ia: InteractiveAuth<()> = InteractiveAuth::builder(
//!     move |auth, _background| { let c = c.clone(); Box::pin(async move { c.set_password("new password", true, auth).await }) },
//!     move |stage, status| { if let Some(e) = &status.error { eprintln!("{e}"); } let _ = tx.send(stage.clone()); },
//! ).build();
//! let driver = ia.clone();
//! tokio::spawn(async move {
//!     while let Some(stage) = rx.recv().await {
//!         if stage == AuthType::Password {
//!             let me = UserIdentifier::user("@alice:matrix.org");
//!             let _ = driver.submit_auth_dict(AuthDict::password(&me, "old password"), false).await;
//!         }
//!     }
//! });
//! ia.attempt_auth().await?;
//! # Ok(()) }
//! ```
//!
//! # Deleting devices
//! ```no_run
//! # async fn f(client: gatehouse_client::Client, auth: Option<serde_json::Value>) -> Result<(), gatehouse_client::Error> {
//! client.delete_device("OLDPHONE", auth.clone()).await?;
//! client.delete_devices(&["A".into(), "B".into()], auth).await?;
//! # Ok(()) }
//! ```
//!
//! # Providing inputs; email verification with polling
//! ```no_run
//! # async fn f(client: gatehouse_client::Client) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{AuthInputs, InteractiveAuth, TokenPurpose};
//! use serde_json::json;
//! let (c1, c2) = (client.clone(), client.clone());
//! let ia = InteractiveAuth::builder(
//!     move |auth, _| { let c = c1.clone(); Box::pin(async move { c.register(json!({"username": "alice", "password": "pw"}), auth).await }) },
//!     |stage, status| println!("{stage}: email sid {:?}", status.email_sid),
//! )
//! .inputs(AuthInputs { email_address: Some("alice@example.org".into()), ..AuthInputs::default() })
//! .request_email_token(move |email, secret, attempt, _session| {
//!     let c = c2.clone();
//!     Box::pin(async move { Ok(c.request_email_token(TokenPurpose::Register, &email, &secret, attempt, None).await?.sid) })
//! })
//! .build();
//! let poller = ia.clone();
//! tokio::spawn(async move { loop { tokio::time::sleep(std::time::Duration::from_secs(2)).await; poller.poll().await; } });
//! let response = ia.attempt_auth().await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! # Cross-signing key upload
//! Seed 001's `authUploadDeviceSigningKeys` pattern: try without auth
//! (the first upload needs none); on a UIA challenge, drive the upload with
//! InteractiveAuth, answering only the password stage.
//! ```no_run
//! # async fn f(client: gatehouse_client::Client, keys: serde_json::Value, current_password: String) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{AuthDict, AuthType, InteractiveAuth, UserIdentifier};
//! match client.upload_device_signing_keys(keys.clone(), None).await {
//!     Ok(()) => {}
//!     Err(e) if e.matrix().is_some_and(|m| m.is_uia_challenge()) => {
//!         let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//!         let c = client.clone();
//!         let ia: InteractiveAuth<()> = InteractiveAuth::builder(
//!             move |auth, _| {
//!                 let (c, keys) = (c.clone(), keys.clone());
//!                 Box::pin(async move { c.upload_device_signing_keys(keys, auth).await })
//!             },
//!             move |stage, status| { let _ = tx.send((stage.clone(), status.errcode.clone())); },
//!         )
//!         .supported_stages(vec![AuthType::Password.to_string()])
//!         .build();
//!         let driver = ia.clone();
//!         let me = UserIdentifier::user(client.session().map(|s| s.user_id).unwrap_or_default());
//!         tokio::spawn(async move {
//!             while let Some((stage, errcode)) = rx.recv().await {
//!                 // A refused password is not retried with the same one.
//!                 if stage == AuthType::Password && errcode.is_none() {
//!                     let auth = AuthDict::password(&me, current_password.clone());
//!                     let _ = driver.submit_auth_dict(auth, false).await;
//!                 }
//!             }
//!         });
//!         ia.attempt_auth().await?;
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! # Resuming a UIA session; errors; fallback pages
//! ```no_run
//! # async fn f(client: gatehouse_client::Client, stored_session: String, secret: String, sid: String) {
//! use gatehouse_client::{Error, InteractiveAuth};
//! let c = client.clone();
//! let ia = InteractiveAuth::builder(
//!     move |auth, _| { let c = c.clone(); Box::pin(async move { c.deactivate_account(auth, false).await }) },
//!     |_, _| {},
//! )
//! .session_id(stored_session.clone())
//! .client_secret(secret)
//! .email_sid(sid)
//! .build();
//! match ia.attempt_auth().await {
//!     Err(Error::NoAuthFlowFound { required_stages, .. }) => eprintln!("cannot do {required_stages:?}"),
//!     other => println!("{other:?}"),
//! }
//! // A stage the app cannot do natively: send the user to its fallback page.
//! println!("{}", client.fallback_auth_url("m.login.recaptcha", &stored_session));
//! # }
//! ```
