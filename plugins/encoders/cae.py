"""CAE ViT-B/16 encoder (Atten4Vis/CAE).

File: ``cae_base_1600ep.pth`` = ``{'model': ...}``; the encoder is ``encoder.*`` (read with the prefix
stripped, as the paper code does); ``alignment_encoder.*``, ``regresser.*``, ``decoder.*``,
``mask_token``, ``rd_pos_embed`` and other top-level entries are ignored and reported.
Architecture: BEiT-style attention (qkv without bias plus ``q_bias``/``v_bias``), layer scale
(``gamma_1``/``gamma_2``), fixed 2-D sin-cos absolute position embedding with a zero CLS slot (stored as
``encoder.pos_embed``), no relative position bias, final ``norm``.

LayerNorm eps: official CAE builds the model with eps 1e-6 (default here); the paper's
``VisionTransformerCAE()`` used PyTorch's default 1e-5. Set ``ln_eps: 1.0e-5`` to reproduce the paper code.
"""
from __future__ import annotations

from harness.api import Option, hookimpl

from .checkpoint_reading import count_by_prefix, strip_prefix
from .encoder_bases import CheckpointEncoder, Split


class CAE(CheckpointEncoder):
    """CAE pretrained encoder (encoder.* of the official checkpoint)."""

    method = "CAE"
    pretraining = "masked image modelling"
    family = "beit"
    expected = ("the CAE file cae_base_1600ep.pth (a dict with 'model' holding 'encoder.*' keys with "
                "q_bias/v_bias, gamma_1/gamma_2 and a sin-cos pos_embed)")
    options = {
        "ln_eps": Option(float, 1e-6, "LayerNorm eps: 1e-6 as official CAE; 1e-5 reproduces the paper code",
                         check=lambda v: None if v > 0 else "must be > 0"),
    }

    @property
    def ln_eps(self) -> float:  # type: ignore[override]
        return float(self.opts.get("ln_eps", 1e-6))

    def split(self, obj) -> Split:
        sd = self.require_dict(obj, "model")
        backbone = strip_prefix(sd, "encoder.")
        if not backbone:
            raise self.wrong_layout(obj, "no 'encoder.*' keys in checkpoint['model']")
        if "blocks.0.attn.q_bias" not in backbone and "blocks.0.attn.qkv.weight" in backbone:
            raise self.wrong_layout(obj, "no q_bias/v_bias")
        ignored = count_by_prefix([k for k in sd if not k.startswith("encoder.")])
        ignored.update({f"checkpoint['{k}']": 1 for k in obj if k != "model"})
        return Split(backbone=backbone, ignored=ignored, source="checkpoint['model'], prefix 'encoder.'")


@hookimpl
def register_encoders(register):
    register("cae", CAE)
