use super::*;

#[test]
fn login_tokens_default_to_one_a_minute() {
    let rate = RateLimitConfig::default().login_tokens_per_account;
    assert_eq!(rate.burst_count, 1);
    assert!((rate.per_second * 60.0 - 1.0).abs() < 1e-9, "{rate:?}");
}

#[test]
fn the_example_is_the_defaults() {
    let parsed: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(EXAMPLE))
        .extract()
        .unwrap();
    assert_eq!(parsed, Config::default());
    assert!(Config::default().validate().is_ok());
}

#[test]
fn secrets_are_read_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let smtp = write("smtp", "smtp-password-from-file\n");
    let token = write("token", "webhook-token-from-file\r\n");
    let recaptcha = write("recaptcha", "recaptcha-secret-from-file");
    let pepper = write("pepper", "pepper-from-file\n");
    let file = write(
        "gatehouse.toml",
        &format!(
            "[email]\nsmtp_password_path = {smtp:?}\n\
             [sms]\nwebhook_token_path = {token:?}\n\
             [recaptcha]\nsecret_key = \"\"\nsecret_key_path = {recaptcha:?}\n\
             [passwords]\nbcrypt_pepper = \"\"\nbcrypt_pepper_path = {pepper:?}\n"
        ),
    );
    let config = Config::load(Some(&file), &Overrides::default()).unwrap();
    assert_eq!(
        config.email.smtp_password.as_deref(),
        Some("smtp-password-from-file")
    );
    assert_eq!(
        config.sms.webhook_token.as_deref(),
        Some("webhook-token-from-file")
    );
    assert_eq!(config.recaptcha.secret_key, "recaptcha-secret-from-file");
    assert_eq!(config.passwords.bcrypt_pepper, "pepper-from-file");
    assert_eq!(config.email.smtp_password_path.as_deref(), Some(&*smtp));

    // A value and its file: an error naming the value's key.
    std::fs::write(
        &file,
        format!("[email]\nsmtp_password = \"inline\"\nsmtp_password_path = {smtp:?}\n"),
    )
    .unwrap();
    let err = Config::load(Some(&file), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`email.smtp_password`"), "{err}");
    // A file that cannot be read: an error naming the path's key.
    let missing = dir.path().join("missing");
    std::fs::write(
        &file,
        format!("[passwords]\nbcrypt_pepper_path = {missing:?}\n"),
    )
    .unwrap();
    let err = Config::load(Some(&file), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`passwords.bcrypt_pepper_path`"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let err = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(
            "[tokens]\naccess_token_lifetime_ms = \"soon\"",
        ))
        .extract::<Config>()
        .unwrap_err();
    assert!(
        describe(&err).contains("tokens.access_token_lifetime_ms"),
        "{}",
        describe(&err)
    );
    let mut c = Config::default();
    c.rate_limits.login_per_account.per_second = 0.0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("rate_limits.login_per_account")
    );
}
