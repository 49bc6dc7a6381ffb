#!/usr/bin/env bash
# Installs code-server (a real VS Code, server + web workbench) into a git-ignored cache folder for the
# VS Code test suite. Idempotent: a second run with the same version does nothing.
#
# Why by hand and not `npm install -g code-server`: its postinstall runs `npm install` inside VS Code's
# tree, where @vscode/ripgrep and argon2 download binaries from GitHub (no internet here) and node-gyp
# downloads Node headers. So every npm step runs with --ignore-scripts, ripgrep comes from Debian, and
# the native modules are rebuilt against the headers Debian's nodejs ships in /usr/include/node.
#
# Needs: Node 20 with its headers in /usr/include/node (NodeSource's nodejs), and from Debian
# chromium ripgrep libkrb5-dev, plus python3, make and g++ for node-gyp. .ci/run installs them.
# Override the folder with RBEE_CODE_SERVER_DIR (test/vscode/harness.ts reads the same variable).
set -euo pipefail

VERSION=4.100.3 # VS Code 1.100.3, the last code-server line that runs on Node 20
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${RBEE_CODE_SERVER_DIR:-$root/.cache/code-server}"
stamp="$dest/.installed-$VERSION"

if [ -f "$stamp" ]; then
  echo "code-server $VERSION already installed in $dest"
  exit 0
fi

missing=()
command -v rg >/dev/null || missing+=(ripgrep)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -f /usr/include/krb5.h ] || missing+=(libkrb5-dev)
for tool in python3 make g++; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-code-server: missing ${missing[*]}; install them first (apt-get install ${missing[*]})" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" != 20 ]; then
  echo "install-code-server: code-server $VERSION needs Node 20 (found $(node -v))" >&2
  exit 1
fi
# node-gyp would otherwise download the Node headers from nodejs.org.
if [ ! -f /usr/include/node/common.gypi ]; then
  echo "install-code-server: Node headers not found in /usr/include/node (Debian/NodeSource nodejs ships them)" >&2
  exit 1
fi
export npm_config_nodedir=/usr
export npm_config_update_notifier=false
npm_quiet=(--no-audit --no-fund --loglevel=error)

start=$SECONDS
# A fresh folder each time: a half-finished earlier run must not leave a mix of versions behind.
rm -rf "$dest"
mkdir -p "$dest"
echo '{ "private": true }' >"$dest/package.json"

echo "install-code-server: fetching code-server@$VERSION from npm"
npm install --prefix "$dest" --ignore-scripts --no-package-lock "${npm_quiet[@]}" "code-server@$VERSION"
cs="$dest/node_modules/code-server"
vscode="$cs/lib/vscode"

# What code-server's own postinstall.sh does, step by step, minus the downloads.
echo "install-code-server: installing VS Code's dependencies"
(cd "$vscode" && npm install --ignore-scripts --omit=dev "${npm_quiet[@]}")
(cd "$vscode/extensions" && npm install --ignore-scripts --omit=dev "${npm_quiet[@]}" && node postinstall.mjs >/dev/null)
ln -sfn node_modules "$vscode/node_modules.asar"
ln -sfn code-server-linux.sh "$vscode/bin/remote-cli/code-server"
ln -sfn browser-linux.sh "$vscode/bin/helpers/browser.sh"

mkdir -p "$vscode/node_modules/@vscode/ripgrep/bin"
cp "$(command -v rg)" "$vscode/node_modules/@vscode/ripgrep/bin/rg"

# Built directly with npm's own node-gyp rather than `npm rebuild`: their install scripts would try
# GitHub first (kerberos' prebuild-install) or fetch another node-gyp with npx (node-pty's postinstall).
echo "install-code-server: building native modules (log: $dest/native-build.log)"
node_gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
if [ ! -f "$node_gyp" ]; then
  echo "install-code-server: npm's bundled node-gyp not found at $node_gyp" >&2
  exit 1
fi
build_native() { # <folder> <command…>
  if ! (cd "$1" && "${@:2}") >>"$dest/native-build.log" 2>&1; then
    tail -30 "$dest/native-build.log" >&2
    echo "install-code-server: building $1 failed (full log: $dest/native-build.log)" >&2
    exit 1
  fi
}
for module in @vscode/spdlog kerberos native-watchdog node-pty; do
  build_native "$vscode/node_modules/$module" node "$node_gyp" rebuild --jobs=max
done
# argon2 hashes passwords; the tests run with --auth none but code-server loads it at start-up.
# node-pre-gyp supplies the module_path variables its binding.gyp needs; `rebuild` never downloads.
build_native "$dest/node_modules/argon2" node ../@mapbox/node-pre-gyp/bin/node-pre-gyp rebuild

# Prove the install loads: the native modules, and code-server itself. code-server writes a default
# config file even for --version, so point its XDG folders at a scratch folder, not the home folder.
(cd "$vscode" && node -e 'for (const m of ["@vscode/spdlog", "kerberos", "native-watchdog", "node-pty"]) require(m)')
(cd "$dest" && node -e 'require("argon2")')
probe="$dest/.probe"
version="$(XDG_CONFIG_HOME="$probe" XDG_DATA_HOME="$probe" "$cs/out/node/entry.js" --version 2>&1 | tail -1)"
rm -rf "$probe"
touch "$stamp"
echo "install-code-server: $version installed in $dest in $((SECONDS - start)) s"
