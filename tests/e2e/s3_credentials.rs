//! S3 credentials come from aws-config's chain: a broker with credentials only in a
//! shared profile file works; one with none anywhere never becomes ready.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::{consume_all, producer};
use sluice_e2e::{S3Server, Sluice};

const NO_ENV_CREDENTIALS: [(&str, Option<&str>); 3] = [
    ("AWS_ACCESS_KEY_ID", None),
    ("AWS_SECRET_ACCESS_KEY", None),
    ("AWS_SESSION_TOKEN", None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_shared_profile() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let credentials = dir.path().join("credentials");
    let config = dir.path().join("config");
    std::fs::write(
        &credentials,
        "[sluice-test]\naws_access_key_id = from-profile\naws_secret_access_key = profile-secret\n",
    )?;
    std::fs::write(&config, "[profile sluice-test]\nregion = us-east-1\n")?;
    let (credentials, config) = (
        credentials.display().to_string(),
        config.display().to_string(),
    );
    let mut env = NO_ENV_CREDENTIALS.to_vec();
    env.extend([
        ("AWS_PROFILE", Some("sluice-test")),
        ("AWS_SHARED_CREDENTIALS_FILE", Some(credentials.as_str())),
        ("AWS_CONFIG_FILE", Some(config.as_str())),
    ]);
    let sluice = Sluice::start_with_env(Some(S3Server::start()?), &[], &env)?;
    let p = producer(&sluice.bootstrap(), &[])?;
    p.send(
        FutureRecord::<(), [u8]>::to("profiled").payload(b"signed with a profile"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)?;
    let bootstrap = sluice.bootstrap();
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, "profiled", 1, 1)).await??;
    assert_eq!(msgs.len(), 1);
    Ok(())
}

#[test]
fn no_credentials_anywhere_means_not_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("none").display().to_string();
    let mut env = NO_ENV_CREDENTIALS.to_vec();
    env.extend([
        ("AWS_PROFILE", None),
        ("AWS_SHARED_CREDENTIALS_FILE", Some(missing.as_str())),
        ("AWS_CONFIG_FILE", Some(missing.as_str())),
    ]);
    let started = Sluice::start_within(Some(S3Server::start()?), &[], &env, Duration::from_secs(5));
    let Err(e) = started else {
        anyhow::bail!("a broker without credentials reported ready");
    };
    let e = e.to_string();
    assert!(e.contains("not ready") && e.contains("credentials"), "{e}");
    Ok(())
}
