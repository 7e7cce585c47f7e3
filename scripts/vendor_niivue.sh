#!/usr/bin/env bash
# Fetch NiiVue's UMD build from the npm registry into ui/frontend/vendor/ and check its SHA-256
# (the one recorded in ui/frontend/vendor/README.md). Needs npm; the app itself never does this.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.69.0
SHA256=47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@niivue/niivue@$VERSION" >/dev/null && tar xzf niivue-niivue-$VERSION.tgz)
echo "$SHA256  $tmp/package/dist/niivue.umd.js" | sha256sum -c -
cp "$tmp/package/dist/niivue.umd.js" ui/frontend/vendor/niivue.umd.js
