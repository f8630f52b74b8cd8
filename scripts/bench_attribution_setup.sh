#!/usr/bin/env bash
# A throwaway virtual environment with the reference package ChannelAttribution, for
# scripts/bench_attribution.py only: it is NOT a project dependency. Its C++ core is compiled
# on install (about 80 s). Usage: scripts/bench_attribution_setup.sh [VENV_DIR]
set -euo pipefail
VENV="${1:-${BENCH_CA_VENV:-/tmp/ca-venv}}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import ChannelAttribution" 2>/dev/null; then
    echo "ChannelAttribution already installed in $VENV"
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# matplotlib: the package imports it at load time.
"$VENV/bin/pip" install --quiet ChannelAttribution pandas matplotlib
echo "ChannelAttribution installed in $VENV (python: $VENV/bin/python)"
