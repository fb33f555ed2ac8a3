#!/usr/bin/env bash
# One-shot export job: make sure $EFFICIENTNET_MODEL_DIR holds the graph for
# $EFFICIENTNET_VARIANT, then exit 0. Used by the `export` service in docker-compose.yml and the
# initContainer in deploy/k8s/deployment.yaml; the serving image never carries torch.
set -euo pipefail

variant="${EFFICIENTNET_VARIANT:-lite0}"
model_dir="${EFFICIENTNET_MODEL_DIR:-/data/models}"
baked_dir="${BAKED_MODEL_DIR:-/opt/efficientnet/models}"
graph="efficientnet_${variant}.onnx"
target="${model_dir}/${graph}"

if [[ -f "${target}" ]]; then
  echo "graph for ${variant} already present: ${target}"
  exit 0
fi

mkdir -p "${model_dir}" "${EFFICIENTNET_WEIGHTS_CACHE:-/data/cache/weights}"
# Write into a scratch folder on the same volume and rename at the end, so an interrupted
# export never leaves a truncated graph that the next run would take as present.
scratch="$(mktemp -d "${model_dir}/.export-${variant}.XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT

if [[ -f "${baked_dir}/${graph}" ]]; then
  echo "copying the graph for ${variant} built into this image"
  cp "${baked_dir}/${graph}" "${scratch}/${graph}"
else
  echo "exporting ${variant} (weights cache: ${EFFICIENTNET_WEIGHTS_CACHE:-unset})"
  python -m model_export --variant "${variant}" --weights imagenet --output-dir "${scratch}" "$@"
fi
mv "${scratch}/${graph}" "${target}"
echo "wrote ${target}"
