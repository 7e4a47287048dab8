# syntax=docker/dockerfile:1
# likeness training image: torch and torchvision (CUDA builds from PyPI, which also run on CPU)
# and the training CLI, from exact pins (requirements-train.txt, compiled from pyproject.toml by
# `make pins`). Runs as a batch job:
#   docker compose --profile train run --rm train train --config default
#   docker compose --profile train run --rm train export --checkpoint runs/fmnist-default/best.pt --output /models/new.onnx
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY docker/requirements-train.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements-train.txt
COPY pyproject.toml README.md ./
COPY likeness ./likeness
COPY contract ./contract
COPY training ./training
COPY bench ./bench
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE} AS train
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LIKENESS_CACHE_DIR=/work/cache
RUN groupadd --system --gid 10001 likeness \
    && useradd --system --uid 10001 --gid 10001 --home-dir /work --shell /usr/sbin/nologin likeness \
    && mkdir -p /work/runs /work/cache /models /data && chown -R 10001:10001 /work /models /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /work
USER 10001:10001
VOLUME ["/work/runs", "/models", "/data"]
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
