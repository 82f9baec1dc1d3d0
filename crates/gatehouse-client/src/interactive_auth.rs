//! `InteractiveAuth`: drives User-Interactive Authentication with
//! matrix-js-sdk's contract.
//!
//! The application supplies `do_request` (makes the protected request with
//! the auth dict it is given) and `state_updated` (called with the stage to
//! complete and its status). [`InteractiveAuth::attempt_auth`] resolves with
//! the final response; in between, the application answers each stage with
//! [`InteractiveAuth::submit_auth_dict`], and for email stages calls
//! [`InteractiveAuth::poll`] until the link is clicked. `m.login.dummy` is
//! submitted automatically; an email token is requested automatically when
//! an email address is given as input.
//!
//! ```no_run
//! # async fn demo(client: gatehouse_client::Client) -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{AuthDict, AuthType, InteractiveAuth, UserIdentifier};
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let c = client.clone();
//! let ia = InteractiveAuth::builder(
//!     move |auth, _background| {
//!         let c = c.clone();
//!         Box::pin(async move { c.delete_device("OLDPHONE", auth).await })
//!     },
//!     move |stage, _status| { let _ = tx.send(stage.clone()); },
//! )
//! .build();
//! let driver = ia.clone();
//! tokio::spawn(async move {
//!     while let Some(stage) = rx.recv().await {
//!         if stage == AuthType::Password {
//!             let auth = AuthDict::password(&UserIdentifier::user("alice"), "secret");
//!             let _ = driver.submit_auth_dict(auth, false).await;
//!         }
//!     }
//! });
//! ia.attempt_auth().await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::error::Error;

pub const DUMMY: &str = "m.login.dummy";
pub const EMAIL: &str = "m.login.email.identity";
pub const MSISDN: &str = "m.login.msisdn";

mod stage;

pub use stage::{AuthDict, AuthType};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type DoRequest<T> = Arc<dyn Fn(Option<Value>, bool) -> BoxFuture<Result<T, Error>> + Send + Sync>;
type StateUpdated = Arc<dyn Fn(&AuthType, &StageStatus) + Send + Sync>;
type RequestEmailToken = Arc<
    dyn Fn(String, String, u64, Option<String>) -> BoxFuture<Result<String, Error>> + Send + Sync,
>;
type BusyChanged = Arc<dyn Fn(bool) + Send + Sync>;

/// What the user already told the application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInputs {
    pub email_address: Option<String>,
    pub phone_country: Option<String>,
    pub phone_number: Option<String>,
    pub registration_token: Option<String>,
}

/// The status passed to `state_updated` with a stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageStatus {
    pub errcode: Option<String>,
    pub error: Option<String>,
    /// Set once an email token was requested for this stage.
    pub email_sid: Option<String>,
}

/// The flow-selection rule: flows are ranked by how many of their stages
/// the client does not support, then by length; the first whose
/// email/phone stages match the inputs wins.
pub fn choose_flow(
    flows: &[Vec<String>],
    have_email: bool,
    have_msisdn: bool,
    supported: Option<&[String]>,
) -> Result<Vec<String>, Error> {
    let unsupported =
        |f: &Vec<String>| supported.map_or(0, |s| f.iter().filter(|st| !s.contains(st)).count());
    let mut ranked: Vec<&Vec<String>> = flows.iter().collect();
    ranked.sort_by_key(|f| (unsupported(f), f.len()));
    for flow in ranked {
        let has_email = flow.iter().any(|s| s == EMAIL);
        let has_msisdn = flow.iter().any(|s| s == MSISDN);
        if has_email == have_email && has_msisdn == have_msisdn {
            return Ok(flow.clone());
        }
    }
    let mut required = Vec::new();
    if have_email {
        required.push(EMAIL.to_owned());
    }
    if have_msisdn {
        required.push(MSISDN.to_owned());
    }
    Err(Error::NoAuthFlowFound {
        required_stages: required,
        flows: flows.to_vec(),
    })
}

