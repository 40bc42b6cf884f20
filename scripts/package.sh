#!/usr/bin/env bash
# Builds the Lambda artifact: the `vantage` binary for x86_64, linked against glibc 2.34 (the
# provided.al2023 runtime's) with cargo-zigbuild and the `lambda` profile, renamed `bootstrap`
# and zipped deterministically into dist/vantage-lambda-x86_64.zip. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
Usage: scripts/package.sh [--check] [--skip-build] [--help]

Builds dist/vantage-lambda-x86_64.zip for the Lambda provided.al2023 runtime (x86_64):
  cargo zigbuild --profile lambda --target x86_64-unknown-linux-gnu.2.34 --bin vantage
then names the binary `bootstrap`, zips it alone with a fixed timestamp (same input, same
zip), prints its sizes, and fails unless the highest GLIBC_ symbol version the binary needs is
at most 2.34 (AL2023's glibc).

One zip serves every function: set the function's Handler to `agent` or `status-endpoint`
(Lambda passes it to bootstrap as _HANDLER).

Options:
  --check       after packaging, unzip the artifact and check it: one file, mode 0755, the
                glibc ceiling, then run tests/lambda_package.rs against the packaged bootstrap
                (VANTAGE_LAMBDA_BOOTSTRAP) with the Runtime API stand-in on loopback.
  --skip-build  package the binary the last build left (fails if there is none).
  --help        this text.

Installs, when missing: binutils (apt), a Python venv with ziglang and cargo-zigbuild from
PyPI (at $VANTAGE_PACKAGE_VENV, default .venv-package/), cargo-nextest for --check.
Needs cargo (rustup) and the x86_64-unknown-linux-gnu standard library. arm64
(aarch64-unknown-linux-gnu.2.34) is not built: see deploy/packaging.md.
EOF
}

check=false
build=true
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --skip-build) build=false ;;
    -h | --help) usage; exit 0 ;;
    *) echo "package.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

readonly rust_target=x86_64-unknown-linux-gnu
readonly glibc_ceiling=2.34
readonly profile=lambda
readonly zip_name=vantage-lambda-x86_64.zip

apt_install() {
  local sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

# --- tools -------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
host=$(rustc -vV | sed -n 's/^host: //p')
[ "$host" = "$rust_target" ] || die "this script builds on an x86_64 Linux host (this one is $host)"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$rust_target"; then
  rustup target add "$rust_target"
fi
command -v readelf >/dev/null || apt_install binutils
command -v python3 >/dev/null || apt_install python3 python3-venv
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

venv="${VANTAGE_PACKAGE_VENV:-$PWD/.venv-package}"
if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python" -m ziglang version >/dev/null 2>&1; then
  log "creating $venv with ziglang and cargo-zigbuild (PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==0.17.*" "cargo-zigbuild==0.24.*"
fi
# cargo-zigbuild runs zig as `python3 -m ziglang` from the venv.
export PATH="$venv/bin:$PATH"

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/$rust_target/$profile/vantage"

# --- build -------------------------------------------------------------------------------
if $build; then
  log "cargo zigbuild --profile $profile --target $rust_target.$glibc_ceiling (zig $(python3 -m ziglang version))"
  started=$(date +%s)
  cargo zigbuild --locked --profile "$profile" --bin vantage --target "$rust_target.$glibc_ceiling"
  log "built in $(($(date +%s) - started)) s"
fi
[ -x "$binary" ] || die "no binary at $binary: run without --skip-build"

# --- glibc ceiling -----------------------------------------------------------------------
# The highest GLIBC_x.y version among the symbols the binary imports; AL2023 ships 2.34.
check_glibc() {
  local file=$1 highest
  highest=$(readelf --dyn-syms --wide "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  [ -n "$highest" ] || die "$file imports no GLIBC_ symbols: is it a glibc binary?"
  if [ "$(printf '%s\n%s\n' "$highest" "$glibc_ceiling" | sort -V | tail -n 1)" != "$glibc_ceiling" ]; then
    die "$file needs GLIBC_$highest, above AL2023's $glibc_ceiling"
  fi
  log "highest GLIBC symbol version needed: $highest (ceiling $glibc_ceiling); shared libraries: $(readelf -d "$file" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
}
check_glibc "$binary"

# --- zip ---------------------------------------------------------------------------------
mkdir -p dist
# One entry, `bootstrap`, mode 0755, a fixed 1980-01-01 timestamp: the same binary always
# gives the same zip (and the same CodeSha256 in Lambda).
python3 - "$binary" "dist/$zip_name" <<'EOF'
import sys, zipfile
source, out = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.create_system = 3  # Unix, so the mode below is honoured
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(source, "rb") as f, zipfile.ZipFile(out, "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
EOF
binary_bytes=$(stat -c %s "$binary")
zip_bytes=$(stat -c %s "dist/$zip_name")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "dist/$zip_name: $zip_bytes bytes ($(mib "$zip_bytes") MiB); bootstrap $binary_bytes bytes" \
  "($(mib "$binary_bytes") MiB) unzipped; sha256 $(sha256sum "dist/$zip_name" | cut -d' ' -f1)"

$check || exit 0

# --- check the zip as Lambda unpacks it ----------------------------------------------------
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
python3 - "dist/$zip_name" "$unpacked" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    entries = z.infolist()
    names = [e.filename for e in entries]
    if names != ["bootstrap"]:
        sys.exit(f"package.sh: the zip holds {names}, expected only bootstrap")
    mode = entries[0].external_attr >> 16
    if mode & 0o777 != 0o755:
        sys.exit(f"package.sh: bootstrap has mode {oct(mode)}, expected 0755")
    z.extractall(sys.argv[2])
os.chmod(os.path.join(sys.argv[2], "bootstrap"), 0o755)
EOF
check_glibc "$unpacked/bootstrap"
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
log "tests/lambda_package.rs against the packaged bootstrap"
VANTAGE_LAMBDA_BOOTSTRAP="$unpacked/bootstrap" cargo nextest run --locked -p vantage --test lambda_package
