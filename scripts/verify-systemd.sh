#!/usr/bin/env bash
# Checks the systemd files in systemd/ as CI can, without installing anything:
#
#   * `systemd-analyze verify` of the unit. It insists that ExecStart's binary exists, and the unit
#     names the production path (/opt/ingestd/bin/ingestd), so a copy is verified with that path
#     rewritten to this checkout's `ingestd` (.venv/bin/ingestd, else the one on PATH);
#   * `systemd-analyze security --offline` of the same copy: prints the exposure score and fails
#     above $MAX_EXPOSURE (0-100 scale of --threshold; the score shown as 1.2 is 12 on it);
#   * the sysusers and tmpfiles snippets, applied to a throw-away root directory.
#
#   scripts/verify-systemd.sh             verify, print the score
#   MAX_EXPOSURE=30 scripts/verify-systemd.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_EXPOSURE="${MAX_EXPOSURE:-20}"
UNIT="$ROOT/systemd/ingestd.service"

BIN="$ROOT/.venv/bin/ingestd"
[[ -x "$BIN" ]] || BIN="$(command -v ingestd || true)"
if [[ -z "$BIN" ]]; then
  echo "verify-systemd: no ingestd executable (run scripts/setup.sh or pip install .)" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
sed "s#/opt/ingestd/bin/ingestd#$BIN#g" "$UNIT" > "$TMP/ingestd.service"

echo "systemd-analyze verify systemd/ingestd.service (ExecStart → $BIN)"
out="$(systemd-analyze verify --man=no "$TMP/ingestd.service" 2>&1)" || { echo "$out" >&2; exit 1; }
# verify exits 0 on some warnings: treat any output about our unit as a failure
if grep -q "ingestd.service" <<<"$out"; then
  echo "$out" >&2
  exit 1
fi

score="$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$TMP/ingestd.service" 2>&1 \
  | tee "$TMP/security.txt" | grep -o 'Overall exposure level for ingestd.service: .*')" || {
  cat "$TMP/security.txt" >&2
  echo "verify-systemd: exposure above $MAX_EXPOSURE/100" >&2
  exit 1
}
echo "systemd-analyze security: $score"

mkdir -p "$TMP/root/etc"
systemd-sysusers --root="$TMP/root" "$ROOT/systemd/sysusers.d/ingestd.conf"
grep -q '^ingestd:' "$TMP/root/etc/passwd" || { echo "verify-systemd: sysusers created no ingestd user" >&2; exit 1; }
systemd-tmpfiles --root="$TMP/root" --create "$ROOT/systemd/tmpfiles.d/ingestd.conf"
[[ -d "$TMP/root/etc/ingestd/credentials" ]] || { echo "verify-systemd: tmpfiles made no credentials dir" >&2; exit 1; }
echo "sysusers.d/ingestd.conf and tmpfiles.d/ingestd.conf apply cleanly"
