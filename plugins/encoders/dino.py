"""DINO ViT-B/16 (facebookresearch/dino).

Files:
  ``dino_vitbase16_pretrain_full_checkpoint.pth``  full training checkpoint ``{'student', 'teacher',
      'optimizer', 'epoch', 'args', 'dino_loss', ...}``; ``teacher`` keys ``backbone.*`` + ``head.*``,
      ``student`` keys ``module.backbone.*`` + ``module.head.*``. The **teacher** is read by default (the
      paper: "for DINO and iBOT, we choose the checkpoint of the teacher models"); ``network: student``
      reads the student (what the paper code's plain ``--model_scale base`` did).
  ``dino_vitbase16_pretrain.pth``  backbone only: the teacher backbone as a raw state dict (no prefix).
      No projection head, so no ``projected``.
``projected``: DINOHead on the CLS token after the final norm: Linear(768,2048)-GELU-Linear(2048,2048)-GELU-
Linear(2048,256), L2-normalise, weight-normalised Linear(256,65536, no bias) with W = g * v / ||v||
(official ``weight_g``/``weight_v``; the paper code's plain-Linear head cannot load them strictly).
"""
from __future__ import annotations

from harness.api import hookimpl

from .checkpoint_reading import is_state_dict
from .dino_family import DINOLike


class DINO(DINOLike):
    """DINO ViT (teacher by default) with the DINOHead as 'projected' (full checkpoint only)."""

    method = "DINO"
    pretraining = "contrastive"
    backbone_only_name = "dino_vitbase16_pretrain.pth"
    expected = ("a DINO file: dino_vitbase16_pretrain_full_checkpoint.pth (a dict with 'teacher'/'student' "
                "holding backbone.*/head.*) or the backbone-only dino_vitbase16_pretrain.pth (a raw ViT state dict)")

    def split(self, obj):
        if is_state_dict(obj) and "mask_token" in obj:  # a raw ViT state dict, but DINOv2's (use dinov2)
            raise self.wrong_layout(obj, "it has DINOv2 keys 'mask_token' and layer scale 'ls1.gamma'")
        return super().split(obj)

    def check_full(self, obj: dict) -> None:
        if isinstance(obj.get("teacher"), dict) and any(k.startswith("head.last_layer2") for k in obj["teacher"]):
            raise self.wrong_layout(obj, "its head has an iBOT patch branch 'head.last_layer2'")


@hookimpl
def register_encoders(register):
    register("dino", DINO)
