//! A UIA-protected request, with the person at the terminal answering each
//! stage the server asks for.

use std::time::Duration;

use gatehouse_client::{
    AuthDict, AuthInputs, AuthType, Client, InteractiveAuth, StageStatus, TokenPurpose,
    UserIdentifier,
};
use serde_json::Value;

use super::prompt::{Spinner, ask_async, confirm};

/// How long the email stage waits for the link to be opened.
const EMAIL_WAIT: Duration = Duration::from_secs(600);

type Request = Box<
    dyn Fn(
            Option<Value>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<Value, gatehouse_client::Error>> + Send>>
        + Send
        + Sync,
>;

/// Who answers `m.login.password`, and how the prompt names the password.
pub struct PasswordStage {
    pub user_id: String,
    pub prompt: String,
}

/// Runs `request` through UIA, prompting in the terminal for each stage.
pub async fn with_uia(
    client: &Client,
    password: Option<PasswordStage>,
    inputs: AuthInputs,
    request: Request,
) -> Result<Value, super::CliError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(AuthType, StageStatus)>();
    let email_client = client.clone();
    let ia = InteractiveAuth::builder(
        move |auth, _| request(auth),
        move |stage, status| {
            let _ = tx.send((stage.to_owned(), status.clone()));
        },
    )
    .inputs(inputs)
    .request_email_token(move |email, secret, attempt, _| {
        let c = email_client.clone();
        Box::pin(async move {
            Ok(
                c.request_email_token(TokenPurpose::Register, &email, &secret, attempt, None)
                    .await?
                    .sid,
            )
        })
    })
    .build();
    let driver = ia.clone();
    let fallback = client.clone();
    let prompter = tokio::spawn(async move {
        'stages: while let Some((stage, status)) = rx.recv().await {
            if let Some(err) = &status.error {
                eprintln!("{err}");
            }
            let auth = match &stage {
                AuthType::Password => {
                    let Some(p) = &password else {
                        return Err("the server asks for a password".to_owned());
                    };
                    let pw = ask_async(p.prompt.clone(), true).await?;
                    AuthDict::password(&UserIdentifier::user(p.user_id.clone()), pw)
                }
                AuthType::RegistrationToken => {
                    let token = ask_async("Registration token: ", false).await?;
                    AuthDict::registration_token(token.trim())
                }
                AuthType::Terms => {
                    for (name, p) in driver
                        .stage_params(stage.as_str())
                        .and_then(|p| p.get("policies").cloned())
                        .and_then(|p| p.as_object().cloned())
                        .unwrap_or_default()
                    {
                        let en = p.get("en").cloned().unwrap_or_default();
                        eprintln!(
                            "{name}: {} {}",
                            en["name"].as_str().unwrap_or(""),
                            en["url"].as_str().unwrap_or("")
                        );
                    }
                    if !confirm("Accept these policies?").await? {
                        return Err("policies not accepted".into());
                    }
                    AuthDict::terms()
                }
                AuthType::EmailIdentity => {
                    let _spinner = Spinner::start("Waiting for you to open the link we emailed");
                    let deadline = tokio::time::Instant::now() + EMAIL_WAIT;
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        driver.poll().await;
                        // The link was opened and the server asks for the
                        // next stage (or the stage again, with an error).
                        if !rx.is_empty() {
                            continue 'stages;
                        }
                    }
                    return Err("the email link was not opened in time".into());
                }
                other => {
                    let session = driver.session_id().unwrap_or_default();
                    eprintln!(
                        "Complete '{other}' in a browser: {}",
                        fallback.fallback_auth_url(other.as_str(), &session)
                    );
                    ask_async("Press Enter when done. ", false).await?;
                    AuthDict::completed_elsewhere()
                }
            };
            driver
                .submit_auth_dict(auth, false)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    // Whichever ends first: authentication, or the user (no more answers).
    let mut prompter = prompter;
    tokio::select! {
        result = ia.attempt_auth() => {
            prompter.abort();
            // Until it is gone: its spinner clears its line when dropped.
            let _ = prompter.await;
            Ok(result?)
        }
        asked = &mut prompter => match asked {
            Ok(Err(e)) => Err(e.into()),
            _ => Err("authentication was abandoned".into()),
        },
    }
}
