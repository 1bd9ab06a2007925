"""A complete third-party encoder plugin: colour histograms of 16x16 patches.

Installed with pip, it is found through the `harness` entry-point group like the built-ins.
"""

import torch

from harness import Encoder, Option, hookimpl


class HelloHistogram(Encoder):
    """Per-patch colour histograms (a weight-free example encoder)."""

    options = {
        "bins": Option(int, 4, "histogram bins per channel",
                       check=lambda v: None if 2 <= v <= 16 else "must be between 2 and 16"),
    }
    representations = ("cls", "mean_patch", "tokens")

    def identity(self):
        # bump "version" whenever forward() changes, so cached features are not reused wrongly
        return {**super().identity(), "version": 1}

    def load(self, device="cpu"):
        self.device = device

    def forward(self, x, reps):
        # undo the core's normalisation to get back 0..1 pixels
        mean = torch.tensor(self.opts["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.opts["std"], device=x.device).view(1, 3, 1, 1)
        pix = (x * std + mean).clamp(0, 1)
        b, bins = x.shape[0], self.opts["bins"]
        idx = (pix * (bins - 1)).round().long()                            # [B,3,H,W] bin per channel
        patches = idx.unfold(2, 16, 16).unfold(3, 16, 16)                  # [B,3,h,w,16,16]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3, 256)  # [B,P,3,256]
        onehot = torch.nn.functional.one_hot(patches, bins).float().mean(3)  # [B,P,3,bins]
        tokens = onehot.flatten(2)                                          # [B,P,3*bins]
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)       # histogram of the whole image first
        out = {"cls": tokens[:, 0], "mean_patch": tokens[:, 1:].mean(1), "tokens": tokens}
        return {k: out[k] for k in reps}


@hookimpl
def register_encoders(register):
    register("hello_histogram", HelloHistogram)
