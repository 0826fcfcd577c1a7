//! Secrets round trips: the real OS keyring where the machine has one (CI runs this
//! inside a D-Bus session with gnome-keyring and sets `HOOKLINE_REQUIRE_KEYRING=1`, so
//! there it must work), the in-memory store, and the environment.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hookline::core::secret::{
    ChainSecrets, EnvSecrets, MemorySecrets, Secret, SecretSource, Secrets,
};
use hookline::store::keyring::KeyringSecrets;

fn round_trip(store: &dyn SecretSource) {
    let name = format!("test-{}", uuid::Uuid::new_v4());
    assert_eq!(store.get(&name).expect("get missing"), None);
    store
        .set(&name, &Secret::new("päss wörd:/+="))
        .expect("set");
    assert_eq!(
        store
            .get(&name)
            .expect("get")
            .map(|s| s.expose().to_owned()),
        Some("päss wörd:/+=".to_owned())
    );
    store.set(&name, &Secret::new("second")).expect("overwrite");
    assert_eq!(
        store
            .get(&name)
            .expect("get")
            .map(|s| s.expose().to_owned()),
        Some("second".to_owned())
    );
    store.delete(&name).expect("delete");
    assert_eq!(store.get(&name).expect("get deleted"), None);
    store
        .delete(&name)
        .expect("deleting a missing entry is fine");
}

#[test]
fn os_keyring_round_trip() {
    let required = std::env::var("HOOKLINE_REQUIRE_KEYRING").is_ok_and(|v| v == "1");
    match KeyringSecrets::open_service("hookline-test").and_then(|k| k.get("probe").map(|_| k)) {
        Ok(k) => {
            println!("using the real OS keyring: {}", k.describe());
            round_trip(&k);
        }
        Err(e) if !required => {
            println!(
                "no OS keyring here ({e}); checked the in-memory store instead (set HOOKLINE_REQUIRE_KEYRING=1 to require one)"
            );
            round_trip(&MemorySecrets::default());
        }
        Err(e) => panic!("HOOKLINE_REQUIRE_KEYRING=1 but the keyring is not usable: {e}"),
    }
}

#[test]
fn memory_store_round_trip() {
    round_trip(&MemorySecrets::default());
}

#[test]
fn environment_secrets_are_read_and_win_over_later_sources() {
    // SAFETY-free: set_var is safe in edition 2024 only inside unsafe; use a child process instead.
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "env_child", "--nocapture", "--include-ignored"])
        .env("HOOKLINE_SECRET_ORDERS_KEY", "from-env")
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "run by environment_secrets_are_read_and_win_over_later_sources in a child process"]
fn env_child() {
    let mem = Arc::new(MemorySecrets::with(&[
        ("orders-key", "from-memory"),
        ("other", "m"),
    ]));
    let s = Secrets::new(Arc::new(ChainSecrets(vec![Arc::new(EnvSecrets), mem])));
    assert_eq!(s.get("orders-key").expect("env").expose(), "from-env");
    assert_eq!(s.get("other").expect("memory").expose(), "m");
    assert!(
        EnvSecrets.set("x", &Secret::new("y")).is_err(),
        "the environment is read-only"
    );
}

#[test]
fn keyring_store_errors_never_contain_the_stored_bytes() {
    use keyring_core::mock;
    let store: Arc<keyring_core::CredentialStore> = mock::Store::new().expect("mock store");
    let k = KeyringSecrets::with_store(store.clone(), "hookline-test");
    let entry = store
        .build("hookline-test", "bad-bytes", None)
        .expect("entry");
    let cred: &mock::Cred = entry.as_any().downcast_ref().expect("mock cred");
    cred.set_error(keyring_core::Error::BadEncoding(b"hunter2-leaked".to_vec()));
    let e = k.get("bad-bytes").expect_err("bad encoding");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("bad-bytes"), "{shown}");
}

#[test]
fn keyring_over_the_mock_store_round_trips() {
    let store: Arc<keyring_core::CredentialStore> =
        keyring_core::mock::Store::new().expect("mock store");
    round_trip(&KeyringSecrets::with_store(store, "hookline-test"));
}

/// Runs `test` (an ignored test in this binary) in a child process with `envs` added.
fn run_child(test: &str, envs: &[(&str, &str)]) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", test, "--nocapture", "--include-ignored"])
        .envs(envs.iter().copied())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_dbus_session_is_a_no_keyring_error_not_a_panic() {
    run_child(
        "no_dbus_child",
        &[(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/hookline-test-bus",
        )],
    );
}

#[test]
#[ignore = "run by no_dbus_session_is_a_no_keyring_error_not_a_panic in a child process"]
fn no_dbus_child() {
    let isolated =
        std::env::var("DBUS_SESSION_BUS_ADDRESS").is_ok_and(|a| a.contains("/nonexistent/"));
    if !cfg!(target_os = "linux") || !isolated {
        return; // only meaningful in the child, with the bus pointed nowhere
    }
    let e = KeyringSecrets::open().expect_err("no bus, no keyring");
    assert!(
        matches!(e, hookline::core::secret::SecretError::NoKeyring(_)),
        "{e:?}"
    );
    let (secrets, _) = hookline::store::keyring::default_secrets();
    let e = secrets
        .get("nothing-here")
        .expect_err("env only, and unset");
    assert!(e.to_string().starts_with("no keyring available"), "{e}");
}

