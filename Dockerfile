# slower-whisper container image.
#
# GPU (default): CTranslate2 (faster-whisper) needs the CUDA 12 cuBLAS and cuDNN 9 libraries, so the runtime
# base is a "-cudnn-runtime" CUDA image; a plain "-runtime" image has no cuDNN and fails on the first
# convolution of Whisper's encoder.
#   docker build -t REGISTRY/slower-whisper:TAG .
# CPU-only variant (same code and lock, no CUDA libraries from the base):
#   docker build --build-arg RUNTIME_IMAGE=ubuntu:22.04 -t REGISTRY/slower-whisper:TAG-cpu .
#
# Both stages use Ubuntu 22.04's Python 3.10 at the same path, so the virtual environment built in the first
# stage runs unchanged in the second. Needs BuildKit (Docker >= 23 by default) for the uv cache mounts.

ARG RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---------------------------------------------------------------------------------------------------------
# build: the locked environment in /app/.venv
FROM ubuntu:22.04 AS build

ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu's security updates move these versions; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.10 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv

ENV UV_PYTHON=/usr/bin/python3.10 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change, not on code edits.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra full --no-install-project

# Then the project itself, installed as a regular (non-editable) package.
COPY README.md ./
COPY transcription/ ./transcription/
# The embedded diarizer's weights ship inside the package (transcription/diarize/voice_encoder.npz).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra full --no-editable

# ---------------------------------------------------------------------------------------------------------
# runtime
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: one image runs serve, transcribe, watch and models; Kubernetes
#   ignores HEALTHCHECK and probes the service itself (k8s/deployment.yaml: /healthz, /readyz).
# checkov:skip=CKV_DOCKER_7: the base is the RUNTIME_IMAGE build argument, whose default above is a fixed tag.
FROM ${RUNTIME_IMAGE} AS runtime

ENV DEBIAN_FRONTEND=noninteractive
# tini runs as PID 1: it forwards SIGTERM to the whole process group (Python and any ffmpeg child) and reaps
# children, so `kubectl delete` stops a transcription promptly instead of waiting for the grace period.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.10 ffmpeg tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /cache/huggingface \
    && chown 1000:1000 /data /cache/huggingface

# Root-owned: the non-root user can run the code but not change it.
COPY --from=build /app/.venv /app/.venv
# uv too, so the commands users know from the original guide (`uv run slower-whisper ...`) keep working.
COPY --from=uv /uv /usr/local/bin/uv

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/cache/huggingface \
    SLOWER_WHISPER_ROOT=/data

# Fail the build, not the first GPU job: the CLI must start, and PyTorch (emotion model) must be a CUDA 12
# build like CTranslate2, because both load the same libcudnn.so.9 into one process.
RUN slower-whisper --help > /dev/null \
    && uv run --directory /data slower-whisper --version \
    && python -c "import sys, torch; v = torch.version.cuda or 'none'; sys.exit(0 if v.startswith('12.') else f'torch {torch.__version__} is built for CUDA {v}; CTranslate2 here uses CUDA 12 (constrain torch in uv.lock)')"

USER 1000:1000
WORKDIR /data
EXPOSE 8000

ENTRYPOINT ["/usr/bin/tini", "-g", "--", "slower-whisper"]
# The HTTP service; it refuses a non-loopback host unless SLOWER_WHISPER_API_KEY is set.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
