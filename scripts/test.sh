#!/usr/bin/env bash
# Checks the style and runs the test suite on the CPU: bash scripts/test.sh [pytest args]. Sets up .venv first.
# bash scripts/test.sh -m "not slow": the unit tests alone, without tests/end_to_end/ and the tests over about 3 s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Idle OpenMP threads sleep instead of spinning (spinning threads slow a shared CPU many times).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# The house style (ruff.toml): lint and import order first, then the tests.
ruff check .
set +e
python -m pytest tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
fi
exit "$status"
