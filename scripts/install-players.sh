#!/usr/bin/env bash
# Install the browser players the test harness drives (tests/players: hls.js, dash.js,
# shaka-player, versions pinned in package.json and locked in package-lock.json).
#
# Idempotent: skips npm entirely when node_modules was installed from the current lock file.
# With a lock file it runs `npm ci` (exactly the locked tree); without one (after bumping a
# version in package.json and deleting the lock) `npm install`, which writes a new lock to
# commit.
set -euo pipefail

PLAYERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/players" && pwd)"
cd "$PLAYERS_DIR"

command -v npm >/dev/null 2>&1 || { echo "install-players: npm not found (run scripts/install-deps.sh)" >&2; exit 1; }

stamp_file=node_modules/.mediaorigin-install-stamp
want_stamp() {
    cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1
}

if [[ -f package-lock.json && -f "$stamp_file" && "$(cat "$stamp_file")" == "$(want_stamp)" ]]; then
    echo "install-players: up to date ($PLAYERS_DIR/node_modules)"
    exit 0
fi

if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    # No "resolved" URLs in the lock: installs go through whatever registry npm is set up
    # with; the integrity hashes still pin every tarball.
    npm install --no-audit --no-fund --loglevel=error --omit-lockfile-registry-resolved
fi

for f in hls.js/dist/hls.min.js dashjs/dist/modern/umd/dash.all.min.js shaka-player/dist/shaka-player.compiled.js; do
    [[ -f "node_modules/$f" ]] || { echo "install-players: node_modules/$f missing after install" >&2; exit 1; }
done
want_stamp >"$stamp_file"
echo "install-players: installed $(node -p "Object.entries(require('./package.json').dependencies).map(([k, v]) => k + '@' + v).join(' ')")"
