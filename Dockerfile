# gpu-provisioner controller image.
#   docker build -t <registry>/gpu-provisioner:0.1.0 .
# The chart runs it as uid 65532 with a read-only root filesystem; only /tmp is writable there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: install the package and its dependencies into a self-contained virtualenv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so code changes do not re-download them.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c 'import subprocess, tomllib; \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
subprocess.run(["/opt/venv/bin/pip", "install", *deps], check=True)'
# .dockerignore lets in only pyproject.toml, README/LICENSE and the packages (provisioner, fakes).
COPY . ./
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/gpu-provisioner version

# -- runtime: the virtualenv on the same base, nothing else
FROM ${PYTHON_IMAGE}
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
