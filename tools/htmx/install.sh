#!/usr/bin/env bash
# Installs htmx, the admin web UI's one JavaScript library, from the npm registry at the
# pinned version, checks the package tarball against the pinned sha512 (the registry's
# `dist.integrity` of that version) and copies htmx.min.js into the git-ignored vendor folder
# the app serves at /static/vendor/. Used by `make install` and the Dockerfile's build; the
# pages work without it, minus their interactive parts. Needs npm and node; no CDN at run time.
#   tools/htmx/install.sh [TARGET_DIR]   (default: services/admin/web/static/vendor)
set -euo pipefail
HTMX_VERSION=2.0.11
HTMX_SHA512=Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==

here="$(cd "$(dirname "$0")/../.." && pwd)"
target="${1:-$here/services/admin/web/static/vendor}"
stamp="$target/htmx.version"
if [ -f "$target/htmx.min.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HTMX_VERSION $HTMX_SHA512" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "[tools/htmx] htmx.org@$HTMX_VERSION (npm pack) -> $target" >&2
(cd "$work" && npm pack --silent "htmx.org@$HTMX_VERSION" >/dev/null)
tarball="$work/htmx.org-$HTMX_VERSION.tgz"
actual="$(node -e 'const c = require("crypto"), fs = require("fs");
process.stdout.write(c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tarball")"
if [ "$actual" != "$HTMX_SHA512" ]; then
  echo "[tools/htmx] sha512 of htmx.org-$HTMX_VERSION.tgz is $actual, pinned $HTMX_SHA512: refusing it" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist/htmx.min.js package/LICENSE
mkdir -p "$target"
install -m 0644 "$work/package/dist/htmx.min.js" "$target/htmx.min.js"
install -m 0644 "$work/package/LICENSE" "$target/htmx.LICENSE"
printf '%s %s\n' "$HTMX_VERSION" "$HTMX_SHA512" > "$stamp"
