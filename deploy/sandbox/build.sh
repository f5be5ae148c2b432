#!/bin/sh
# Build the sandbox image: deploy/sandbox/build.sh [BASE]
#   BASE  the image to start from (default python:3.12-slim; any python3 image works)
#   TASKMESH_SANDBOX_TAG  the tag to give it (default taskmesh-sandbox:latest)
# The result carries the label org.taskmesh.sandbox=1, so a runner whose TASKMESH_SANDBOX_IMAGE is
# left at its default finds it when python:3.12-slim cannot be pulled. Or set
# TASKMESH_SANDBOX_IMAGE to the tag.
set -eu
base="${1:-python:3.12-slim}"
tag="${TASKMESH_SANDBOX_TAG:-taskmesh-sandbox:latest}"
here="$(cd "$(dirname "$0")" && pwd)"
docker build --build-arg "BASE=$base" --tag "$tag" "$here"
echo "sandbox image: $tag (from $base)"
