"""MAE ViT-B/16 encoder (facebookresearch/mae).

File: ``mae_pretrain_vit_base.pth`` = ``{'model': encoder state dict}`` (cls_token, fixed sin-cos
``pos_embed`` [1,197,768] with a zero CLS row, patch_embed, blocks, final ``norm``). Full training
checkpoints (``decoder_*``, ``mask_token``, ``optimizer``, ``args``...) are accepted too: only the encoder
is read, the rest is reported as ignored. The final ``norm`` is applied (``global_pool`` fine-tuning's
``fc_norm`` does not exist in the pretrain file).

Deliberate deviation from the paper's code: the paper's ``forward_encoder(x, 0.)`` still shuffles all
patch tokens (``random_masking`` with ratio 0) *before* adding the position embedding, so each patch gets
a random position, different on every call. We add the position embedding to the patch it belongs to, as
the official MAE does; see docs/encoders.md.
"""
from __future__ import annotations

from harness.api import hookimpl

from .encoder_bases import CheckpointEncoder, Split

_NOT_ENCODER = ("decoder_", "mask_token")
_HEAD = "it has a classifier head/fc_norm: a fine-tuned or supervised model"


class MAE(CheckpointEncoder):
    """MAE pretrained ViT encoder (no decoder), final norm, no position shuffle."""

    method = "MAE"
    pretraining = "masked image modelling"
    expected = ("the MAE file mae_pretrain_vit_base.pth (a dict with 'model' holding the encoder: cls_token, "
                "pos_embed, patch_embed, blocks, norm; no classifier head)")

    def split(self, obj) -> Split:
        return self.split_off(obj, self.pretrain_state_dict(obj, _HEAD), lambda k: k.startswith(_NOT_ENCODER),
                              key="model")


@hookimpl
def register_encoders(register):
    register("mae", MAE)
