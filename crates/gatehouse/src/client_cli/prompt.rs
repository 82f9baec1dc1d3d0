//! Talking to the person at the terminal: answers (without echo for
//! secrets), confirmations, and a spinner for long waits. When standard
//! input is not a terminal, answers are read one line each from it
//! (scripts); the spinner is drawn only on a terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

/// Reads one answer: without echo from a terminal when `secret`, else a line.
fn ask(prompt: &str, secret: bool) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        if secret {
            return rpassword::prompt_password(prompt).map_err(|e| e.to_string());
        }
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err(format!(
            "no answer to '{}' on standard input",
            prompt.trim()
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// [`ask`], off the async runtime.
pub async fn ask_async(prompt: impl Into<String>, secret: bool) -> Result<String, String> {
    let prompt = prompt.into();
    tokio::task::spawn_blocking(move || ask(&prompt, secret))
        .await
        .map_err(|e| e.to_string())?
}

/// A yes/no question; anything but `y`/`yes` is no.
pub async fn confirm(question: impl Into<String>) -> Result<bool, String> {
    let answer = ask_async(format!("{} [y/N] ", question.into()), false).await?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A new password, typed twice.
pub async fn new_password() -> Result<String, String> {
    let first = ask_async("New password: ", true).await?;
    if first.is_empty() {
        return Err("the password must not be empty".into());
    }
    let again = ask_async("New password again: ", true).await?;
    if first != again {
        return Err("the new passwords do not match".into());
    }
    Ok(first)
}

/// A line on the terminal saying what is awaited and how to cancel, with a
/// turning wheel, until dropped. Off a terminal: the line once, no wheel.
pub struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    pub fn start(what: &str) -> Self {
        let line = format!("{what} (Ctrl-C to cancel)");
        if !std::io::stderr().is_terminal() {
            eprintln!("{line}");
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut every = tokio::time::interval(Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                every.tick().await;
                eprint!("\r{frame} {line}");
                let _ = std::io::stderr().flush();
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Clear the line for what comes next.
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}
