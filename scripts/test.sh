#!/usr/bin/env bash
# Run Hookline's whole test suite once, against a real OS keyring.
#
# On Linux the keyring tests need a Secret Service: this script installs gnome-keyring
# and a D-Bus session daemon if they are missing, then re-runs itself inside
# `dbus-run-session` with a throwaway, unlocked gnome-keyring (its files live in a
# temporary directory, so the user's own login keyring is never touched) and sets
# HOOKLINE_REQUIRE_KEYRING=1 so the keyring test fails rather than falls back.
#
# With CI set, `cargo fmt --check` and clippy (-D warnings) run first.
# Assumes only a Rust toolchain (and apt-get on Debian/Ubuntu); everything else is installed.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

log() { printf '==> %s\n' "$*" >&2; }

run_tests() {
    log "cargo test --locked --all-targets"
    cargo test --locked --all-targets
}

# --- Inside the D-Bus session: start the keyring, run the tests. -------------------
if [[ -n "${HOOKLINE_IN_KEYRING_SESSION:-}" ]]; then
    keyring_home="$(mktemp -d)"
    trap 'rm -rf "$keyring_home"' EXIT
    log "starting gnome-keyring (secrets component) in $keyring_home"
    # The daemon reads the unlock password on stdin and prints variables to export.
    eval "$(printf 'hookline-test' | XDG_DATA_HOME="$keyring_home" \
        gnome-keyring-daemon --unlock --components=secrets)"
    export HOOKLINE_REQUIRE_KEYRING=1
    run_tests
    exit 0
fi

# --- Outside: install what is missing, lint in CI, then enter the session. ----------
if [[ $EUID -ne 0 ]]; then SUDO=(sudo); else SUDO=(); fi

apt_install() {
    log "installing: $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@"
}

apt_updated=""
need() {
    # need <command> <package>...: install the packages if the command is missing.
    local cmd="$1"
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing $cmd and no apt-get to install $*; install it yourself"
        return 1
    fi
    if [[ -z "$apt_updated" ]]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
        apt_updated=1
    fi
    apt_install "$@"
}

linux=""
[[ "$(uname -s)" == Linux ]] && linux=1

if [[ -n "$linux" ]]; then
    # A C compiler for bundled SQLite (rusqlite) and the linker.
    need cc gcc libc6-dev
    # Debian 12+ splits the session daemon into dbus-daemon; older releases call it dbus.
    need dbus-run-session dbus-daemon || need dbus-run-session dbus
    need gnome-keyring-daemon gnome-keyring
fi

if [[ -n "${CI:-}" ]]; then
    if command -v rustup >/dev/null 2>&1; then
        rustup component add rustfmt clippy >/dev/null 2>&1 || true
    fi
    log "cargo fmt --check"
    cargo fmt --all --check
    log "cargo clippy --all-targets --locked -- -D warnings"
    cargo clippy --all-targets --locked -- -D warnings
fi

if [[ -n "$linux" ]]; then
    log "entering a private D-Bus session"
    export HOOKLINE_IN_KEYRING_SESSION=1
    exec dbus-run-session -- bash "$self" "$@"
fi

# macOS and Windows have their keyring in the user session already.
run_tests
