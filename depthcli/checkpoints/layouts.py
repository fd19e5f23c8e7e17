"""Checkpoint layouts and the conversions between them, in every direction, in one place.

Three layouts name the same tensors:
- official (`pretrained.*` encoder, `depth_head.*` head; Video Depth Anything: `head.*`),
- transformers `DepthAnythingForDepthEstimation` (`backbone.*`, `neck.*`, `head.*`; 4.x or 5.x names),
- internal: the depthcli modules' own keys (`encoder.vit.*` = timm, `head.*`).
DESIGN.md §2 has the tables these functions implement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = dict[str, torch.Tensor]

# transformers name prefix ↔ official name prefix, for the keys outside blocks and the neck.
HF_TOP_LEVEL: tuple[tuple[str, str], ...] = (
    ("backbone.embeddings.cls_token", "pretrained.cls_token"),
    ("backbone.embeddings.mask_token", "pretrained.mask_token"),
    ("backbone.embeddings.position_embeddings", "pretrained.pos_embed"),
    ("backbone.embeddings.patch_embeddings.projection.", "pretrained.patch_embed.proj."),
    ("backbone.layernorm.", "pretrained.norm."),
    ("head.conv1.", "depth_head.scratch.output_conv1."),
    ("head.conv2.", "depth_head.scratch.output_conv2.0."),
    ("head.conv3.", "depth_head.scratch.output_conv2.2."),
)

# The neck's keys outside the blocks, as (transformers, official) templates with the block
# index `{i}` (one digit) and the rest of the key `{rest}`; then how the index maps, and the
# renames inside the rest. One table serves both directions.
_NECK: tuple[tuple[str, str, str], ...] = (
    ("neck.reassemble_stage.layers.{i}.projection.{rest}", "depth_head.projects.{i}.{rest}", "same"),
    ("neck.reassemble_stage.layers.{i}.resize.{rest}", "depth_head.resize_layers.{i}.{rest}", "same"),
    ("neck.convs.{i}.{rest}", "depth_head.scratch.layer{i}_rn.{rest}", "plus1"),
    ("neck.fusion_stage.layers.{i}.{rest}", "depth_head.scratch.refinenet{i}.{rest}", "4-i"),
)
_INDEX = {"same": (lambda i: i, lambda i: i), "plus1": (lambda i: i + 1, lambda i: i - 1),
          "4-i": (lambda i: 4 - i, lambda i: 4 - i)}


def _template_re(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(\d)").replace(r"\{rest\}", "(.+)") + "$")


_NECK_RE = tuple((_template_re(hf), _template_re(off), hf, off, idx) for hf, off, idx in _NECK)


def _fusion_rest(rest: str, to_official: bool) -> str:
    if to_official:
        rest = rest.replace("projection.", "out_conv.")
        return re.sub(r"residual_layer(\d)\.convolution(\d)", r"resConfUnit\1.conv\2", rest)
    rest = rest.replace("out_conv.", "projection.")
    return re.sub(r"resConfUnit(\d)\.conv(\d)", r"residual_layer\1.convolution\2", rest)


def _swap_prefix(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """`text` with the first matching prefix a of (a, b) `pairs` replaced by b."""
    for a, b in pairs:
        if text.startswith(a):
            return b + text[len(a):]
    return text


def _hf_rename(key: str, to_official: bool) -> str | None:
    """A key outside the encoder blocks in the other layout (transformers ↔ official), or None."""
    for hf, off in HF_TOP_LEVEL:
        a, b = (hf, off) if to_official else (off, hf)
        if key.startswith(a):
            return b + key[len(a):]
    for hf_re, off_re, hf, off, idx in _NECK_RE:
        m = (hf_re if to_official else off_re).match(key)
        if m:
            i = _INDEX[idx][0 if to_official else 1](int(m.group(1)))
            rest = _fusion_rest(m.group(2), to_official) if idx == "4-i" else m.group(2)
            return (off if to_official else hf).format(i=i, rest=rest)
    return None


def _from_transformers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers DepthAnythingForDepthEstimation (legacy 4.x or 5.x names) → official names."""
    out: StateDict = {}
    qkv: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for key, v in sd.items():
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.(.+)$", key)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            p = f"pretrained.blocks.{i}."
            qm = re.match(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$", rest)
            if qm:
                which = qm.group(1)[0]  # q / k / v
                qkv.setdefault(i, {}).setdefault(qm.group(2), {})[which] = v
                continue
            gm = re.match(r"mlp\.(gate_proj|up_proj)\.(weight|bias)$", rest)
            if gm:  # transformers 5 SwiGLU: gate = first half of w12, up = second half
                qkv.setdefault(-1 - i, {}).setdefault(gm.group(2), {})[gm.group(1)] = v
                continue
            rest = _swap_prefix(rest, (
                ("attention.output.dense.", "attn.proj."),
                ("attention.o_proj.", "attn.proj."),
                ("layer_scale1.lambda1", "ls1.gamma"),
                ("layer_scale2.lambda1", "ls2.gamma"),
                ("mlp.weights_in.", "mlp.w12."),
                ("mlp.weights_out.", "mlp.w3."),
                ("mlp.down_proj.", "mlp.w3."),
            ))
            out[p + rest] = v
            continue
        out[_hf_rename(key, to_official=True) or key] = v  # unknown: the strict check reports it
    for i, parts in qkv.items():
        for kind, d in parts.items():
            if i >= 0:
                out[f"pretrained.blocks.{i}.attn.qkv.{kind}"] = torch.cat([d["q"], d["k"], d["v"]])
            else:
                out[f"pretrained.blocks.{-1 - i}.mlp.w12.{kind}"] = torch.cat(
                    [d["gate_proj"], d["up_proj"]]
                )
    return out


DA3_PREFIX = "model."
# Parts of a DA3 hub file that a one-image-per-scene model does not run: the DualDPT ray branch
# (computed and discarded upstream; its four LayerNorm entries are one shared module, so a file
# may hold 2 or 8 of those names), the camera encoder (only with user-given poses) and the
# giant's 3D-Gaussian head. They are accepted and left out.
DA3_UNUSED = ("model.cam_enc.", "model.gs_head.", "model.gs_adapter.")


def is_da3_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    """A Depth Anything 3 hub file (`model.backbone.pretrained.*`, `model.head.*`)."""
    return any(k.startswith("model.backbone.pretrained.") for k in sd)


def _from_da3(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """DA3 hub layout → internal keys (DESIGN.md §10.2): `encoder.vit.*` (timm), `encoder.
    camera_token`, `head.*`, `cam_dec.*`; the unused parts (DA3_UNUSED, `*_aux`) dropped."""
    out: StateDict = {}
    for key, v in sd.items():
        if key.startswith(DA3_UNUSED) or re.match(r"model\.head\.scratch\.\w+_aux\.", key):
            continue
        if key.startswith("model.backbone.pretrained."):
            rest = key[len("model.backbone.pretrained."):]
            if rest == "camera_token":
                out["encoder.camera_token"] = v
                continue
            rest = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", rest)  # vitg SwiGLU → timm names
            rest = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", rest)
            out["encoder.vit." + rest] = v
        elif key.startswith(DA3_PREFIX):
            out[key[len(DA3_PREFIX):]] = v  # head.*, cam_dec.*
        else:
            out[key] = v  # unknown: left for the strict check to report
    return out


def to_internal(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Official, DA3 hub or transformers layout → the depthcli module's own keys."""
    if is_da3_layout(sd):
        return _from_da3(sd)
    if any(k.startswith(("backbone.", "neck.")) for k in sd):
        sd = _from_transformers(sd)
    out: StateDict = {}
    for key, v in sd.items():
        if key.startswith("pretrained."):
            rest = key[len("pretrained."):]
            if rest == "mask_token":  # training-only
                continue
            rest = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", rest)  # vitg SwiGLU → timm SwiGLUPacked
            rest = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", rest)
            out["encoder.vit." + rest] = v
        elif key.startswith("depth_head."):
            out["head." + key[len("depth_head."):]] = v
        else:
            out[key] = v
    return out


def official_name(key: str, swiglu: bool = False, video: bool = False) -> str:
    """Internal module key → official checkpoint key (inverse of `to_internal`).

    Video Depth Anything keeps `head.` where the image models say `depth_head.`.
    """
    if key.startswith("encoder.vit."):
        rest = key[len("encoder.vit."):]
        if swiglu:  # vitg: timm SwiGLUPacked fc1/fc2 are the official w12/w3
            rest = re.sub(r"\.mlp\.fc1\.", ".mlp.w12.", rest)
            rest = re.sub(r"\.mlp\.fc2\.", ".mlp.w3.", rest)
        return "pretrained." + rest
    if key.startswith("head.") and not video:
        return "depth_head." + key[len("head."):]
    return key


def is_swiglu(model: torch.nn.Module) -> bool:
    return model.spec.encoder.name == "vitg"


def da3_official_name(key: str, swiglu: bool = False) -> str:
    """Internal DA3 module key → DA3 hub key (inverse of `_from_da3`)."""
    if key == "encoder.camera_token":
        return "model.backbone.pretrained.camera_token"
    if key.startswith("encoder.vit."):
        return "model.backbone." + official_name(key, swiglu)
    return DA3_PREFIX + key


def official_names(model: torch.nn.Module) -> dict[str, str]:
    """Internal → official key of every entry of `model`'s state_dict."""
    sw, video = is_swiglu(model), bool(getattr(model, "temporal", False))
    if getattr(model.spec, "family", "") == "v3":
        return {k: da3_official_name(k, sw) for k in model.state_dict()}
    return {k: official_name(k, sw, video) for k in model.state_dict()}


def official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = official_names(model)
    return {names[k]: v for k, v in model.state_dict().items()}


def to_transformers(sd: dict[str, torch.Tensor], hf_keys: set[str]) -> dict[str, torch.Tensor]:
    """Official layout → DepthAnythingForDepthEstimation in-memory names (DESIGN.md §2.3).

    Inverse of weights._from_transformers. Targets transformers 5 names (q/k/v/o_proj) or the 4.x
    names (query/key/value, output.dense), whichever `hf_keys` (the peer's own keys) uses.
    """
    v5 = any(".attention.q_proj." in k for k in hf_keys)
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        if key == "pretrained.mask_token":
            out["backbone.embeddings.mask_token"] = v
            continue
        m = re.match(r"pretrained\.blocks\.(\d+)\.(.+)$", key)
        if m:
            p, rest = f"backbone.encoder.layer.{m.group(1)}.", m.group(2)
            qm = re.match(r"attn\.qkv\.(weight|bias)$", rest)
            if qm:
                q, k, vv = v.chunk(3, dim=0)
                names = ("q_proj", "k_proj", "v_proj") if v5 else (
                    "attention.query", "attention.key", "attention.value")
                for name, t in zip(names, (q, k, vv), strict=True):
                    out[f"{p}attention.{name}.{qm.group(1)}"] = t.clone()
                continue
            wm = re.match(r"mlp\.w12\.(weight|bias)$", rest)
            if wm:
                if v5:
                    gate, up = v.chunk(2, dim=0)
                    out[f"{p}mlp.gate_proj.{wm.group(1)}"] = gate.clone()
                    out[f"{p}mlp.up_proj.{wm.group(1)}"] = up.clone()
                else:
                    out[f"{p}mlp.weights_in.{wm.group(1)}"] = v
                continue
            rest = _swap_prefix(rest, (
                ("attn.proj.", "attention.o_proj." if v5 else "attention.output.dense."),
                ("ls1.gamma", "layer_scale1.lambda1"),
                ("ls2.gamma", "layer_scale2.lambda1"),
                ("mlp.w3.", "mlp.down_proj." if v5 else "mlp.weights_out."),
            ))
            out[p + rest] = v
            continue
        out[_hf_rename(key, to_official=False) or key] = v  # unknown: the strict load reports it
    mt = "backbone.embeddings.mask_token"
    if mt in hf_keys and mt not in out:  # training-only; our module does not keep it
        out[mt] = torch.zeros_like(out["backbone.embeddings.cls_token"][0])
    return out


def official_keys(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    """The official checkpoint's (key, shape) list for a depthcli module, in module order.

    The official files also hold the training-only `pretrained.mask_token` right after
    `pos_embed`; it is listed so that a checkpoint built from this list has the official keys.
    """
    names = official_names(model)
    out: list[tuple[str, list[int]]] = []
    for k, v in model.state_dict().items():
        out.append((names[k], list(v.shape)))
        if k == "encoder.vit.pos_embed" and getattr(model.spec, "family", "") != "v3":
            out.append(("pretrained.mask_token", [1, int(v.shape[-1])]))
    return out
