"""gallery: query patches and their top-K retrieved patches, per encoder and side by side (paper Fig. 2/4/6).

For each query item the unit renders one row: the query's source image with its box drawn (from
``Samples.source(i)``; the crop itself when the dataset has no source) and the K most similar other
items by cosine similarity of the chosen representation, the query itself excluded (as the official
visualisation drops ``searched_patch_names[0]``). ``finalize`` puts the encoders side by side behind
one query column, like the paper's figures.

Also recorded, as the official ``pr_patch_retrieval_imagenet_vis.py`` prints them: the mean cosine
similarity of the first 1, 5 and 10 retrieved items (``sim@1/5/10``, averaged over queries; the
official slices ``[1:5]``/``[1:10]`` hold 4 and 9 items, ours 5 and 10), and the fraction of the K
shown items that share the query's label (``same_label@K``, percent).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.api import HarnessError, Option, Task, hookimpl
from harness.api import FeatureRequest

from .retrieval_metrics import cosine_topk

PAD = 4  # pixels between tiles and around the grid
GAP = 3 * PAD  # extra space between the query column and the retrieved items
BORDER = 3  # width of the same-label / other-label frame
BOX = (230, 30, 30)  # query box colour (red, as the official figure)
LEGEND = ("left: the query item, red box = its place on the source image; frames: green = same label as the "
          "query, red = another label")
LEGEND_UNMARKED = "left: the query item, red box = its place on the source image"


def _caption(im: Image.Image, lines: list[str]) -> Image.Image:
    """``im`` under a white band holding ``lines`` of text (what the figure shows and what colours mean)."""
    import textwrap

    from PIL import ImageDraw

    lines = [w for text in lines for w in textwrap.wrap(text, max(20, (im.width - 2 * PAD) // 6))]  # ~6 px a char
    line_h = 14
    band = Image.new("RGB", (im.width, PAD + line_h * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for k, text in enumerate(lines):
        draw.text((PAD, PAD // 2 + k * line_h), text, fill=(0, 0, 0))
    out = Image.new("RGB", (im.width, band.height + im.height), (255, 255, 255))
    out.paste(band, (0, 0))
    out.paste(im, (0, band.height))
    return out
SAME, OTHER = (40, 170, 60), (215, 50, 50)
SIM_KS = (1, 5, 10)


def _check_queries(value) -> str | None:
    if value is None:
        return None
    if not value or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        return "expected a non-empty list of sample indices (integers) or sample keys (strings)"
    return None


def grid_size(rows: int, top_k: int, tile: int) -> tuple[int, int]:
    """(width, height) in pixels of a unit's grid with ``rows`` queries and ``top_k`` retrieved each."""
    return PAD + tile + GAP + top_k * (tile + PAD), PAD + rows * (tile + PAD)


def _fit(img: Image.Image, tile: int, fill=(255, 255, 255)) -> tuple[Image.Image, float, int, int]:
    """Letterbox ``img`` into a tile; returns (tile image, scale, x offset, y offset)."""
    w, h = img.size
    scale = tile / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (tile, tile), fill)
    ox, oy = (tile - nw) // 2, (tile - nh) // 2
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.BICUBIC), (ox, oy))
    return canvas, scale, ox, oy


