#!/usr/bin/env bash
# Creates (or reuses) the local virtual environment with the pinned stack and this package.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run any number of times.
# DSMNET_VENV picks another environment folder (default: .venv in the repository).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DSMNET_VENV:-$ROOT/.venv}"

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
            echo "$candidate"; return 0
        fi
    done
    echo "setup_env: need Python 3.11 or 3.12 (the pinned numpy 2.4 and onnxruntime 1.32 have no 3.10 wheels; basicsr 1.4.2 breaks on 3.13); set PYTHON=..." >&2
    return 1
}

# The stamp records what the environment was built from; a change to either file reinstalls.
stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)"
    echo "setup_env: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.dsmnet-stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
    pin() { grep -E "^$1==" "$ROOT/requirements.txt"; }
    PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
    echo "setup_env: installing torch (first), basicsr (--no-build-isolation), then the rest"
    "${PIP[@]}" "$(pin torch)" "$(pin torchvision)"
    "${PIP[@]}" --no-build-isolation "$(pin basicsr)"
    "${PIP[@]}" -r "$ROOT/requirements.txt"
    "${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
    stamp_of > "$VENV/.dsmnet-stamp"
fi
export PATH="$VENV/bin:$PATH"
