"""DeiT-B / Google ViT-B: the supervised baseline.

Files:
  variant "deit" (default): ``deit_base_patch16_224-b5f2ef4d.pth`` = ``{'model': state_dict}`` with timm
      ViT keys (facebookresearch/deit). The paper's DeiT link.
  variant "google_vit": ``jx_vit_base_p16_224-80ecf9dd.pth``, the Google ViT-B/16 IN-21k -> IN-1k weights
      that the paper's retrieval/classification code actually got from timm <= 0.4.9 for its 'vit' option
      (a raw timm state dict, no wrapper; ``vit_base_patch16_224.orig_in21k_ft_in1k`` in timm 1.x).
Both carry a 1000-class classifier ``head.*``: it is required (that is what makes the file a supervised
checkpoint) and ignored. Plain ViT with q/k/v bias, LayerNorm eps 1e-6, learned absolute position
embedding. ImageNet mean/std are used for both variants as in the paper code (timm's Google-ViT default
would be 0.5/0.5; override ``mean``/``std`` in the spec to change that).
"""
from __future__ import annotations

from harness.api import Option, hookimpl

from .checkpoint_reading import count_by_prefix, is_state_dict
from .encoder_bases import CheckpointEncoder, Split


class DeiT(CheckpointEncoder):
    """Supervised ViT-B/16: DeiT-B (default) or Google ViT-B/16 (variant google_vit)."""

    method = "DeiT/supervised ViT"
    pretraining = "supervised"
    options = {
        "variant": Option(str, "deit", "deit: deit_base_patch16_224-b5f2ef4d.pth ({'model': ...}); google_vit: "
                                       "jx_vit_base_p16_224-80ecf9dd.pth (raw state dict)",
                          choices=["deit", "google_vit"]),
    }

    @property
    def expected(self) -> str:
        if self.opts.get("variant") == "google_vit":
            return ("the Google ViT file jx_vit_base_p16_224-80ecf9dd.pth (a raw timm ViT state dict with a "
                    "classifier 'head.weight')")
        return ("the DeiT file deit_base_patch16_224-b5f2ef4d.pth (a dict with 'model' holding timm ViT keys "
                "and a classifier 'head.weight')")

    def split(self, obj) -> Split:
        if self.opts.get("variant") == "google_vit":
            if not is_state_dict(obj):
                hint = " (a {'model': ...} file: use variant: deit)" if isinstance(obj, dict) and "model" in obj else ""
                raise self.wrong_layout(obj, "not a raw state dict" + hint)
            sd, source, other = obj, "state dict (raw)", []
        else:
            if is_state_dict(obj) and "head.weight" in obj:
                raise self.wrong_layout(obj, "a raw state dict: for jx_vit_base_p16_224 use variant: google_vit")
            sd = self.require_dict(obj, "model")
            source, other = "checkpoint['model']", [k for k in obj if k != "model"]
        if "head.weight" not in sd:
            raise self.wrong_layout(obj, "no classifier 'head.weight', so not a supervised checkpoint")
        if "dist_token" in sd:
            raise self.wrong_layout(obj, "a distilled DeiT (dist_token); use the non-distilled file or the timm plugin")
        head = [k for k in sd if k.startswith("head.")]
        backbone = {k: v for k, v in sd.items() if not k.startswith("head.")}
        ignored = count_by_prefix(head)
        ignored.update({f"checkpoint['{k}']": 1 for k in other})
        return Split(backbone=backbone, ignored=ignored, source=source)


@hookimpl
def register_encoders(register):
    register("deit", DeiT)
