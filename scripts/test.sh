#!/usr/bin/env bash
# Quality gates and tests, exactly as CI runs them. Fails on the first failing gate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
V=.venv/bin
step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

step "ruff"
$V/ruff check ingestd adapters alarms schema tests bench scripts simulator
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
# Tests mostly wait on real servers, so three workers overlap them on two cores; a test file stays on
# one worker (its module fixtures and servers are shared). Exit code 5 (no tests ran) fails the build.
$V/python -m pytest -m "not slow" -q -p no:cacheprovider -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
