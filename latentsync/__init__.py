"""LatentSync backend: audio-conditioned latent-diffusion lip sync (arXiv 2412.09262).

Importable without ComfyUI. Models live in ``latentsync.models``, Whisper audio features in
``latentsync.audio``, face alignment and paste-back in ``latentsync.face``, the sampler in
``latentsync.pipeline``, video/audio I/O in ``latentsync.video``, weight files in
``latentsync.checkpoints``; ``python -m latentsync`` is the command line.
"""

__version__ = "0.1.0"
