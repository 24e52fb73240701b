#!/usr/bin/env bash
# Idempotent, cached setup for ingestd on Debian 12 (bookworm) or Debian 13 (trixie).
#
#   scripts/setup.sh            Debian packages + TimescaleDB + .venv (everything)
#   scripts/setup.sh --no-venv  system part only
#
# A second run finishes in seconds: every step checks before it acts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${INGESTD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ingestd}"
PYTHON="${PYTHON:-python3.11}"
DO_VENV=1
[[ "${1:-}" == "--no-venv" ]] && DO_VENV=0

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

DEBIAN_VERSION="$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo unknown)"
case "$DEBIAN_VERSION" in
  12|bookworm*) CODENAME=bookworm ;;
  13|trixie*)   CODENAME=trixie ;;
  *)            CODENAME="$( . /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-unknown}")" ;;
esac
# Debian 12: PostgreSQL 15 + TimescaleDB (Apache) built from Debian 13's source package.
# Debian 13: PostgreSQL 17 + Debian's own postgresql-17-timescaledb package (same 2.19.3 Apache edition).
if [[ "$CODENAME" == "trixie" ]]; then
  PG_MAJOR="${PG_MAJOR:-17}"
  TSDB_PKG="postgresql-$PG_MAJOR-timescaledb"
else
  PG_MAJOR="${PG_MAJOR:-15}"
  TSDB_PKG=""
fi
log "Debian $DEBIAN_VERSION ($CODENAME), PostgreSQL $PG_MAJOR, cache $CACHE"

# ---------------------------------------------------------------- Debian packages
PKGS=(postgresql-$PG_MAJOR postgresql-client-$PG_MAJOR mosquitto build-essential cmake pkg-config git
      ca-certificates python3-venv)
if [[ -n "$TSDB_PKG" ]]; then
  PKGS+=("$TSDB_PKG")
else
  PKGS+=(postgresql-server-dev-$PG_MAJOR libssl-dev libkrb5-dev dpkg-dev)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the packaged services are not used: ingestd and its tests start their own instances.
  for svc in mosquitto "postgresql@${PG_MAJOR}-main" postgresql; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
else
  log "Debian packages present"
fi

# ---------------------------------------------------------------- TimescaleDB (Apache edition)
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
PG_CONFIG="$PG_BIN/pg_config"
EXT_DIR="/usr/share/postgresql/$PG_MAJOR/extension"
if ls "$EXT_DIR"/timescaledb--*.sql >/dev/null 2>&1 && [[ -f "$EXT_DIR/timescaledb.control" ]]; then
  log "TimescaleDB present in $EXT_DIR"
else
  mkdir -p "$CACHE/tsdb-apt/lists/partial" "$CACHE/tsdb-src"
  SRC_LIST="$CACHE/tsdb-apt/sources.list"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$SRC_LIST"
  cd "$CACHE/tsdb-src"
  if ! ls timescaledb_*.orig.tar.* >/dev/null 2>&1; then
    log "fetching TimescaleDB source package from Debian trixie"
    apt-get -qq -o Dir::Etc::SourceList="$SRC_LIST" -o Dir::Etc::SourceParts=/dev/null \
      -o Dir::State::Lists="$CACHE/tsdb-apt/lists" -o APT::Sandbox::User=root update
    apt-get -qq -o Dir::Etc::SourceList="$SRC_LIST" -o Dir::Etc::SourceParts=/dev/null \
      -o Dir::State::Lists="$CACHE/tsdb-apt/lists" -o APT::Sandbox::User=root \
      source --download-only timescaledb
  fi
  SRC_DIR="$(find "$CACHE/tsdb-src" -maxdepth 1 -type d -name 'timescaledb-*' | head -1)"
  if [[ -z "$SRC_DIR" ]]; then
    tarball="$(ls timescaledb_*.orig.tar.* | head -1)"
    tar xf "$tarball"
    SRC_DIR="$(find "$CACHE/tsdb-src" -maxdepth 1 -type d -name 'timescaledb-*' | head -1)"
  fi
  cd "$SRC_DIR"
  if [[ ! -f build/CMakeCache.txt ]] || ! grep -q "PG_CONFIG:.*=$PG_CONFIG" build/CMakeCache.txt; then
    rm -rf build
    log "configuring TimescaleDB ($(basename "$SRC_DIR")) against $PG_CONFIG"
    ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=NO -DUSE_TELEMETRY=OFF >/dev/null
  fi
  log "building and installing TimescaleDB (log: $CACHE/tsdb-build.log)"
  if ! { make -C build -j"$(nproc)" && $SUDO make -C build install; } >"$CACHE/tsdb-build.log" 2>&1; then
    tail -30 "$CACHE/tsdb-build.log" >&2
    exit 1
  fi
  log "TimescaleDB installed into $EXT_DIR"
fi

# ---------------------------------------------------------------- Python venv
if ((DO_VENV)); then
  cd "$ROOT"
  if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
  fi
  STAMP=".venv/.ingestd-deps"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$want" ]]; then
    log "installing Python dependencies"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]" 2> >(grep -v -e BuildBackendWarning -e '^\s*!!' -e '\*\*\*' \
      -e 'Please be careful' -e 'name as your package' -e '^\s*$' -e 'corresp(' -e 'wheel_obj' >&2)
    echo "$want" > "$STAMP"
  else
    log "Python dependencies up to date"
  fi
fi
log "done"
