//! Outgoing messages: validation emails over SMTP (lettre) and SMS codes
//! through an HTTP webhook, rendered from templates (minijinja).

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{Environment, context};

use crate::config::{Config, SmtpTls};

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("email is not enabled")]
    EmailDisabled,
    #[error("SMS is not enabled")]
    SmsDisabled,
    #[error("bad address: {0}")]
    Address(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("SMS webhook: {0}")]
    Webhook(String),
    #[error("template: {0}")]
    Template(String),
}

/// Sends email and SMS; cheap to clone.
#[derive(Clone)]
pub struct Messenger {
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
    sms: Option<(String, Option<String>)>,
    /// Built on first use: TLS roots cost memory a server without SMS or
    /// reCAPTCHA never needs.
    http: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
    templates: std::sync::Arc<Environment<'static>>,
    server_name: String,
}

/// Every template's name, and its built-in text.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "validation_email.txt",
        include_str!("../templates/validation_email.txt"),
    ),
    (
        "validation_sms.txt",
        include_str!("../templates/validation_sms.txt"),
    ),
    ("page.html", include_str!("../templates/page.html")),
    ("fallback.html", include_str!("../templates/fallback.html")),
    ("account.html", include_str!("../templates/account.html")),
    ("sso.html", include_str!("../templates/sso.html")),
    (
        "login_fallback.html",
        include_str!("../templates/login_fallback.html"),
    ),
];

/// The templates: the built-in ones, each replaced by the file of the same
/// name in `dir` when there is one (`templates_dir`: an operator's own
/// wording, branding or language). A file that does not parse is an
/// error at startup, not on the first page that uses it.
pub fn load_templates(dir: Option<&std::path::Path>) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    for (name, built_in) in BUILT_IN {
        let custom = match dir.map(|d| d.join(name)) {
            Some(path) if path.exists() => Some(
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            _ => None,
        };
        match custom {
            Some(text) => env
                .add_template_owned(*name, text)
                .map_err(|e| format!("templates_dir/{name}: {e}"))?,
            None => env
                .add_template(name, built_in)
                .map_err(|e| format!("built-in {name}: {e}"))?,
        }
    }
    Ok(env)
}

/// The built-in templates.
pub fn templates() -> Environment<'static> {
    load_templates(None).expect("built-in templates parse")
}

impl Messenger {
    pub fn new(config: &Config) -> Self {
        let email = &config.email;
        let mailer = email.enabled.then(|| {
            let builder = match email.tls {
                SmtpTls::None => {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.smtp_host)
                }
                SmtpTls::Starttls => {
                    AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.smtp_host)
                        .unwrap_or_else(|_| {
                            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                                &email.smtp_host,
                            )
                        })
                }
                SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.smtp_host)
                    .unwrap_or_else(|_| {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.smtp_host)
                    }),
            };
            let mut builder = builder.port(email.smtp_port);
            if let (Some(user), Some(pass)) = (&email.smtp_username, &email.smtp_password) {
                builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
            }
            builder.build()
        });
        Self {
            mailer,
            from: email.from.parse().ok(),
            sms: config.sms.enabled.then(|| {
                (
                    config.sms.webhook_url.clone(),
                    config.sms.webhook_token.clone(),
                )
            }),
            http: std::sync::Arc::default(),
            templates: std::sync::Arc::new(
                load_templates(config.templates_dir.as_deref()).unwrap_or_else(|_| templates()),
            ),
            server_name: config.server_name.clone(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default()
        })
    }

    pub fn templates(&self) -> &Environment<'static> {
        &self.templates
    }

    /// Sends the validation link for `purpose` (`register`,
    /// `password_reset`, `add_threepid`, `confirm`).
    pub async fn send_validation_email(
        &self,
        to: &str,
        purpose: &str,
        link: &str,
        expires: &str,
    ) -> Result<(), SendError> {
        let (Some(mailer), Some(from)) = (&self.mailer, &self.from) else {
            return Err(SendError::EmailDisabled);
        };
        let body = self
            .templates
            .get_template("validation_email.txt")
            .and_then(|t| {
                t.render(context! { purpose, link, expires, server_name => &self.server_name })
            })
            .map_err(|e| SendError::Template(e.to_string()))?;
        let to: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| SendError::Address(e.to_string()))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(format!(
                "Confirm your email address for {}",
                self.server_name
            ))
            .body(body)
            .map_err(|e| SendError::Smtp(e.to_string()))?;
        mailer
            .send(message)
            .await
            .map_err(|e| SendError::Smtp(e.to_string()))?;
        Ok(())
    }

    /// Sends an SMS code through the webhook.
    pub async fn send_sms(&self, msisdn: &str, code: &str, sid: &str) -> Result<(), SendError> {
        let Some((url, token)) = &self.sms else {
            return Err(SendError::SmsDisabled);
        };
        let body = self
            .templates
            .get_template("validation_sms.txt")
            .and_then(|t| t.render(context! { code, server_name => &self.server_name }))
            .map_err(|e| SendError::Template(e.to_string()))?;
        let mut req = self.http().post(url).json(
            &serde_json::json!({"to": format!("+{msisdn}"), "body": body.trim(), "sid": sid}),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SendError::Webhook(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(SendError::Webhook(format!("status {}", resp.status())));
        }
        Ok(())
    }
}
