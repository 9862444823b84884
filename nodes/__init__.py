"""ComfyUI nodes of ComfyUI-LatentSync (V3 node API); thin adapters over the ``latentsync`` backend.

Imported by the pack's top-level ``__init__.py`` only inside ComfyUI (``comfy_api`` must exist).
"""

from comfy_api.latest import ComfyExtension, io

from .audio import LoadWhisperAudio
from .comfy_models import register_model_folder
from .face import FaceCropAlign, PasteBackFaces
from .loaders import UNetLoader, WhisperLoader
from .sampler import LatentSyncSampler
from .vae import VAEDecodeFrames

NODES: list[type[io.ComfyNode]] = [
    UNetLoader,
    WhisperLoader,
    LoadWhisperAudio,
    FaceCropAlign,
    LatentSyncSampler,
    VAEDecodeFrames,
    PasteBackFaces,
]


class LatentSyncExtension(ComfyExtension):
    """Registers the LatentSync nodes and the ``models/latentsync`` folder."""

    async def on_load(self) -> None:
        register_model_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> LatentSyncExtension:
    """V3 entry point: ComfyUI calls it once when it loads the pack."""
    register_model_folder()  # before any define_schema lists the folder's files
    return LatentSyncExtension()
