"""Evaluation commands (spec 5); each prints one JSON object on stdout.

    python -m training.eval.sync_conf   --video V.mp4 [...] --syncnet-checkpoint stable_syncnet.pt
    python -m training.eval.syncnet_acc --data-dir DATA --syncnet-checkpoint stable_syncnet.pt
    python -m training.eval.fvd         --real DIR --fake DIR --i3d i3d_torchscript.pt
"""
