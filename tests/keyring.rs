//! Secrets in the OS keyring, in memory and in the environment.
//!
//! The real-keyring test uses the OS Secret Service when one is reachable and says so;
//! with `HOOKLINE_REQUIRE_KEYRING=1` (as `scripts/test.sh` sets) it fails instead of
//! falling back to `keyring-core`'s in-memory mock store.
//!
//! Tests that need a different environment (an env secret, no D-Bus) re-run this test
//! binary as a child process with that environment, since edition 2024 makes
//! `std::env::set_var` unsafe and the crate forbids unsafe code.

use std::process::Command;
use std::sync::Arc;

use hookline::core::secret::{EnvSecrets, MemorySecrets, Secret, SecretError, SecretSource};
use hookline::store::keyring::{KeyringSecrets, SERVICE, default_secrets};
use keyring_core::mock;

const CHILD_MARKER: &str = "HOOKLINE_KEYRING_TEST_CHILD";

fn unique_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("test-{what}-{}-{nanos}", std::process::id())
}

fn require_keyring() -> bool {
    std::env::var("HOOKLINE_REQUIRE_KEYRING").is_ok_and(|v| v == "1")
}

fn mock_keyring() -> (KeyringSecrets, Arc<keyring_core::CredentialStore>) {
    let store: Arc<keyring_core::CredentialStore> = mock::Store::new().expect("mock store");
    (
        KeyringSecrets::with_store(store.clone(), "keyring (in-memory mock)"),
        store,
    )
}

/// set → get → delete → get, through the `SecretSource` interface.
fn round_trip(source: &dyn SecretSource) -> Result<(), SecretError> {
    let name = unique_name("round-trip");
    assert_eq!(source.get(&name)?, None, "a never-set secret is absent");
    source.set(&name, &Secret::new("s3cr3t-value"))?;
    let got = source.get(&name);
    // Delete before asserting so a failure does not leave entries in a real keyring.
    source.delete(&name)?;
    assert_eq!(got?.as_ref().map(Secret::expose), Some("s3cr3t-value"));
    assert_eq!(source.get(&name)?, None, "deleted");
    source.delete(&name)?; // deleting what is not there is fine
    Ok(())
}

#[test]
fn keyring_round_trip_set_get_delete() {
    let real = KeyringSecrets::os().and_then(|k| round_trip(&k).map(|()| k));
    match real {
        Ok(k) => println!("used the real OS keyring: {}", k.describe()),
        Err(e) if require_keyring() => {
            panic!("HOOKLINE_REQUIRE_KEYRING=1 but the OS keyring failed: {e}")
        }
        Err(e) => {
            println!(
                "used NO real keyring ({e}); checked keyring-core's in-memory mock store instead"
            );
            let (mock, _) = mock_keyring();
            round_trip(&mock).expect("mock keyring round trip");
        }
    }
}

#[test]
fn keyring_mock_store_round_trip() {
    let (k, _) = mock_keyring();
    round_trip(&k).expect("round trip");
}

#[test]
fn keyring_errors_never_contain_the_stored_bytes() {
    let (k, store) = mock_keyring();
    let entry = store.build(SERVICE, "bad-bytes", None).expect("entry");
    let cred: &mock::Cred = entry.as_any().downcast_ref().expect("mock cred");
    cred.set_error(keyring_core::Error::BadEncoding(b"hunter2-leaked".to_vec()));
    let err = k.get("bad-bytes").expect_err("bad encoding");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("bad-bytes") && shown.contains("not valid UTF-8"), "{shown}");
}

#[test]
fn memory_store_round_trip() {
    round_trip(&MemorySecrets::default()).expect("round trip");
}

#[test]
fn env_source_is_read_only() {
    let err = EnvSecrets
        .set("x", &Secret::new("v"))
        .expect_err("read-only");
    assert!(err.to_string().contains("read-only"), "{err}");
}

/// Runs `test` (an `#[ignore]`d test in this binary) in a child process with `envs`.
fn run_child(test: &str, envs: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_MARKER, "1")
        .envs(envs.iter().copied())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "child {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
}

fn is_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

#[test]
fn env_var_source_reads_hookline_secret_variables() {
    run_child(
        "child_env_var_source_reads_hookline_secret_variables",
        &[("HOOKLINE_SECRET_CI_TOKEN", "from-env")],
    );
}

#[test]
#[ignore = "run by env_var_source_reads_hookline_secret_variables in a child process"]
fn child_env_var_source_reads_hookline_secret_variables() {
    if !is_child() {
        return;
    }
    let got = EnvSecrets.get("ci-token").expect("env never fails");
    assert_eq!(got.as_ref().map(Secret::expose), Some("from-env"));
    assert_eq!(EnvSecrets.get("not-set-anywhere").expect("ok"), None);
}

#[test]
fn default_secrets_prefers_the_environment_over_the_keyring() {
    run_child(
        "child_default_secrets_prefers_the_environment_over_the_keyring",
        &[("HOOKLINE_SECRET_OVERRIDDEN", "from-env")],
    );
}

#[test]
#[ignore = "run by default_secrets_prefers_the_environment_over_the_keyring in a child process"]
fn child_default_secrets_prefers_the_environment_over_the_keyring() {
    if !is_child() {
        return;
    }
    // With a real keyring, put a different value there first: the environment must still win.
    let keyring = KeyringSecrets::os().ok();
    let in_keyring = keyring
        .as_ref()
        .is_some_and(|k| k.set("overridden", &Secret::new("from-keyring")).is_ok());
    let got = default_secrets().get("overridden");
    if let Some(k) = &keyring {
        let _ = k.delete("overridden");
    }
    println!("keyring entry also present: {in_keyring}");
    assert_eq!(got.expect("resolves").expose(), "from-env");
}

#[test]
fn no_dbus_session_is_a_no_keyring_error_not_a_panic() {
    run_child(
        "child_no_dbus_session_is_a_no_keyring_error_not_a_panic",
        &[(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/hookline-test-bus",
        )],
    );
}

#[test]
#[ignore = "run by no_dbus_session_is_a_no_keyring_error_not_a_panic in a child process"]
fn child_no_dbus_session_is_a_no_keyring_error_not_a_panic() {
    if !is_child() || !cfg!(target_os = "linux") {
        return;
    }
    let err = KeyringSecrets::os().expect_err("no bus, no keyring");
    assert!(matches!(err, SecretError::NoKeyring(_)), "{err:?}");
    assert!(err.to_string().starts_with("no keyring available"), "{err}");
    // The default chain still works, from the environment alone.
    let e = default_secrets().get("nothing-here").expect_err("not set");
    assert!(matches!(e, SecretError::NotSet { .. }), "{e:?}");
}
