# gpu-provisioner controller image. .github/workflows/release.yaml builds it for linux/amd64 and
# linux/arm64 on a version tag and pushes ghcr.io/gpu-provisioner/gpu-provisioner:<version>, the
# chart's default. Locally: `make image` (buildah, no daemon needed) or `docker build .`.
# The chart runs it as uid 65532 with a read-only root filesystem; only /tmp is writable there.
#
# Everything that goes in is pinned: the base image by digest (a multi-arch index, so each
# platform gets its own), the Python dependencies and the build backend by requirements*.lock with
# hashes (`make lock`), installed from wheels only. The offline test cloud (fakes/) is not in it.

ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# -- build: the dependencies and the controller's wheel in a self-contained virtualenv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from the lock files alone, so a code change does not re-download them.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements-build.lock \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
# .dockerignore lets in only these and the lock files.
COPY pyproject.toml README.md LICENSE ./
COPY provisioner ./provisioner
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/venv/bin/pip install --no-deps /dist/gpu_provisioner-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/gpu-provisioner version

# -- runtime: the virtualenv on the same base, nothing else
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpu-provisioner" \
      org.opencontainers.image.description="Provisions GPU nodes for Karpenter Machine/NodeClaim objects (Kaito) as AKS agent pools" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gpu-provisioner/gpu-provisioner"
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# /metrics and /healthz,/readyz (METRICS_PORT, HEALTH_PORT)
EXPOSE 8080 8081
ENTRYPOINT ["gpu-provisioner"]
CMD ["controller"]