#[derive(Default)]
struct State {
    /// The last 401 body (flows, params, session, completed…).
    data: Value,
    session_id: Option<String>,
    client_secret: String,
    email_sid: Option<String>,
    email_attempt: u64,
    /// The stage last handed to `state_updated`.
    current_stage: Option<String>,
    /// The `registration_token` input was submitted (once: if refused, the
    /// application is asked).
    token_submitted: bool,
    done: bool,
}

struct Shared<T> {
    do_request: DoRequest<T>,
    state_updated: StateUpdated,
    request_email_token: Option<RequestEmailToken>,
    busy_changed: Option<BusyChanged>,
    inputs: AuthInputs,
    supported_stages: Option<Vec<String>>,
    state: Mutex<State>,
    finished: Mutex<Option<oneshot::Sender<Result<T, Error>>>>,
    /// Held while a submission is in flight: submissions go one at a time
    /// (two concurrent 200s could register twice), and `poll` skips its
    /// turn rather than queue behind one.
    submitting: tokio::sync::Mutex<()>,
}

/// Drives one UIA-protected request whose success is a `T` (the
/// request's own response type); cheap to clone (clones share state).
pub struct InteractiveAuth<T = Value> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for InteractiveAuth<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Builds an [`InteractiveAuth`].
pub struct InteractiveAuthBuilder<T = Value> {
    do_request: DoRequest<T>,
    state_updated: StateUpdated,
    request_email_token: Option<RequestEmailToken>,
    busy_changed: Option<BusyChanged>,
    inputs: AuthInputs,
    supported_stages: Option<Vec<String>>,
    session_id: Option<String>,
    client_secret: Option<String>,
    email_sid: Option<String>,
}

