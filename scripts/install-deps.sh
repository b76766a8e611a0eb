#!/usr/bin/env bash
# Install everything the mediaorigin test suite needs on a fresh Debian/Ubuntu machine:
#   system: ffmpeg + ffprobe (reference encoder/decoder), chromium (browser players),
#           nodejs + npm (to fetch the players), python3-venv
#   python: .venv with `pip install -e '.[test]'`
#   players: scripts/install-players.sh (hls.js, dash.js, shaka-player from the lock file)
#
# Idempotent and cheap to re-run: apt is only touched when a command is missing, pip only
# when pyproject.toml changed since the last install, npm only when the lock file changed.
# Run as root, or as a user with sudo (used for apt-get only).
#
# Chromium: Debian ships it as `chromium` (/usr/bin/chromium, what the harness uses). Ubuntu
# only has `chromium-browser`, a transitional package that installs the snap; the snap needs
# snapd (not available in most containers) and may be unable to run under Playwright's
# temporary profile. On Ubuntu prefer a Debian-packaged chromium or point the harness at a
# working binary with MEDIAORIGIN_CHROMIUM=/path/to/chromium.
# Node: Debian 12 ships nodejs 18, enough for npm to install the players (some of dash.js's
# dependencies declare node>=20, which npm only warns about: they run in the browser).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "install-deps: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    have sudo || { log "not root and no sudo: run as root" >&2; exit 1; }
    SUDO=(sudo)
fi

# --- system packages -----------------------------------------------------------------------
missing=()
have python3 || missing+=(python3)
{ have ffmpeg && have ffprobe; } || missing+=(ffmpeg)
have chromium || have chromium-browser || missing+=(chromium)
have node || missing+=(nodejs)
have npm || missing+=(npm)
have redis-server || missing+=(redis-server)  # tests start a private one on a free port
# Debian's python3 has the venv module but not ensurepip without python3-venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if ((${#missing[@]})); then
    log "apt-get install: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    packages=()
    for pkg in "${missing[@]}"; do
        # Read the policy whole first: `grep -q` closing the pipe early would make pipefail
        # report a failure even when chromium has a candidate.
        policy="$(apt-cache policy chromium 2>/dev/null || true)"
        if [[ "$pkg" == chromium && "$policy" != *"Candidate: "[0-9]* ]]; then
            pkg=chromium-browser # Ubuntu (snap, see above)
        fi
        packages+=("$pkg")
    done
    "${SUDO[@]}" apt-get install -y -qq "${packages[@]}"
else
    log "system packages present (ffmpeg, chromium, node, npm, python3-venv)"
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    log "python3 is $(python3 -V 2>&1); mediaorigin needs 3.11 or newer" >&2
    exit 1
}

# --- python venv ---------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.mediaorigin-deps-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && .venv/bin/python -c 'import mediaorigin, pytest, playwright' 2>/dev/null; then
    log "python packages up to date (.venv)"
else
    log "pip install -e '.[test]'"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
fi

# --- browser players -----------------------------------------------------------------------
"$ROOT/scripts/install-players.sh"
