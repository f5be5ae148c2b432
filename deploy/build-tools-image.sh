#!/bin/sh
# Make an image of build tools for deploy/Dockerfile (its TOOLS build argument, or
# TASKMESH_BUILD_TOOLS_IMAGE in compose). The install step bind-mounts it; nothing of it ends up
# in the service image. Needed only when
#   - the base image has no pip (then uv installs the lock), and/or
#   - PyPI is reached through a TLS-intercepting proxy (its CA bundle).
# Usage: deploy/build-tools-image.sh [--uv PATH] [--ca-bundle PATH] [--tag TAG]
set -eu
uv="" ca="" tag="taskmesh-build-tools:local"
while [ $# -gt 0 ]; do
  case "$1" in
    --uv) uv="$2"; shift 2 ;;
    --ca-bundle) ca="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "usage: $0 [--uv PATH] [--ca-bundle PATH] [--tag TAG]" >&2; exit 2 ;;
  esac
done
[ -n "$uv$ca" ] || { echo "$0: give --uv and/or --ca-bundle" >&2; exit 2; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
[ -z "$uv" ] || install -m 0755 "$uv" "$dir/uv"
[ -z "$ca" ] || install -m 0644 "$ca" "$dir/ca-certificates.crt"
# An image with just these files at its root; `docker import` needs no registry and no base.
tar -C "$dir" -cf - . | docker import - "$tag" >/dev/null
echo "$tag"
