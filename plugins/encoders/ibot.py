"""iBOT ViT-B/16 (bytedance/ibot), "vitb_16_rand_mask".

Files:
  ``checkpoint.pth``  full training checkpoint: ``teacher`` keys ``backbone.*`` + ``head.*`` (iBOTHead),
      ``student`` keys ``module.backbone.*`` + ``module.head.*``. Teacher by default (the paper's choice),
      ``network: student`` for the student (its ``masked_embed`` is ignored).
  ``checkpoint_teacher.pth``  backbone only: ``{'state_dict': teacher backbone}`` without prefix (the file
      the paper's link points to; enough for everything but ``projected``).
``projected``: the CLS branch of iBOTHead, as the paper code's ``head(x)[0]``: MLP 768->2048->2048->256
(GELU), L2-normalise, weight-normalised ``last_layer`` 256->8192 on the CLS token after the final norm. The
patch branch ``last_layer2`` (shared with ``last_layer`` or separate) is ignored and reported.
"""
from __future__ import annotations

from harness.api import hookimpl

from .dino_family import DINOLike


class IBOT(DINOLike):
    """iBOT ViT (teacher by default) with the iBOTHead CLS branch as 'projected' (full checkpoint only)."""

    method = "iBOT"
    pretraining = "contrastive + masked image modelling"
    backbone_only_key = "state_dict"
    backbone_only_name = "checkpoint_teacher.pth"
    expected = ("an iBOT file: the full checkpoint.pth (a dict with 'teacher'/'student' holding backbone.*/"
                "head.* with head.last_layer2) or checkpoint_teacher.pth (a dict with 'state_dict' holding a "
                "plain ViT state dict)")

    def check_full(self, obj: dict) -> None:
        t = obj.get("teacher")
        if isinstance(t, dict) and not any(k.startswith("head.last_layer2") for k in t):
            raise self.wrong_layout(obj, "its head has no iBOT patch branch 'head.last_layer2'")

    def head_keys_used(self, head: dict):
        keep = {k: v for k, v in head.items() if k.startswith(("mlp.", "last_layer."))}
        return keep, sorted(k for k in head if k not in keep)

    def backbone_extras(self, backbone: dict):
        if "masked_embed" in backbone:  # student only: the MIM mask embedding, unused on full images
            backbone = {k: v for k, v in backbone.items() if k != "masked_embed"}
            return backbone, {"backbone.masked_embed": 1}
        return backbone, {}


@hookimpl
def register_encoders(register):
    register("ibot", IBOT)