/// A session bus that accepts connections and never answers.
fn silent_bus() -> (tempfile::TempDir, std::thread::JoinHandle<()>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Accept a bounded number of connections and keep them open, silent.
        for c in listener.incoming().take(16) {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    (dir, h, format!("unix:path={}", path.display()))
}

#[test]
fn a_silent_session_bus_never_hangs_render_and_a_missing_secret_times_out_clearly() {
    let (_dir, _h, bus) = silent_bus();
    let ws = format!(
        "{}/assets/sample-workspace.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let ev = format!("{}/assets/sample-events.ndjson", env!("CARGO_MANIFEST_DIR"));
    let run = |envs: &[(&str, &str)]| {
        let started = std::time::Instant::now();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookline"));
        cmd.args([
            "render",
            "--workspace",
            &ws,
            "--destination",
            "orders",
            "--events",
            &ev,
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus)
        .env("HOOKLINE_KEYRING_TIMEOUT_MS", "1500")
        .env_remove("HOOKLINE_SECRET_ORDERS_PASSWORD")
        .env_remove("HOOKLINE_SECRET_ORDERS_SIGNING")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let deadline = started + std::time::Duration::from_secs(20);
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("hookline render hung on a silent session bus");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (out, started.elapsed())
    };
    // Every secret in the environment: the keyring is never opened. A long timeout
    // here makes "it asked the bus" (≥ 15 s) unmistakable from a slow machine.
    let (out, took) = run(&[
        ("HOOKLINE_SECRET_ORDERS_PASSWORD", "pw"),
        ("HOOKLINE_SECRET_ORDERS_SIGNING", "sig"),
        ("HOOKLINE_KEYRING_TIMEOUT_MS", "15000"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < std::time::Duration::from_secs(12),
        "waited on the bus: {took:?}"
    );
    // A secret only the keyring could have: a clear error after the timeout.
    let (out, _) = run(&[]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("did not answer within 1500 ms"), "{text}");
}

#[test]
fn default_secrets_prefers_the_environment_over_a_keyring_entry() {
    run_child(
        "env_over_keyring_child",
        &[("HOOKLINE_SECRET_HOOKLINE_TEST_OVERRIDDEN", "from-env")],
    );
}

#[test]
#[ignore = "run by default_secrets_prefers_the_environment_over_a_keyring_entry in a child process"]
fn env_over_keyring_child() {
    if std::env::var_os("HOOKLINE_SECRET_HOOKLINE_TEST_OVERRIDDEN").is_none() {
        return; // only meaningful in the child, with the variable set
    }
    // With a real keyring, put another value there under the real service first.
    let name = "hookline-test-overridden";
    let keyring = KeyringSecrets::open().ok();
    let stored = keyring
        .as_ref()
        .is_some_and(|k| k.set(name, &Secret::new("from-keyring")).is_ok());
    let (secrets, _) = hookline::store::keyring::default_secrets();
    let got = secrets.get(name);
    if let Some(k) = &keyring {
        let _ = k.delete(name);
    }
    println!("a keyring entry was also present: {stored}");
    assert_eq!(got.expect("resolves").expose(), "from-env");
}

/// The runtime writes the keyring (mock store) off the caller's thread and fills the
/// shared cache: the next lookup needs no keyring call. A failing write says so, by name,
/// without the value.
#[test]
fn set_secret_through_the_runtime_writes_the_keyring_and_the_cache() {
    use hookline::runtime::{Command, Update};
    let store: Arc<keyring_core::CredentialStore> =
        keyring_core::mock::Store::new().expect("mock store");
    let keyring = Arc::new(KeyringSecrets::with_store(store.clone(), "hookline-test"));
    let counting = common::CountingSecrets::new(keyring.clone());
    let secrets = Secrets::new(counting.clone());
    let (rt, updates) = common::start_runtime(secrets.clone());
    let stored = |name: &str| {
        common::wait_for(&updates, Duration::from_secs(10), |u| match u {
            Update::SecretStored { name: n, result } if n == name => Some(result.clone()),
            _ => None,
        })
    };

    assert!(rt.send(Command::SetSecret {
        name: "api".into(),
        value: Secret::new("kr-value-5521"),
    }));
    assert_eq!(stored("api"), Ok(()));
    assert_eq!(
        keyring
            .get("api")
            .expect("keyring read")
            .map(|s| s.expose().to_owned()),
        Some("kr-value-5521".to_owned()),
        "the keyring has it"
    );
    assert_eq!(
        secrets.get("api").map(|s| s.expose().to_owned()),
        Ok("kr-value-5521".to_owned())
    );
    assert_eq!(counting.all_gets(), 0, "served from the cache");

    let entry = store.build("hookline-test", "locked", None).expect("entry");
    let cred: &keyring_core::mock::Cred = entry.as_any().downcast_ref().expect("mock cred");
    cred.set_error(keyring_core::Error::NoStorageAccess(
        "the collection is locked".into(),
    ));
    assert!(rt.send(Command::SetSecret {
        name: "locked".into(),
        value: Secret::new("kr-never-shown-8812"),
    }));
    let e = stored("locked").expect_err("the write fails");
    assert!(e.contains("collection is locked"), "{e}");
    assert!(!e.contains("kr-never-shown-8812"), "{e}");
    assert!(
        secrets.cached("locked").is_none(),
        "nothing cached for a failed write"
    );
}
