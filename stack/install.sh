#!/usr/bin/env bash
# Installs the real servers micropacs runs against in a hospital deployment, built or
# fetched through the ordinary package clients and cached outside the repository:
#   Apache Kafka (jars from Maven Central), MinIO and FerretDB (built with Go),
#   Prometheus and promtool (Debian package), PostgreSQL (Debian package, for FerretDB's
#   PostgreSQL backend), helm and helm-unittest (built with Go) for the
#   deployment checks. Re-running it skips what is already there.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
STACK="${MICROPACS_STACK_HOME:-$HOME/.cache/micropacs-stack}"
KAFKA_VERSION=4.3.1
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # github.com/minio/minio, master of 2026-02-12
mkdir -p "$STACK/bin"
log() { printf '[stack/install] %s\n' "$*" >&2; }

install_kafka() {
  local libs="$STACK/kafka-$KAFKA_VERSION/libs"
  [ -f "$libs/.complete" ] && return
  log "Kafka $KAFKA_VERSION jars (Maven) -> $libs"
  mvn -B -q -f "$here/tools/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

install_minio() {
  [ -x "$STACK/bin/minio" ] && return
  log "MinIO $MINIO_VERSION (go install; several minutes the first time)"
  CGO_ENABLED=0 GOBIN="$STACK/bin" go install -trimpath -ldflags "-s -w" \
      "github.com/minio/minio@$MINIO_VERSION"
}

install_ferretdb() {
  # Rebuilt when tools/ferretdb changed since (its flags are what stack/servers.py passes).
  [ -x "$STACK/bin/ferretdb" ] && [ "$STACK/bin/ferretdb" -nt "$here/tools/ferretdb/main.go" ] && return
  # FerretDB's own cmd/ferretdb panics when built outside its repository (no version.txt),
  # so tools/ferretdb is a small main package of ours over FerretDB's embeddable API.
  log "FerretDB v1.24.2 (go build of tools/ferretdb)"
  (cd "$here/tools/ferretdb" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
      -o "$STACK/bin/ferretdb" .)
}

HELM_VERSION=v3.21.4
HELM_UNITTEST_VERSION=v1.1.2

install_helm() {
  [ -x "$STACK/bin/helm" ] && return
  log "helm $HELM_VERSION (go install)"
  CGO_ENABLED=0 GOBIN="$STACK/bin" go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_helm_unittest() {
  [ -x "$STACK/bin/helm-unittest" ] && return
  # Its go.mod has a replace directive, which `go install …@version` refuses: build it
  # inside its own module from the module cache instead.
  log "helm-unittest $HELM_UNITTEST_VERSION (go build)"
  local mod="github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION"
  local dir
  dir="$(cd "$STACK" && go mod download -json "$mod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
      -o "$STACK/bin/helm-unittest" ./cmd/helm-unittest)
}

install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return
  log "Prometheus (apt-get)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

install_postgresql() {
  # FerretDB's PostgreSQL backend (MICROPACS_STACK_CATALOG_BACKEND=postgresql); stack/servers.py
  # runs initdb and pg_ctl of the newest /usr/lib/postgresql/*/bin as the postgres user.
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && \
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return
  log "PostgreSQL (apt-get)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# The Go builds and the Maven fetch are independent: run them side by side.
install_kafka & k=$!
install_ferretdb & f=$!
install_minio & m=$!
install_helm & h=$!
install_helm_unittest & u=$!
install_prometheus
install_postgresql
wait $k; wait $f; wait $m; wait $h; wait $u
log "ready in $STACK"
