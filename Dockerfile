# One image for every micropacs service; the command picks it:
#   docker run IMAGE run ingest|index|qr      (or: serve, the single-process PACS)
# Dependencies come from requirements.lock (pinned, with hashes): rebuilds are reproducible.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

ARG NODE_IMAGE=node:22-bookworm-slim

# htmx for the admin web UI: from the npm registry, checked against the sha512 pinned in
# tools/htmx/install.sh; the image never loads it from a CDN.
FROM ${NODE_IMAGE} AS htmx
COPY tools/htmx/install.sh /tools/htmx/install.sh
RUN bash /tools/htmx/install.sh /htmx

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/micropacs
COPY requirements.lock requirements-build.lock ./
RUN /opt/micropacs/bin/pip install --require-hashes --no-deps -r requirements-build.lock \
 && /opt/micropacs/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY micropacs ./micropacs
COPY services ./services
COPY --from=htmx /htmx ./services/admin/web/static/vendor
RUN /opt/micropacs/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="micropacs" \
      org.opencontainers.image.description="A PACS as services: ingest, index, qr (DIMSE and DICOMweb)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/micropacs/micropacs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 micropacs \
 && useradd --system --uid 10001 --gid micropacs --home-dir /var/lib/micropacs \
      --shell /usr/sbin/nologin micropacs \
 && install -d -o micropacs -g micropacs /var/lib/micropacs
COPY --from=build /opt/micropacs /opt/micropacs
ENV PATH=/opt/micropacs/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MICROPACS_DATA_DIR=/var/lib/micropacs \
    MICROPACS_DICOM__HOST=0.0.0.0 \
    MICROPACS_HTTP__HOST=0.0.0.0 \
    MICROPACS_AUTH__BACKEND=local \
    MICROPACS_HTTP__PORT=8080
USER 10001:10001
WORKDIR /var/lib/micropacs
EXPOSE 11112 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MICROPACS_HTTP__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["micropacs"]
CMD ["serve"]
