#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite once
# inside a private D-Bus session with an unlocked gnome-keyring, so the keyring
# tests use the real Secret Service (HOOKLINE_REQUIRE_KEYRING=1 makes them insist).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dbus-run-session >/dev/null 2>&1 || need+=(dbus-daemon dbus)
command -v gnome-keyring-daemon >/dev/null 2>&1 || need+=(gnome-keyring)
command -v curl >/dev/null 2>&1 || need+=(curl)
# shellcheck source=scripts/install-missing.sh
. scripts/install-missing.sh
install_missing ${need[@]+"${need[@]}"}

if [ -n "${CI:-}" ]; then
  echo "==> cargo fmt --check"
  cargo fmt --all -- --check
  echo "==> cargo clippy"
  cargo clippy --locked --all-targets -- -D warnings
fi

echo "==> cargo test (in a D-Bus session with gnome-keyring)"
export HOOKLINE_REQUIRE_KEYRING=1
# gnome-keyring wants a runtime dir it owns.
XDG_RUNTIME_DIR="$(mktemp -d)"
chmod 700 "$XDG_RUNTIME_DIR"
export XDG_RUNTIME_DIR
# A throwaway keyring: gnome-keyring keeps its files under $XDG_DATA_HOME/keyrings, and
# with the user's own directory `--unlock` would open (or create) their real login
# keyring with our password; if one exists with another password, every write fails
# with "prompt dismissed". Only the daemon gets this directory, not the tests.
KEYRING_DATA="$(mktemp -d)"
chmod 700 "$KEYRING_DATA"
export KEYRING_DATA
dbus-run-session -- sh -c '
  eval "$(printf "hookline-test\n" | XDG_DATA_HOME="$KEYRING_DATA" gnome-keyring-daemon --unlock --components=secrets)" >/dev/null
  export GNOME_KEYRING_CONTROL SSH_AUTH_SOCK
  cargo test --locked --all-targets "$@"
' sh "$@"

# The app in a real window: the release binary under Xvfb (skip with SKIP_SMOKE=1).
if [ -z "${SKIP_SMOKE:-}" ]; then
  echo "==> app smoke test (Xvfb)"
  ./scripts/smoke-app.sh
fi
