# syntax=docker/dockerfile:1
# likeness service image. Two targets:
#   docker build -f docker/service.Dockerfile --target cpu -t likeness:cpu .
#   docker build -f docker/service.Dockerfile --target gpu -t likeness:gpu .
# The GPU target's base matches onnxruntime-gpu 1.31 (CUDA 13, cuDNN 9). Only the service extra is
# installed (no torch), from exact pins (requirements-service.txt, compiled from pyproject.toml by
# `make pins`); the final stages hold no compilers.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- CPU: build the virtualenv on the same base it will run on -------------------------------
FROM ${PYTHON_IMAGE} AS build-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY docker/requirements-service.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements-service.txt
COPY pyproject.toml README.md ./
COPY likeness ./likeness
COPY contract ./contract
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

# The CPU image serves the int8 graph of the default model: the same measured quality
# (models/default-int8.md) at about two thirds of the CPU per request (docs/serving.md).
FROM ${PYTHON_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LIKENESS_HOST=0.0.0.0 LIKENESS_PORT=8000 \
    LIKENESS_MODEL_PATH=/app/models/default-int8.onnx LIKENESS_DATA_DIR=/app/data \
    LIKENESS_GALLERY_DIR=/app/gallery LIKENESS_DEVICE=cpu
RUN groupadd --system --gid 10001 likeness \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin likeness \
    && mkdir -p /app/models /app/data /app/gallery && chown -R 10001:10001 /app
COPY --from=build-cpu /opt/venv /opt/venv
COPY --chown=10001:10001 models/*.onnx models/*.md /app/models/
COPY --chown=10001:10001 service/gallery /app/gallery
WORKDIR /app
USER 10001:10001
VOLUME ["/app/models", "/app/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('LIKENESS_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service"]

# ---- GPU: CUDA/cuDNN runtime base, Python from the distribution ------------------------------
FROM ${CUDA_IMAGE} AS build-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY docker/requirements-service.txt ./
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements-service.txt
COPY pyproject.toml README.md ./
COPY likeness ./likeness
COPY contract ./contract
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM ${CUDA_IMAGE} AS gpu
ENV PATH=/opt/venv/bin:$PATH DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LIKENESS_HOST=0.0.0.0 LIKENESS_PORT=8000 \
    LIKENESS_MODEL_PATH=/app/models/default.onnx LIKENESS_DATA_DIR=/app/data \
    LIKENESS_GALLERY_DIR=/app/gallery LIKENESS_DEVICE=cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 likeness \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin likeness \
    && mkdir -p /app/models /app/data /app/gallery && chown -R 10001:10001 /app
COPY --from=build-gpu /opt/venv /opt/venv
COPY --chown=10001:10001 models/*.onnx models/*.md /app/models/
COPY --chown=10001:10001 service/gallery /app/gallery
WORKDIR /app
USER 10001:10001
VOLUME ["/app/models", "/app/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('LIKENESS_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service"]
