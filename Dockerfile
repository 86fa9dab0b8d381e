# syntax=docker/dockerfile:1
#
# The mnas service images: one target per role, each installing only mnas[ROLE].
#
#   docker build --target controller -t mnas/controller:0.1.0 .
#   docker build --target trainer    -t mnas/trainer:0.1.0 .
#   docker build --target latency    -t mnas/latency:0.1.0 .
#   docker build --target reward     -t mnas/reward:0.1.0 .
#   docker build --target operator   -t mnas/operator:0.1.0 .
#
# The manifests in k8s/ run these names. Every image runs `python -m services.ROLE` as the
# numeric user 65532 and takes the service's own flags as arguments; the services bind
# loopback unless told otherwise, so a container passes at least
# `--host 0.0.0.0 --port 50051 --metrics-port 9090` (the default CMD) plus what its role
# needs (the controller: --store, --trainer, --latency, --reward; the operator: --controller).
# tests/deploy/test_role_images.py proves each role's contents without a container runtime:
# a fresh virtual environment per role with only that extra, serving its health check.
#
# torch is the CPU build of 2.13.0 from PyTorch's CPU index. A GPU trainer image takes the
# CUDA build of the same release, for instance
#   docker build --target trainer --build-arg TORCH_VARIANT=cu130 -t mnas/trainer-gpu:0.1.0 .
# (TORCH_VARIANT names a wheel index of download.pytorch.org, cpu by default; the CUDA
# builds are several GB). No image installs TensorFlow: it is a test dependency only.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu

# -- builder: the mnas wheel and a wheelhouse of every role's dependencies ---------------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VERSION
ARG TORCH_VARIANT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here, for any dependency that ships no wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mnas ./mnas
COPY services ./services
# One wheelhouse for all roles; each final stage installs its own extra from it, offline.
# The constraint keeps pip from taking another torch (a newer one is a CUDA build).
RUN echo "torch==${TORCH_VERSION}+${TORCH_VARIANT}" > /constraints.txt \
    && pip wheel --wheel-dir /wheels \
        --constraint /constraints.txt \
        --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        ".[controller,trainer,latency,reward,operator]" \
    && cp /constraints.txt /wheels/constraints.txt

# -- runtime: what every role's image shares ---------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# The one writable place a read-only root file system keeps (a volume in the manifests):
# the controller's SQLite store by default.
RUN mkdir -p /var/lib/mnas && chown 65532:65532 /var/lib/mnas
WORKDIR /var/lib/mnas
# gRPC, then Prometheus /metrics.
EXPOSE 50051 9090
CMD ["--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9090"]

# -- controller: search state (SQLite or PostgreSQL) and the PPO policy (torch) ----------
FROM runtime AS controller
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /wheels/constraints.txt "mnas[controller]"
USER 65532:65532
ENTRYPOINT ["python", "-m", "services.controller"]

# -- trainer: PyTorch, with Fashion-MNIST from Debian so the default install trains -------
FROM runtime AS trainer
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /wheels/constraints.txt "mnas[trainer]"
USER 65532:65532
ENTRYPOINT ["python", "-m", "services.trainer"]

# -- latency: the .tflite writer and LiteRT on the host CPU; adb for the phones ---------
# The phones install runs an adb server from this same image, next to the service.
FROM runtime AS latency
RUN apt-get update \
    && apt-get install -y --no-install-recommends adb \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /wheels/constraints.txt "mnas[latency]"
USER 65532:65532
ENTRYPOINT ["python", "-m", "services.latency"]

# -- reward: pure math, the base dependencies only ---------------------------------------
FROM runtime AS reward
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /wheels/constraints.txt "mnas[reward]"
USER 65532:65532
ENTRYPOINT ["python", "-m", "services.reward"]

# -- operator: runs MnasSearch custom resources through the controller ------------------
FROM runtime AS operator
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        --constraint /wheels/constraints.txt "mnas[operator]"
USER 65532:65532
ENTRYPOINT ["python", "-m", "services.operator"]