def _query_tile(samples, i: int, tile: int) -> Image.Image:
    src = samples.source(i)
    if src is None:
        return _fit(samples.image(i), tile)[0]
    path, (x0, y0, x1, y1) = src
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise HarnessError(f"gallery: cannot read source image {path}: {exc}") from None
    t, scale, ox, oy = _fit(img, tile)
    d = ImageDraw.Draw(t)
    d.rectangle([ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale], outline=BOX,
                width=max(2, tile // 48))
    return t


def _item_tile(samples, j: int, tile: int, frame) -> Image.Image:
    t = samples.image(j).convert("RGB").resize((tile, tile), Image.BICUBIC)
    if frame is not None:
        ImageDraw.Draw(t).rectangle([0, 0, tile - 1, tile - 1], outline=frame, width=BORDER)
    return t


class Gallery(Task):
    """Patch-retrieval galleries: each query with its top-K neighbours, per encoder and side by side."""

    headline = ("sim@1", "sim@5", "sim@10")
    options = {
        "representation": Option(str, "mean_patch", "vector used for similarity (the paper's figures use the "
                                 "encoded mean-patch embedding; the official script also draws cls)",
                                 choices=["cls", "mean_patch", "projected", "pooled"]),
        "split": Option(str, None, "dataset split (default: the dataset's first split)", nullable=True),
        "queries": Option(list, None, "query items: sample indices (integers) or sample keys (strings); "
                          "default: the first `per_class` items of each class", nullable=True,
                          check=_check_queries),
        "per_class": Option(int, 1, "default queries per class", check=lambda v: None if v > 0 else "must be > 0"),
        "max_queries": Option(int, 8, "at most this many default queries (classes in order)",
                              check=lambda v: None if v > 0 else "must be > 0"),
        "top_k": Option(int, 8, "retrieved items shown per query", check=lambda v: None if v > 0 else "must be > 0"),
        "tile": Option(int, 96, "tile side in pixels",
                       check=lambda v: None if 16 <= v <= 512 else "must be in [16, 512]"),
        "mark_labels": Option(bool, True, "frame retrieved items green (query's label) or red (another label)"),
        "transform": Option(str, "resize:224", "image transform before the encoder"),
    }

    def _split(self, dataset) -> str:
        return self.opts.get("split") or dataset.splits[0]

    def requests(self, encoder, dataset) -> list[FeatureRequest]:
        return [FeatureRequest(self._split(dataset), (self.opts["representation"],), self.opts["transform"])]

    def check(self, encoder, dataset) -> None:
        rep = self.opts["representation"]
        if not encoder.supports(rep):
            raise ValueError(f"encoder '{encoder.name}' has no '{rep}' representation (has: "
                             f"{', '.join(encoder.representations)}); set the gallery task's representation")
        split = self._split(dataset)
        if split not in dataset.splits:
            raise ValueError(f"dataset '{dataset.name}' has no split '{split}' (has: {', '.join(dataset.splits)})")

    def _queries(self, samples) -> list[int]:
        n = len(samples)
        given = self.opts.get("queries")
        if given:
            index = None
            out = []
            for q in given:
                if isinstance(q, int):
                    if not 0 <= q < n:
                        raise HarnessError(f"gallery: option 'queries': index {q} out of range 0..{n - 1}")
                    out.append(q)
                else:
                    if index is None:
                        index = {k: i for i, k in enumerate(samples.keys)}
                    if q not in index:
                        raise HarnessError(f"gallery: option 'queries': no sample with key {q!r}")
                    out.append(index[q])
            return out
        labels = np.asarray(samples.labels)
        out = []
        for c in range(len(samples.classes)):
            out.extend(np.flatnonzero(labels == c)[: self.opts["per_class"]].tolist())
            if len(out) >= self.opts["max_queries"]:
                break
        return out[: self.opts["max_queries"]]

    def run(self, ctx) -> dict:
        split, rep = self._split(ctx.dataset), self.opts["representation"]
        samples = ctx.samples(split)
        if len(samples) < 2:
            raise HarnessError(f"gallery: dataset '{ctx.dataset.name}' split '{split}' has {len(samples)} item(s); "
                               "need at least 2")
        queries = self._queries(samples)
        if not queries:
            raise HarnessError(f"gallery: dataset '{ctx.dataset.name}' split '{split}' gave no query items")
        feats = ctx.features(split, [rep], self.opts["transform"])[rep]
        top_k, tile = self.opts["top_k"], self.opts["tile"]
        k_needed = max(top_k, max(SIM_KS))
        idx, sims = cosine_topk(feats, queries, k_needed, exclude_self=True, device=ctx.device)
        shown = idx[:, :top_k]
        labels = np.asarray(samples.labels)

        # similarity statistics (mean over queries of the mean over the first k retrieved)
        sim_stats = {}
        for k in SIM_KS:
            kk = min(k, sims.shape[1])
            sim_stats[f"sim@{k}"] = float(sims[:, :kk].mean()) if kk else math.nan
        same = labels[shown] == labels[np.asarray(queries)][:, None]
        metrics = {**{k: round(v, 6) for k, v in sim_stats.items()},
                   f"same_label@{shown.shape[1]}": round(100.0 * float(same.mean()), 4) if same.size else math.nan}

        # rendering: one strip of query tiles, one of retrieved tiles, and both together
        rows = len(queries)
        w, h = grid_size(rows, shown.shape[1], tile)
        full = Image.new("RGB", (w, h), (255, 255, 255))
        qstrip = Image.new("RGB", (PAD + tile + PAD, h), (255, 255, 255))
        rstrip = Image.new("RGB", (w - (PAD + tile + GAP) + PAD, h), (255, 255, 255))
        mark = self.opts["mark_labels"]
        for r, q in enumerate(ctx.progress(queries, desc=f"gallery {ctx.encoder.name}", total=rows)):
            y = PAD + r * (tile + PAD)
            qt = _query_tile(samples, q, tile)
            full.paste(qt, (PAD, y))
            qstrip.paste(qt, (PAD, y))
            for c, j in enumerate(shown[r]):
                frame = (SAME if labels[j] == labels[q] else OTHER) if mark else None
                it = _item_tile(samples, int(j), tile, frame)
                full.paste(it, (PAD + tile + GAP + c * (tile + PAD), y))
                rstrip.paste(it, (PAD + c * (tile + PAD), y))
        legend = LEGEND if mark else LEGEND_UNMARKED
        full = _caption(full, [f"{ctx.encoder.name} - {rep}, {split}, top {shown.shape[1]} by cosine similarity "
                               f"(query excluded)", legend])
        paths = {}
        for name, im in (("gallery", full), ("queries", qstrip), ("retrieved", rstrip)):
            p = Path(ctx.out_dir) / f"{name}.png"
            im.save(p)
            paths[name] = str(p)

        details = {
            "encoder": ctx.encoder.name,
            "representation": rep,
            "split": split,
            "queries": [{"index": int(q), "key": samples.keys[q], "label": samples.classes[labels[q]],
                         "retrieved": [{"index": int(j), "key": samples.keys[j],
                                        "label": samples.classes[labels[j]], "similarity": round(float(s), 6)}
                                       for j, s in zip(idx[r, :top_k], sims[r, :top_k])],
                         "sim@1/5/10": [round(float(sims[r, :min(k, sims.shape[1])].mean()), 6) for k in SIM_KS]}
                        for r, q in enumerate(queries)],
            "top_k": int(shown.shape[1]),
            "tile": tile,
            "images": paths,
            "similarity_note": "mean cosine similarity of the first 1/5/10 retrieved items, query excluded",
        }
        return {"metrics": metrics, "details": details, "artifacts": list(paths.values())}

    # -- cross-encoder figure -------------------------------------------------------------------
    @staticmethod
    def _find(result: dict, name: str, out_dir: Path) -> Path | None:
        """A unit's PNG: the absolute path in its details, else its artifact path under the run folder."""
        p = Path(((result.get("details") or {}).get("images") or {}).get(name, ""))
        if p.name and p.is_file():
            return p
        run_dir = Path(out_dir).parent.parent  # <run>/artifacts/<task>__<dataset>
        for a in result.get("artifacts") or []:
            cand = Path(a) if Path(a).is_absolute() else run_dir / a
            if cand.name == f"{name}.png" and cand.is_file():
                return cand
        return None

    def finalize(self, results: list[dict], out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = []
        for r in results:
            d = r.get("details") or {}
            q, ret = self._find(r, "queries", out_dir), self._find(r, "retrieved", out_dir)
            if q is None or ret is None:
                continue
            keys = [x["key"] for x in d.get("queries", [])]
            panels.append((r.get("encoder") or d.get("encoder") or "?", keys, q, ret))
        if not panels:
            return []
        same_queries = all(p[1] == panels[0][1] for p in panels)
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        q_img = np.asarray(Image.open(panels[0][2]).convert("RGB"))
        r_imgs = [np.asarray(Image.open(p[3] if same_queries else Path(p[3]).with_name("gallery.png")).convert("RGB"))
                  for p in panels]
        qw, pw = q_img.shape[1], max(im.shape[1] for im in r_imgs)
        ph = max(im.shape[0] for im in r_imgs)
        lead = [qw] if same_queries else []
        widths = (lead + [pw] * ncols)
        dpi, title_px = 100, 24
        fig_w = (sum(widths) + PAD * len(widths)) / dpi
        fig_h = nrows * (ph + title_px) / dpi
        fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
        gs = fig.add_gridspec(nrows, len(widths), width_ratios=widths, left=0, right=1, bottom=0,
                              top=1 - title_px / (nrows * (ph + title_px)), wspace=0.01,
                              hspace=title_px / ph)
        for row in range(nrows):
            if same_queries:
                ax = fig.add_subplot(gs[row, 0])
                ax.imshow(q_img, interpolation="nearest")
                ax.set_title("query", fontsize=10)
                ax.axis("off")
            for col in range(ncols):
                i = row * ncols + col
                if i >= len(panels):
                    break
                ax = fig.add_subplot(gs[row, len(lead) + col])
                ax.imshow(r_imgs[i], interpolation="nearest")
                ax.set_title(panels[i][0], fontsize=10)
                ax.axis("off")
        fig.text(0.5, 0.0, LEGEND, ha="center", va="bottom", fontsize=8)
        out = Path(out_dir) / "gallery.png"
        fig.savefig(out, dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.15)
        plt.close(fig)
        return [str(out)]


@hookimpl
def register_tasks(register):
    register("gallery", Gallery)
