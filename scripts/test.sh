#!/usr/bin/env bash
# Runs the test suite on the CPU: bash scripts/test.sh [pytest args]. Sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
set +e
python -m pytest tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
fi
exit "$status"
