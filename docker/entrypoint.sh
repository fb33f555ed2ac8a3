#!/usr/bin/env bash
# Serving container entrypoint: start the service for $EFFICIENTNET_VARIANT.
#
# The graph is looked up first in $EFFICIENTNET_MODEL_DIR (the /data volume, where the export
# job of docker-compose.yml or the initContainer in deploy/k8s writes any variant), then among
# the graphs baked into the image at build time. Changing the variant is configuration only.
set -euo pipefail

variant="${EFFICIENTNET_VARIANT:-lite0}"
model_dir="${EFFICIENTNET_MODEL_DIR:-/data/models}"
baked_dir="${BAKED_MODEL_DIR:-/opt/efficientnet/models}"
graph="efficientnet_${variant}.onnx"

if [[ -z "${EFFICIENTNET_MODEL_PATH:-}" && ! -f "${model_dir}/${graph}" ]]; then
  if [[ -f "${baked_dir}/${graph}" ]]; then
    export EFFICIENTNET_MODEL_PATH="${baked_dir}/${graph}"
  else
    echo "error: no ONNX graph for variant '${variant}' (looked in ${model_dir} and ${baked_dir})." \
      "Run the export job first (docker compose run --rm export) or build the image with" \
      "--build-arg VARIANT=${variant}." >&2
    exit 1
  fi
fi

# Caches live on the writable volume; the root filesystem may be read-only.
mkdir -p "${XDG_CACHE_HOME:-/data/cache}" "${HOME:-/data/home}" 2>/dev/null || true

# All interfaces on 8000 by default (the container's own network); EFFICIENTNET_HOST/PORT move
# it, e.g. to loopback on a host-network container. Flags in "$@" still win (argparse: last).
# A Kubernetes Service named "efficientnet" injects EFFICIENTNET_PORT=tcp://IP:PORT into pods
# that keep service links on: only a plain number is taken as the port.
port="${EFFICIENTNET_PORT:-8000}"
if [[ ! "${port}" =~ ^[0-9]+$ ]]; then
  port=8000
  unset EFFICIENTNET_PORT
fi
exec python -m service --host "${EFFICIENTNET_HOST:-0.0.0.0}" --port "${port}" "$@"
