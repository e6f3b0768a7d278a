#!/usr/bin/env bash
# Installs what Nimbus needs to build, test and run, from Debian's packages.
# Idempotent: installs only packages that are missing; as root directly, otherwise through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git curl
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev libsqlite3-dev libhowardhinnant-date-dev tzdata
  libgtest-dev libgmock-dev libbenchmark-dev
  libmosquitto-dev mosquitto mosquitto-clients
  libpq-dev postgresql  # store: postgres:// (libpq), and the server its tests start (initdb, pg_ctl)
  libhiredis-dev redis-server  # store: redis:// (hiredis), and the server its tests start
  libssl-dev openssl  # the gateway: JWT signatures (HS256, RS256, ES256), TLS (tests make certificates)
  zlib1g-dev libbrotli-dev  # the gateway: gzip and br responses
  libarchive-dev  # versions: an app folder packaged as a tar archive (nimbus deploy)
  libjemalloc-dev  # the host's allocator (linked in statically)
  haproxy nginx python3-yaml  # tests of deploy/ (and the load balancer of the many-host tests)
  python3 python3-prometheus-client nodejs libseccomp-dev
  protobuf-compiler python3-protobuf  # the trace tests decode OTLP/protobuf exports with protoc and Google's protobuf
  prometheus  # promtool: the tests check every /metrics line with `promtool check metrics` (no server is started)
  chromium  # the web-app example's browser test (tests/browser, driven by puppeteer-core)
  clang libclang-rt-dev  # the fuzz targets (make fuzz, make test): libFuzzer comes with compiler-rt
)
if [[ ${NIMBUS_BENCH:-0} == 1 ]]; then
  packages+=(wrk procps util-linux)
fi

# kubectl checks deploy/kubernetes (kubectl kustomize); Debian ships it as kubernetes-client.
if ! command -v kubectl >/dev/null 2>&1; then
  packages+=(kubernetes-client)
fi

# npm comes with some builds of nodejs (NodeSource's); Debian's nodejs needs Debian's npm.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

# From npm, at the versions their lock files pin: the CloudEvents SDK the cloudevents trigger's
# tests send with (tests/cloudevents), and puppeteer-core, which drives Debian's chromium in the
# web-app example's browser test (tests/browser; it downloads no browser of its own), and the
# OpenTelemetry JS SDK a Node function joins the host's trace with (tests/otel).
node_packages() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  npm_ci "$root" tests/cloudevents cloudevents
  npm_ci "$root" tests/browser puppeteer-core
  npm_ci "$root" tests/otel @opentelemetry/sdk-trace-base
}
npm_ci() {  # ROOT FOLDER MODULE: npm ci in FOLDER unless MODULE is installed there
  if [[ ! -d $1/$2/node_modules/$3 ]]; then
    echo "setup: npm ci in $2" >&2
    (cd "$1/$2" && env -u NODE_EXTRA_CA_CERTS npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if (( ${#missing[@]} == 0 )); then
  node_packages
  exit 0
fi

sudo=()
if (( EUID != 0 )); then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
node_packages
