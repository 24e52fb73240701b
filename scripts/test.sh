#!/usr/bin/env bash
# Quality gates and tests, exactly as CI runs them. Fails on the first failing gate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
V=.venv/bin
step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

step "ruff"
$V/ruff check ingestd adapters alarms schema tests bench scripts
step "mypy (strict: ingestd, adapters, alarms)"
$V/mypy
step "import rules (DESIGN §2)"
$V/lint-imports
if [[ -f systemd/ingestd.service ]] && command -v systemd-analyze >/dev/null; then
  step "systemd-analyze verify"
  bash scripts/verify-systemd.sh
fi
[[ "${1:-}" == "--lint-only" ]] && exit 0

step "pytest (excluding slow soak tests; they run from bench/)"
# exit code 5 (no tests collected) fails the build like any other failure
$V/python -m pytest -m "not slow" -q -p no:cacheprovider "$@"
