"""BEiT ViT-B/16 (microsoft/unilm beit), self-supervised pretrain checkpoints.

Files (all ``{'model': state_dict}``):
  ``beit_base_patch16_224_pt22k.pth``  the official IN-22k self-supervised checkpoint;
  ``beit_base_standard_epoch800_checkpoint-799.pth``  the paper authors' IN-1k 800-epoch BEiT (their
      Google Drive), same layout;
  ``beit_base_patch16_224_pt1k_800ep.pth``  (BEiT-v2 README's IN-1k v1 run: absolute position embedding,
      no layer scale) also loads: the architecture is read off the tensors.
Architecture of the paper's files: one relative position bias table shared by all blocks
(``rel_pos_bias.relative_position_bias_table``), no absolute position embedding, layer scale
``gamma_1``/``gamma_2``, qkv without bias plus ``q_bias``/``v_bias``, LayerNorm eps 1e-6, final ``norm``.
Ignored (reported): ``mask_token``, ``lm_head.*`` (the masked-image-modelling head), ``cls_pt_layers.*``
(BEiT-v2), and ``relative_position_index`` buffers after checking they equal the standard index.
For inputs other than 224 the shared table is resampled as in the official BEiT/segmentation code.
"""
from __future__ import annotations

import torch

from harness.api import hookimpl

from .encoder_bases import CheckpointEncoder, Split
from .vit_architecture import rel_pos_index

_IGNORED = ("mask_token", "lm_head.", "cls_pt_layers.")


class BEiT(CheckpointEncoder):
    """BEiT pretrained encoder: shared relative position bias, layer scale, q/v bias."""

    method = "BEiT"
    pretraining = "masked image modelling"
    family = "beit"
    expected = ("a BEiT pretrain file such as beit_base_patch16_224_pt22k.pth (a dict with 'model' holding "
                "blocks.* with q_bias/v_bias and 'rel_pos_bias.relative_position_bias_table')")

    def split(self, obj) -> Split:
        sd = self.pretrain_state_dict(obj, "it has a classifier head: a fine-tuned model, not a pretrain checkpoint")
        if "blocks.0.attn.qkv.weight" in sd and "blocks.0.attn.q_bias" not in sd:
            raise self.wrong_layout(obj, "attention has no q_bias/v_bias")
        index_keys = [k for k in sd if k.endswith("relative_position_index")]
        table = sd.get("rel_pos_bias.relative_position_bias_table")
        for k in index_keys:
            if k != "rel_pos_bias.relative_position_index" or table is None:
                continue
            side = int(round((table.shape[0] - 3) ** 0.5))
            g = (side + 1) // 2
            if not torch.equal(sd[k].long(), rel_pos_index(g, g)):
                raise self.wrong_layout(obj, f"'{k}' differs from BEiT's relative position index")
        return self.split_off(obj, sd, lambda k: k.startswith(_IGNORED) or k in index_keys, key="model")


@hookimpl
def register_encoders(register):
    register("beit", BEiT)
