#!/usr/bin/env bash
# Smoke test of the desktop app: the real release binary in a real window under Xvfb
# (Mesa's software OpenGL), on a fresh data directory. Fails if the process exits,
# the window never shows, or the window is blank. Prints the time from process start
# to the first frame (eframe maps the window at its first paint) and keeps the
# screenshot at target/smoke/app.png.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
command -v import >/dev/null 2>&1 || need+=(imagemagick)
command -v xdpyinfo >/dev/null 2>&1 || need+=(x11-utils)
[ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so ] || [ -e /usr/lib/aarch64-linux-gnu/dri/swrast_dri.so ] || need+=(libgl1-mesa-dri)
ldconfig -p | grep -q libEGL.so.1 || need+=(libegl1)
# shellcheck source=scripts/install-missing.sh
. scripts/install-missing.sh
install_missing ${need[@]+"${need[@]}"}

echo "==> cargo build --release (the app)"
cargo build --release --locked --bin hookline
BIN=${CARGO_TARGET_DIR:-target}/release/hookline
OUT=${CARGO_TARGET_DIR:-target}/smoke
mkdir -p "$OUT"

# A display number nobody uses.
for n in $(seq 90 120); do [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ] || { D=":$n"; break; }; done
Xvfb "$D" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
APP=
WORK=$(mktemp -d)
cleanup() {
  [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
  kill "$XVFB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do xdpyinfo -display "$D" >/dev/null 2>&1 && break; sleep 0.05; done
export DISPLAY="$D"
unset WAYLAND_DISPLAY
export XDG_RUNTIME_DIR="$WORK/run"
mkdir -m 700 "$XDG_RUNTIME_DIR"
export HOOKLINE_DATA_DIR="$WORK/data"
export HOOKLINE_KEYRING_TIMEOUT_MS=1000

fail() { echo "smoke: FAIL: $*" >&2; echo "--- app log:" >&2; cat "$OUT/app.log" >&2 || true; exit 1; }

start=$(date +%s%N)
"$BIN" >"$OUT/app.log" 2>&1 &
APP=$!
W=
for _ in $(seq 1500); do
  kill -0 "$APP" 2>/dev/null || fail "the app exited before its window showed"
  W=$(xdotool search --onlyvisible --name 'Hookline' 2>/dev/null | head -1 || true)
  [ -n "$W" ] && break
  sleep 0.02
done
[ -n "$W" ] || fail "no window within 30 s"
first=$(( ($(date +%s%N) - start) / 1000000 ))
echo "smoke: process start to first frame: ${first} ms"

# Let the workspace load and the receiver start, then look.
for _ in $(seq 100); do
  title=$(xdotool getwindowname "$W" 2>/dev/null || true)
  case "$title" in *workspace.json*) break ;; esac
  sleep 0.1
done
sleep 1
kill -0 "$APP" 2>/dev/null || fail "the app exited"
import -window "$W" "$OUT/app.png"
colors=$(identify -format '%k' "$OUT/app.png")
sd=$(convert "$OUT/app.png" -colorspace gray -format '%[fx:standard_deviation]' info:)
echo "smoke: window \"$title\", screenshot $OUT/app.png: $colors colours, grey sd $sd"
[ "$colors" -gt 20 ] || fail "the window looks blank ($colors colours)"
case "$title" in *workspace.json*) ;; *) fail "the title does not name the workspace: $title" ;; esac
[ -s "$HOOKLINE_DATA_DIR/workspace.json" ] || fail "no first-start workspace in the data directory"
grep -q '"url": "http://127.0.0.1:8787' "$HOOKLINE_DATA_DIR/workspace.json" && fail "the sample does not point at the built-in receiver"

# Quit as a user would (Ctrl+Q) and expect a clean exit.
xdotool windowfocus --sync "$W" 2>/dev/null || true
xdotool key --window "$W" ctrl+q
for _ in $(seq 100); do kill -0 "$APP" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$APP" 2>/dev/null; then fail "the app did not quit on Ctrl+Q"; fi
wait "$APP" || fail "the app exited with status $?"
APP=
echo "smoke: OK"
