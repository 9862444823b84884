#!/usr/bin/env bash
# Creates .venv with everything the backend, the tests and the CLI need (CPU, Python 3.11).
# torch==2.13.0 is installed first from its pinned CPU wheel: an unpinned torch would pull a CUDA build.
# mediapipe 0.10.21 (bundled face mesh) and openai-whisper are installed without their extra
# dependencies (jax, triton), which the pack never uses. Re-running is cheap: a stamp file records
# the hash of the requirement files that the environment was built from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
want=$(cat tools/setup.sh requirements-test.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c <(echo torch==2.13.0) -r requirements-test.txt
"${pip[@]}" --no-deps openai-whisper==20250625 mediapipe==0.10.21
echo "$want" > "$stamp"
