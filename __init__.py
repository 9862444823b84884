"""ComfyUI-LatentSync: LatentSync lip sync as ComfyUI nodes (ComfyUI entry point).

ComfyUI imports this file when the pack sits in ``custom_nodes/``. The nodes use ComfyUI's V3 node
API (``comfy_api.latest``: ``io.ComfyNode`` + ``ComfyExtension`` + ``comfy_entrypoint``); the reasons
and the supported ComfyUI range are in docs/comfyui.md. Importing this file outside ComfyUI (pytest,
``python -m latentsync``) does nothing and never fails: ``comfy_api`` is only looked up here, and
the heavy backend (diffusers, mediapipe, whisper) is imported by the nodes when they run.
"""

import importlib.util
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))

# The backend package ``latentsync`` sits next to this file and imports itself absolutely; ComfyUI
# does not put a pack's folder on sys.path. Appended (not prepended) so nothing of ComfyUI's is
# shadowed; our ``nodes`` package is only ever imported relatively (ComfyUI has its own ``nodes``).
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)


def _inside_comfyui() -> bool:
    try:
        return importlib.util.find_spec("comfy_api") is not None
    except (ImportError, ValueError):  # a stand-in module without a spec (unit tests)
        return False


if __package__ and _inside_comfyui():
    try:
        from comfy_api.latest import ComfyExtension, io  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "ComfyUI-LatentSync needs ComfyUI >= 0.3.75 (the V3 node API comfy_api.latest with "
            f"io.ComfyNode and ComfyExtension); this ComfyUI has no usable comfy_api.latest: {exc}. "
            "Update ComfyUI."
        ) from None
    from .nodes import comfy_entrypoint  # noqa: F401  (the V3 entry point ComfyUI looks for)