impl<T: Send + 'static> InteractiveAuthBuilder<T> {
    pub fn inputs(mut self, inputs: AuthInputs) -> Self {
        self.inputs = inputs;
        self
    }
    /// Stages this client can do; flows needing others rank last.
    pub fn supported_stages(mut self, stages: Vec<String>) -> Self {
        self.supported_stages = Some(stages);
        self
    }
    /// How to request an email token: `(email, client_secret, attempt, session) -> sid`.
    pub fn request_email_token(
        mut self,
        f: impl Fn(String, String, u64, Option<String>) -> BoxFuture<Result<String, Error>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.request_email_token = Some(Arc::new(f));
        self
    }
    pub fn busy_changed(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.busy_changed = Some(Arc::new(f));
        self
    }
    /// Resume a session started earlier (with its client secret and email sid).
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }
    pub fn email_sid(mut self, sid: impl Into<String>) -> Self {
        self.email_sid = Some(sid.into());
        self
    }
    pub fn build(self) -> InteractiveAuth<T> {
        let state = State {
            session_id: self.session_id,
            client_secret: self.client_secret.unwrap_or_else(random_secret),
            email_sid: self.email_sid,
            data: json!({}),
            ..State::default()
        };
        InteractiveAuth {
            shared: Arc::new(Shared {
                do_request: self.do_request,
                state_updated: self.state_updated,
                request_email_token: self.request_email_token,
                busy_changed: self.busy_changed,
                inputs: self.inputs,
                supported_stages: self.supported_stages,
                state: Mutex::new(state),
                finished: Mutex::new(None),
                submitting: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// A new `client_secret`: 32 characters from the OS's CSPRNG. It is the
/// secret that proves, with the `sid`, that this client owns a validated
/// address, so it must not be guessable.
fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    let mut bytes = [0u8; 32];
    while out.len() < 32 {
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        let wanted = 32 - out.len();
        // Bytes of 248 and up are dropped: 248 = 4 × 62 keeps the choice uniform.
        out.extend(
            bytes
                .iter()
                .filter(|&&b| b < 248)
                .map(|&b| char::from(ALPHABET[usize::from(b % 62)]))
                .take(wanted),
        );
    }
    out
}

/// What to do after a response.
enum Next {
    Finished,
    Submit(Value),
    WaitForUser,
}

impl<T: Send + 'static> InteractiveAuth<T> {
    /// `do_request(auth, background)` makes the protected request;
    /// `state_updated(stage, status)` asks the application for a stage.
    pub fn builder(
        do_request: impl Fn(Option<Value>, bool) -> BoxFuture<Result<T, Error>> + Send + Sync + 'static,
        state_updated: impl Fn(&AuthType, &StageStatus) + Send + Sync + 'static,
    ) -> InteractiveAuthBuilder<T> {
        InteractiveAuthBuilder {
            do_request: Arc::new(do_request),
            state_updated: Arc::new(state_updated),
            request_email_token: None,
            busy_changed: None,
            inputs: AuthInputs::default(),
            supported_stages: None,
            session_id: None,
            client_secret: None,
            email_sid: None,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn session_id(&self) -> Option<String> {
        self.state().session_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.state().client_secret.clone()
    }
    pub fn email_sid(&self) -> Option<String> {
        self.state().email_sid.clone()
    }
    pub fn set_email_sid(&self, sid: impl Into<String>) {
        self.state().email_sid = Some(sid.into());
    }
    /// The server's `params` for a stage.
    pub fn stage_params(&self, stage: &str) -> Option<Value> {
        self.state()
            .data
            .get("params")
            .and_then(|p| p.get(stage))
            .cloned()
    }
    /// The last challenge's `flows`, as stage lists.
    pub fn flows(&self) -> Vec<Vec<String>> {
        flows_of(&self.state().data)
    }

    /// Starts (or resumes) authentication and resolves with the protected
    /// request's response, or its error.
    pub async fn attempt_auth(&self) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        *self
            .shared
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let first = self.session_id().map(|s| json!({ "session": s }));
        self.run(first, false).await;
        rx.await
            .unwrap_or_else(|_| Err(Error::InvalidResponse("authentication abandoned".into())))
    }

    /// Whether `attempt_auth` runs and has not finished: submissions
    /// outside of it would have nobody to hand their result to.
    fn running(&self) -> bool {
        !self.state().done
            && self
                .shared
                .finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    /// Submits a stage's auth dict ([`AuthDict`], or any JSON object; the
    /// session is added), after any submission in flight. With
    /// `background`, errors other than a new challenge are not reported.
    /// An error unless [`attempt_auth`](Self::attempt_auth) is running:
    /// its result would have nobody to go to.
    pub async fn submit_auth_dict(
        &self,
        auth: impl Into<Value>,
        background: bool,
    ) -> Result<(), Error> {
        if !self.running() {
            return Err(Error::UiaNotRunning);
        }
        let _turn = self.shared.submitting.lock().await;
        self.run_locked(Some(auth.into()), background).await;
        Ok(())
    }

    /// Requests a new email token (a new `send_attempt`: the server sends
    /// the message again), for a person who did not get the first one.
    pub async fn resend_email_token(&self) -> Result<(), Error> {
        let mut status = StageStatus::default();
        self.request_email(&mut status).await
    }

    /// Asks the server, in the background, whether the current stage was
    /// completed elsewhere: the email link opened (the email credentials
    /// are sent), or a fallback page finished (only the session is sent).
    /// Does nothing while a submission is in flight, before the server
    /// gave a session, or outside [`attempt_auth`](Self::attempt_auth).
    pub async fn poll(&self) {
        if !self.running() {
            return;
        }
        let Ok(_turn) = self.shared.submitting.try_lock() else {
            return;
        };
        let auth = {
            let s = self.state();
            if s.session_id.is_none() {
                return;
            }
            match (&s.email_sid, s.current_stage.as_deref()) {
                (Some(sid), Some(EMAIL)) => {
                    AuthDict::email_identity(sid.clone(), s.client_secret.clone()).into()
                }
                _ => json!({}),
            }
        };
        self.run_locked(Some(auth), true).await;
    }

    fn finish(&self, result: Result<T, Error>) {
        self.state().done = true;
        if let Some(tx) = self
            .shared
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(result);
        }
    }

    /// Sends requests until the application must act or the result is
    /// known, in its turn.
    async fn run(&self, auth: Option<Value>, background: bool) {
        let _turn = self.shared.submitting.lock().await;
        self.run_locked(auth, background).await;
    }

    /// [`run`](Self::run) for a caller that holds the submission turn.
    async fn run_locked(&self, mut auth: Option<Value>, background: bool) {
        loop {
            if let (Some(Value::Object(map)), Some(session)) = (auth.as_mut(), self.session_id()) {
                map.entry("session").or_insert(Value::String(session));
            }
            let busy = !background;
            if busy && let Some(f) = &self.shared.busy_changed {
                f(true);
            }
            let result = (self.shared.do_request)(auth.take(), background).await;
            if busy && let Some(f) = &self.shared.busy_changed {
                f(false);
            }
            match self.after(result, background).await {
                Next::Finished | Next::WaitForUser => return,
                Next::Submit(next) => auth = Some(next),
            }
        }
    }

    async fn after(&self, result: Result<T, Error>, background: bool) -> Next {
        let known_flows = self.state().data.get("flows").is_some();
        let challenge = match result {
            Ok(v) => {
                self.finish(Ok(v));
                return Next::Finished;
            }
            Err(Error::Matrix(e)) if e.is_uia_challenge() => e,
            // A 401 without flows during authentication (some servers
            // answer a failed stage so): the flows, stages done and session
            // stay as they were, and the error goes to the stage.
            Err(Error::Matrix(mut e)) if e.status == 401 && known_flows && e.body.is_object() => {
                let previous = self.state().data.clone();
                if let Some(body) = e.body.as_object_mut() {
                    for key in ["flows", "params", "completed", "session"] {
                        if let (false, Some(v)) = (body.contains_key(key), previous.get(key)) {
                            body.insert(key.to_owned(), v.clone());
                        }
                    }
                }
                e
            }
            Err(e) => {
                if background {
                    tracing::debug!(error = %e, "background UIA submission failed");
                    return Next::WaitForUser;
                }
                self.finish(Err(e));
                return Next::Finished;
            }
        };
        {
            let mut s = self.state();
            if let Some(id) = challenge.body.get("session").and_then(Value::as_str) {
                s.session_id = Some(id.to_owned());
            }
            s.data = challenge.body.clone();
        }
        let flows = flows_of(&challenge.body);
        let (have_email, have_msisdn) = {
            let s = self.state();
            let inputs = &self.shared.inputs;
            (
                inputs.email_address.is_some() || s.email_sid.is_some(),
                inputs.phone_country.is_some() && inputs.phone_number.is_some(),
            )
        };
        let flow = match choose_flow(
            &flows,
            have_email,
            have_msisdn,
            self.shared.supported_stages.as_deref(),
        ) {
            Ok(f) => f,
            Err(e) => {
                self.finish(Err(e));
                return Next::Finished;
            }
        };
        let completed: Vec<String> = challenge
            .body
            .get("completed")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let Some(stage) = flow.iter().find(|s| !completed.contains(s)).cloned() else {
            // Every stage done, yet still a challenge: nothing left to ask
            // the user, so waiting would wait forever.
            self.finish(Err(Error::InvalidResponse(
                "the server challenges again, but every stage of the chosen flow is completed"
                    .into(),
            )));
            return Next::Finished;
        };
        let mut status = StageStatus {
            errcode: challenge
                .body
                .get("errcode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            error: challenge
                .body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            email_sid: self.email_sid(),
        };
        // As soon as the chosen flow has an email stage (as matrix-js-sdk
        // does): the email is on its way while the user does other stages,
        // and a refusal (address in use, unknown) ends the attempt at once.
        if flow.iter().any(|s| s == EMAIL)
            && status.email_sid.is_none()
            && let Err(e) = self.request_email(&mut status).await
        {
            self.finish(Err(e));
            return Next::Finished;
        }
        if stage == DUMMY {
            return Next::Submit(AuthDict::dummy().into());
        }
        // A registration token the user already gave: tried once.
        if stage == AuthType::RegistrationToken.as_str()
            && let Some(token) = self.shared.inputs.registration_token.clone()
        {
            let mut s = self.state();
            if !s.token_submitted {
                s.token_submitted = true;
                return Next::Submit(AuthDict::registration_token(token).into());
            }
        }
        self.state().current_stage = Some(stage.clone());
        (self.shared.state_updated)(&AuthType::parse(&stage), &status);
        Next::WaitForUser
    }

    /// Requests the email token for the email stage, when an address is
    /// known; its failure fails the authentication (as in matrix-js-sdk).
    async fn request_email(&self, status: &mut StageStatus) -> Result<(), Error> {
        let (Some(email), Some(request)) = (
            self.shared.inputs.email_address.clone(),
            self.shared.request_email_token.clone(),
        ) else {
            return Ok(());
        };
        let (secret, attempt, session) = {
            let mut s = self.state();
            s.email_attempt += 1;
            (
                s.client_secret.clone(),
                s.email_attempt,
                s.session_id.clone(),
            )
        };
        let sid = request(email, secret, attempt, session).await?;
        self.set_email_sid(sid.clone());
        status.email_sid = Some(sid);
        Ok(())
    }
}

/// Answers one stage: the auth dict to submit, or `None` to give up.
pub type StageAnswer = Pin<Box<dyn Future<Output = Option<Value>> + Send>>;

/// Runs a UIA-protected request to the end, answering each stage with
/// `answer(stage, status, session)` — the whole loop for bots, CLIs and
/// tests. `m.login.dummy` is done automatically; when `answer` gives up,
/// the result is the server's last challenge as an error.
///
/// ```no_run
/// # async fn f(client: gatehouse_client::Client) -> Result<(), gatehouse_client::Error> {
/// use serde_json::json;
/// let c = client.clone();
/// gatehouse_client::authenticate(
///     move |auth| { let c = c.clone(); Box::pin(async move { c.delete_device("OLD", auth).await.map(|()| json!({})) }) },
///     |stage, _status, _session| Box::pin(async move {
///         (stage == "m.login.password").then(|| json!({"type": stage,
///             "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret"}))
///     }),
/// ).await?;
/// # Ok(()) }
/// ```
pub async fn authenticate<T: Send + 'static>(
    do_request: impl Fn(Option<Value>) -> BoxFuture<Result<T, Error>> + Send + Sync + 'static,
    answer: impl Fn(String, StageStatus, Option<String>) -> StageAnswer + Send + Sync + 'static,
) -> Result<T, Error> {
    authenticate_with(|b| b, do_request, answer).await
}

/// [`authenticate`] with inputs and hooks set on a builder first.
pub async fn authenticate_with<T: Send + 'static>(
    configure: impl FnOnce(InteractiveAuthBuilder<T>) -> InteractiveAuthBuilder<T>,
    do_request: impl Fn(Option<Value>) -> BoxFuture<Result<T, Error>> + Send + Sync + 'static,
    answer: impl Fn(String, StageStatus, Option<String>) -> StageAnswer + Send + Sync + 'static,
) -> Result<T, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, StageStatus)>();
    let builder = InteractiveAuth::builder(
        move |auth, _| do_request(auth),
        move |stage, status| {
            let _ = tx.send((stage.as_str().to_owned(), status.clone()));
        },
    );
    let ia = configure(builder).build();
    let driver = ia.clone();
    let mut answering = tokio::spawn(async move {
        while let Some((stage, status)) = rx.recv().await {
            match answer(stage, status, driver.session_id()).await {
                Some(auth) => {
                    if driver.submit_auth_dict(auth, false).await.is_err() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    tokio::select! {
        result = ia.attempt_auth() => {
            answering.abort();
            result
        }
        _ = &mut answering => {
            let data = ia.shared.state.lock().unwrap_or_else(|e| e.into_inner()).data.clone();
            match crate::error::MatrixError::from_response(401, None, data) {
                Some(e) => Err(Error::Matrix(e)),
                None => Err(Error::InvalidResponse("authentication abandoned".into())),
            }
        }
    }
}

fn flows_of(body: &Value) -> Vec<Vec<String>> {
    body.get("flows")
        .and_then(Value::as_array)
        .map(|flows| {
            flows
                .iter()
                .map(|f| {
                    f.get("stages")
                        .and_then(Value::as_array)
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
