"""Training, data preprocessing and evaluation for LatentSync (spec sections 3, 4 and 5).

Entry points (each also importable as ``main(cfg)`` / ``main(argv)``)::

    python -m training.train_syncnet --config training/configs/tiny_syncnet.yaml [key=value ...]
    python -m training.train_unet    --config training/configs/tiny_unet.yaml   [key=value ...]
    python -m training.preprocess.run --input RAW_DIR --output DATA_DIR [--steps a,b]
    python -m training.eval.sync_conf | syncnet_acc | fvd  ...   (print JSON)

Everything here depends on the backend package ``latentsync``; nothing in ``latentsync`` imports
``training``.
"""
