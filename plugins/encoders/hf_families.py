"""What the ``hf`` encoder needs to know about each supported ``transformers`` vision family (v5.23.0).

One ``Family`` per architecture: which ``transformers`` class runs it, the tokens in front of the patches
(CLS, then register or distillation tokens, which are dropped), which module normalises the final tokens when
``last_hidden_state`` is not already normalised, how inputs of other sizes reach the model, and which heads
give ``projected`` / ``pooled``. The facts are those of ``transformers``' own modelling code (docs/encoders.md,
"Hugging Face encoders"); the model code itself is always ``transformers``'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _registers(cfg) -> int:
    return int(getattr(cfg, "num_register_tokens", 0) or 0)


@dataclass(frozen=True)
class Family:
    name: str  # display name
    model_types: tuple[str, ...]  # config.json ``model_type`` values (a full CLIP/SigLIP/AIMv2 config: its vision tower)
    model_class: str  # the transformers class that runs the vision tower
    cls: bool  # a CLS token leads the sequence
    #: how inputs of another size than ``image_size`` are handled: "flag" (``interpolate_pos_encoding=True``),
    #: "always" (the model resamples by itself), "rope" (any size), "naflex" (packed patches, table resized per
    #: image), "native" (AIMv2: sin-cos for any size when ``is_native``, else only ``image_size``)
    sizes: str
    #: mean/std of the image processor class transformers maps the type to, as AutoImageProcessor would fill them
    #: (a snapshot's preprocessor_config.json wins; published checkpoints such as DINOv2's state ImageNet's)
    mean_std: tuple = IMAGENET
    size: int = 224
    pretraining: str | None = None
    extra_tokens: Callable = lambda cfg: 0  # tokens between CLS and the patches (dropped)
    final_norm: str | None = None  # module applied to every token when last_hidden_state is not normalised
    projection: str | None = None  # "clip" (visual_projection of the CLS) or "head" (attention-pool head)
    pooler: str | None = None  # module giving ``pooled`` from the final tokens
    #: weight-name parts that the optional ``projection``/``pooler`` modules' weights contain
    head_keys: dict = field(default_factory=dict)
    load_kwargs: dict = field(default_factory=dict)  # config overrides at load (ViT-MAE: no masking)
    uses_head: Callable = lambda cfg: True  # the config builds the projection/pooler module


FAMILIES = (
    Family("ViT", ("vit",), "ViTModel", True, "flag", HALF, pretraining="supervised", pooler="pooler",
           head_keys={"pooled": "pooler.dense."}),
    Family("DeiT", ("deit",), "DeiTModel", True, "flag", HALF, pretraining="supervised",
           extra_tokens=lambda cfg: 1, pooler="pooler", head_keys={"pooled": "pooler.dense."}),
    Family("BEiT", ("beit",), "BeitModel", True, "flag", HALF, pretraining="masked image modelling",
           pooler="pooler", head_keys={"pooled": "pooler."}, uses_head=lambda cfg: bool(cfg.use_mean_pooling)),
    Family("Data2Vec-vision", ("data2vec-vision",), "Data2VecVisionModel", True, "flag", HALF,
           pretraining="masked image modelling", pooler="pooler", head_keys={"pooled": "pooler."},
           uses_head=lambda cfg: bool(cfg.use_mean_pooling)),
    Family("ViT-MAE", ("vit_mae",), "ViTMAEModel", True, "flag", HALF, pretraining="masked image modelling",
           load_kwargs={"mask_ratio": 0.0}),
    Family("DINOv2", ("dinov2",), "Dinov2Model", True, "always", OPENAI_CLIP,
           pretraining="contrastive + masked image modelling"),
    Family("DINOv2 with registers", ("dinov2_with_registers",), "Dinov2WithRegistersModel", True, "always",
           OPENAI_CLIP, pretraining="contrastive + masked image modelling", extra_tokens=_registers),
    Family("DINOv3 ViT", ("dinov3_vit",), "DINOv3ViTModel", True, "rope", IMAGENET,
           pretraining="contrastive + masked image modelling", extra_tokens=_registers),
    Family("CLIP vision", ("clip", "clip_vision_model"), "CLIPVisionModelWithProjection", True, "flag",
           OPENAI_CLIP, pretraining="language-image", final_norm="post_layernorm", projection="clip",
           head_keys={"projected": "visual_projection."}),
    Family("SigLIP vision", ("siglip", "siglip_vision_model"), "SiglipVisionModel", False, "flag", HALF,
           pretraining="language-image", projection="head", head_keys={"projected": "head."},
           uses_head=lambda cfg: bool(cfg.vision_use_head)),
    Family("SigLIP 2 vision (NaFlex)", ("siglip2", "siglip2_vision_model"), "Siglip2VisionModel", False, "naflex",
           HALF, size=256, pretraining="language-image", projection="head", head_keys={"projected": "head."},
           uses_head=lambda cfg: bool(cfg.vision_use_head)),
    Family("AIMv2 vision", ("aimv2", "aimv2_vision_model"), "Aimv2VisionModel", False, "native", OPENAI_CLIP,
           pooler="head", head_keys={"pooled": "head."}, uses_head=lambda cfg: bool(cfg.use_head)),
    Family("I-JEPA", ("ijepa",), "IJepaModel", False, "flag", HALF, pretraining="masked image modelling"),
)

BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}
SUPPORTED = tuple(BY_TYPE)
