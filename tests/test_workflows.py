"""Static checks of the example workflows (workflows/*.json UI format, workflows/api/*.json API twins).

Node types and widgets are checked against three sources:
* our nodes: parsed from nodes/*.py (node_id and the widget inputs of each define_schema);
* ComfyUI core nodes: the table CORE below, read from ComfyUI 0.3.75 (comfy_extras/nodes_video.py,
  comfy_extras/nodes_audio.py, nodes.py); test_comfyui_e2e.py checks the core workflow against the
  real server's /object_info as well;
* VideoHelperSuite: the table VHS below (VideoHelperSuite is not on the package registry, so it is
  checked statically only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))

# ComfyUI 0.3.75: type -> (widget names in UI order, extra UI-only widget values, inputs, outputs).
# "extra" counts frontend widgets that are saved in widgets_values but are no node inputs: the upload
# button of LoadVideo/LoadAudio and LoadAudio's player (audioUI).
CORE = {
    "LoadVideo": (["file"], 1, {}, [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([], 0, {"video": "VIDEO"}, [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "LoadAudio": (["audio"], 2, {}, [("AUDIO", "AUDIO")]),
    "VAELoader": (["vae_name"], 0, {}, [("VAE", "VAE")]),
    "CreateVideo": (["fps"], 0, {"images": "IMAGE", "audio": "AUDIO", "fps": "FLOAT"}, [("VIDEO", "VIDEO")]),
    "SaveVideo": (["filename_prefix", "format", "codec"], 0, {"video": "VIDEO"}, []),
}

# Kosinkadink/ComfyUI-VideoHelperSuite, read at commit 0a26e2defdb7b95bf9ffe09fdf4630fa5ef222f8
# (videohelpersuite/load_video_nodes.py LoadVideoUpload, videohelpersuite/nodes.py VideoCombine and
# VideoInfoLoaded, NODE_CLASS_MAPPINGS "VHS_LoadVideo", "VHS_VideoCombine", "VHS_VideoInfoLoaded";
# video_formats/h264-mp4.json adds pix_fmt, crf, save_metadata, trim_to_audio to VideoCombine).
# VHS saves widgets_values as an object keyed by widget name.
VHS = {
    "VHS_LoadVideo": (
        ["video", "force_rate", "force_size", "custom_width", "custom_height", "frame_load_cap",
         "skip_first_frames", "select_every_nth"],
        {"meta_batch": "VHS_BatchManager", "vae": "VAE"},
        [("IMAGE", "IMAGE"), ("frame_count", "INT"), ("audio", "AUDIO"), ("video_info", "VHS_VIDEOINFO")],
    ),
    "VHS_VideoInfoLoaded": (
        [], {"video_info": "VHS_VIDEOINFO"},
        [("fps🟦", "FLOAT"), ("frame_count🟦", "INT"), ("duration🟦", "FLOAT"), ("width🟦", "INT"), ("height🟦", "INT")],
    ),
    "VHS_VideoCombine": (
        ["frame_rate", "loop_count", "filename_prefix", "format", "pingpong", "save_output",
         "pix_fmt", "crf", "save_metadata", "trim_to_audio"],
        {"images": "IMAGE", "audio": "AUDIO", "meta_batch": "VHS_BatchManager", "vae": "VAE", "frame_rate": "FLOAT"},
        [("Filenames", "VHS_FILENAMES")],
    ),
}

_TYPE = {"Image": "IMAGE", "Mask": "MASK", "Latent": "LATENT", "Audio": "AUDIO", "Vae": "VAE", "Int": "INT",
         "Float": "FLOAT", "Boolean": "BOOLEAN", "String": "STRING", "Combo": "COMBO", "Video": "VIDEO"}
_CUSTOM = {"LatentSyncModel": "LATENTSYNC_MODEL", "WhisperModel": "LATENTSYNC_WHISPER",
           "AudioEmbeds": "LATENTSYNC_AUDIO_EMBEDS", "FaceCrops": "LATENTSYNC_FACE_CROPS"}
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}


def our_nodes() -> dict[str, dict]:
    """node_id -> {"inputs": [(name, type, extra_widget_values)], "outputs": [type]} parsed from nodes/*.py."""
    found = {}
    for path in sorted((REPO / "nodes").glob("*.py")):
        text = path.read_text()
        for block in re.split(r"(?=node_id=\")", text)[1:]:
            node_id = re.match(r'node_id="([^"]+)"', block).group(1)
            block = block.split("def execute", 1)[0]
            ins, outs, optional = [], [], set()
            for m in re.finditer(r"(?:io\.)?(\w+)\.(Input|Output)\(([^)]*)", block):
                kind, direction, args = m.groups()
                t = _TYPE.get(kind) or _CUSTOM.get(kind)
                if kind == "MultiType":  # io.MultiType.Input("name", types=[io.Image, io.Video]) -> "IMAGE,VIDEO"
                    t = ",".join(_TYPE[k] for k in re.findall(r"io\.(\w+)", args.split("types=", 1)[1].split("]")[0]))
                if t is None:
                    continue
                if direction == "Input":
                    name = re.match(r'\s*"([^"]+)"', args).group(1)
                    extra = 1 if "control_after_generate=True" in block[m.start():m.start() + 400].split("Input(", 2)[1] else 0
                    ins.append((name, t, extra))
                    if "optional=True" in args:
                        optional.add(name)
                else:
                    outs.append(t)
            found[node_id] = {"inputs": ins, "outputs": outs, "optional": optional}
    return found


OURS = our_nodes()


def test_our_node_table_was_parsed():
    assert set(OURS) == {
        "LatentSyncUNetLoader", "LatentSyncWhisperLoader", "LatentSyncLoadWhisperAudio",
        "LatentSyncFaceCropAlign", "LatentSyncSampler", "LatentSyncVAEDecodeFrames", "LatentSyncPasteBackFaces",
    }
    assert [i[0] for i in OURS["LatentSyncSampler"]["inputs"]] == [
        "model", "vae", "face_crops", "audio_embeds", "seed", "steps", "guidance_scale", "deepcache", "scheduler"]
    assert [i[2] for i in OURS["LatentSyncSampler"]["inputs"]][4] == 1  # seed has control_after_generate


def _spec(node_type):
    """(widget names, extra widget values, input name -> type, outputs) of a node type or None."""
    if node_type in OURS:
        o = OURS[node_type]
        widgets = [n for n, t, _ in o["inputs"] if t in WIDGET_TYPES]
        extra = sum(e for _, _, e in o["inputs"])
        return widgets, extra, {n: t for n, t, _ in o["inputs"]}, o["outputs"]
    if node_type in CORE:
        w, extra, ins, outs = CORE[node_type]
        return w, extra, ins, [t for _, t in outs]
    if node_type in VHS:
        w, ins, outs = VHS[node_type]
        return w, 0, ins, [t for _, t in outs]
    return None


@pytest.fixture(params=UI_FILES, ids=lambda p: p.name)
def ui(request):
    return json.loads(request.param.read_text()), request.param


def test_there_are_core_and_vhs_examples():
    names = {p.stem for p in UI_FILES}
    assert {"latentsync_core", "latentsync_vhs"} <= names
    for p in UI_FILES:
        assert (WORKFLOWS / "api" / p.name).is_file(), f"API twin of {p.name} missing"


def test_node_types_exist_and_widgets_match(ui):
    wf, path = ui
    for node in wf["nodes"]:
        spec = _spec(node["type"])
        assert spec is not None, f"{path.name}: unknown node type {node['type']}"
        widgets, extra, inputs, outputs = spec
        values = node["widgets_values"]
        if isinstance(values, dict):  # VHS style
            missing = [w for w in widgets if w not in values]
            assert not missing, f"{path.name} node {node['id']} {node['type']}: widgets {missing} missing"
        else:
            assert len(values) == len(widgets) + extra, (
                f"{path.name} node {node['id']} {node['type']}: {len(values)} widget values, "
                f"expected {len(widgets)} widgets + {extra}")
        for inp in node.get("inputs", []):
            assert inp["name"] in inputs, f"{node['type']} has no input {inp['name']}"
            assert inputs[inp["name"]] == inp["type"], (node["type"], inp)
        assert [o["type"] for o in node["outputs"]] == outputs[:len(node["outputs"])], node["type"]


def test_links_are_consistent(ui):
    wf, path = ui
    nodes = {n["id"]: n for n in wf["nodes"]}
    link_ids = set()
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        link_ids.add(lid)
        out = nodes[src]["outputs"][src_slot]
        assert lid in (out["links"] or []) and out["type"] == typ, (path.name, lid)
        inp = nodes[dst]["inputs"][dst_slot]
        assert inp["link"] == lid and typ in inp["type"].split(","), (path.name, lid)  # "IMAGE,VIDEO" takes either
    for n in wf["nodes"]:
        for inp in n.get("inputs", []):
            assert inp["link"] is None or inp["link"] in link_ids
        for out in n["outputs"]:
            assert all(lid in link_ids for lid in out["links"] or [])
    assert wf["last_link_id"] >= max(link_ids) and wf["last_node_id"] >= max(nodes)
    # every required non-widget input of every node is connected
    for n in wf["nodes"]:
        spec = _spec(n["type"])
        connected = {i["name"] for i in n.get("inputs", []) if i["link"] is not None}
        for name, t in spec[2].items():
            optional = n["type"] in VHS and name in ("meta_batch", "vae", "audio") or \
                (n["type"] == "CreateVideo" and name == "audio") or name in OURS.get(n["type"], {}).get("optional", ())
            if t not in WIDGET_TYPES and not optional and not (n["type"] in VHS and name == "frame_rate"):
                assert name in connected, f"{path.name}: {n['type']}.{name} is not connected"


def test_api_twin_matches_ui(ui):
    wf, path = ui
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert set(api) == {str(i) for i in nodes}
    links = {lid: (src, slot) for lid, src, slot, *_ in wf["links"]}
    for nid, entry in api.items():
        node = nodes[int(nid)]
        assert entry["class_type"] == node["type"]
        for inp in node.get("inputs", []):
            assert entry["inputs"][inp["name"]] == [str(links[inp["link"]][0]), links[inp["link"]][1]]
        widgets = _spec(node["type"])[0]
        values = node["widgets_values"]
        linked = {i["name"] for i in node.get("inputs", []) if i["link"] is not None}
        if isinstance(values, dict):
            for w in widgets:
                if w not in linked:
                    assert entry["inputs"][w] == values[w], (nid, w)
        else:
            ordered = [v for v in values]
            if node["type"] == "LatentSyncSampler":
                ordered = values[:1] + values[2:]  # drop control_after_generate
            for w, v in zip(widgets, ordered):
                if w not in linked:
                    assert entry["inputs"][w] == v, (nid, w)


def test_video_workflow_streams_video_in_and_out():
    """LoadVideo -> (VIDEO) the stage nodes -> SaveVideo, LoadAudio for the speech; nothing decodes the
    whole clip into an IMAGE (no GetVideoComponents, no CreateVideo, no VAE Decode Frames)."""
    wf = json.loads((WORKFLOWS / "latentsync_video.json").read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    types = {n["type"] for n in wf["nodes"]}
    assert not types & {"GetVideoComponents", "CreateVideo", "LatentSyncVAEDecodeFrames"}
    assert {"LoadVideo", "LoadAudio", "SaveVideo", "LatentSyncFaceCropAlign", "LatentSyncSampler",
            "LatentSyncPasteBackFaces", "LatentSyncLoadWhisperAudio"} <= types
    into = {(nodes[dst]["type"], nodes[dst]["inputs"][slot]["name"]): (nodes[src]["type"], t)
            for _, src, _, dst, slot, t in wf["links"]}
    for target in [("LatentSyncFaceCropAlign", "images"), ("LatentSyncPasteBackFaces", "images"),
                   ("LatentSyncLoadWhisperAudio", "video")]:
        assert into[target] == ("LoadVideo", "VIDEO"), target
    assert into[("LatentSyncPasteBackFaces", "faces")] == ("LatentSyncSampler", "LATENT")
    assert into[("LatentSyncPasteBackFaces", "audio")] == ("LoadAudio", "AUDIO")
    assert into[("SaveVideo", "video")] == ("LatentSyncPasteBackFaces", "VIDEO")


def test_core_workflow_is_the_documented_chain():
    wf = json.loads((WORKFLOWS / "latentsync_core.json").read_text())
    types = [n["type"] for n in wf["nodes"]]
    for t in ["LoadVideo", "GetVideoComponents", "LatentSyncLoadWhisperAudio", "LatentSyncFaceCropAlign",
              "LatentSyncSampler", "LatentSyncVAEDecodeFrames", "LatentSyncPasteBackFaces", "CreateVideo", "SaveVideo"]:
        assert t in types
    vhs = json.loads((WORKFLOWS / "latentsync_vhs.json").read_text())
    assert {"VHS_LoadVideo", "VHS_VideoCombine"} <= {n["type"] for n in vhs["nodes"]}
    combine = next(n for n in vhs["nodes"] if n["type"] == "VHS_VideoCombine")
    assert any(i["name"] == "audio" and i["link"] for i in combine["inputs"])
