#!/usr/bin/env bash
# Builds what deploy/Dockerfile copies into its FROM-scratch image: static
# (CGO_ENABLED=0) Linux binaries of stoker and the pi example, and the
# skeleton of writable directories, in deploy/.build (git-ignored). Needs
# only Go: no registry, no base image.
#
# GOARCH defaults to the Go toolchain's; set it to match the Docker host if
# they differ (e.g. GOARCH=arm64 deploy/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=deploy/.build
rm -rf "$out/skel"
mkdir -p "$out/skel/data" "$out/skel/work" "$out/skel/tmp" "$out/skel/home/stoker"
chmod 0755 "$out/skel/data" "$out/skel/work" "$out/skel/home/stoker"
chmod 1777 "$out/skel/tmp"
export CGO_ENABLED=0 GOOS=linux GOARCH="${GOARCH:-$(go env GOARCH)}"
go build -trimpath -ldflags='-s -w' -o "$out/stoker" ./cmd/stoker
go build -trimpath -ldflags='-s -w' -o "$out/pi" ./examples/pi
echo "built $out/stoker and $out/pi (linux/$GOARCH, static)"
# Credentials (once; kept across builds in $out/auth): the operator, account
# and role signing keys, the fixed roles' credentials, and one per agent.
# The image carries them (0600, owned by the stoker user): build it for your
# own use, never push it. Clients on the host use $out/auth/creds/admin.creds.
unset GOOS GOARCH
go run ./cmd/stoker creds --init --auth-dir "$out/auth"
for a in agent-1 agent-2 agent-3; do
  [ -f "$out/auth/creds/$a.creds" ] ||
    go run ./cmd/stoker creds --auth-dir "$out/auth" --role agent --name "$a" --out "$out/auth/creds/$a.creds"
done
rm -rf "$out/skel/etc"
mkdir -p "$out/skel/etc"
cp -r "$out/auth" "$out/skel/etc/stoker"
chmod -R go-rwx "$out/skel/etc/stoker"
echo "credentials in $out/auth (clients: export STOKER_CREDS=$(pwd)/$out/auth/creds/admin.creds)"
