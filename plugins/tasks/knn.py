"""Exact cosine nearest neighbours by blocked matrix products (the matching of ``correspondence`` and the
memory-bank search of ``in_context_seg``), and the optional faiss backend.

Never a full query x bank matrix: queries are taken ``query_block`` rows at a time and the bank
``bank_block`` rows at a time; each block keeps its own top-k, merged into a running top-k. Inputs are
L2-normalised here (a row of zeros stays zero: similarity 0 to everything). A top-1 tie keeps the lower bank
index, as ``torch.argmax`` / ``argmin`` do, so top-1 equals ``cdist(...).argmin`` wherever their values tie
exactly; k > 1 neighbours come ordered by similarity, then index (which of several candidates tied for the
last place gets in is ``torch.topk``'s choice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.api import HarnessError


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32)."""
    return F.normalize(x.float(), dim=-1)


def _merge(best_s, best_i, s, i, k: int):
    """The top-k of two candidate sets per row, earlier (lower-index) candidates first among equals."""
    if best_s is None:
        return s, i
    cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
    # stable descending order keeps the earlier entry of a tie (running top-k first, then the new block)
    order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, :k]
    return cat_s.gather(1, order), cat_i.gather(1, order)


def _block_topk(sims: torch.Tensor, k: int):
    if k == 1:  # argmax returns the first maximum: the lowest index of a tie
        s, i = sims.max(dim=1, keepdim=True)
        return s, i
    s, i = sims.topk(k, dim=1)
    by_index = torch.sort(i, dim=1, stable=True).indices  # equal values in index order (topk leaves it open)
    s, i = s.gather(1, by_index), i.gather(1, by_index)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    return s.gather(1, order), i.gather(1, order)


@torch.no_grad()
def topk_cosine(query: torch.Tensor, bank: torch.Tensor, k: int, *, normalised: bool = False,
                query_block: int = 4096, bank_block: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities [Q, k], bank indices [Q, k]) of the k most cosine-similar bank rows of every query row,
    best first. ``normalised``: the inputs are already unit rows (skips normalising them again)."""
    if k < 1 or k > bank.shape[0]:
        raise HarnessError(f"k-NN: k = {k} but the bank holds {bank.shape[0]} rows")
    q_all = query if normalised else normalise(query)
    b_all = bank if normalised else normalise(bank)
    out_s, out_i = [], []
    for a in range(0, q_all.shape[0], query_block):
        q = q_all[a:a + query_block]
        best_s = best_i = None
        for b in range(0, b_all.shape[0], bank_block):
            sims = q @ b_all[b:b + bank_block].T
            s, i = _block_topk(sims, min(k, sims.shape[1]))
            best_s, best_i = _merge(best_s, best_i, s, i + b, k)
        out_s.append(best_s)
        out_i.append(best_i)
    if not out_s:
        return torch.zeros((0, k)), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(out_s), torch.cat(out_i)


def faiss_topk(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same search through faiss (exact inner product on unit rows, ``IndexFlatIP``; on the GPU when the
    faiss build has one and the inputs are on CUDA). Install extra ``faiss`` (faiss-cpu) or faiss-gpu."""
    try:
        import faiss
    except ImportError:
        raise HarnessError("knn_backend 'faiss' needs the faiss package: pip install 'partbench[faiss]' "
                           "(faiss-cpu) or faiss-gpu; or set knn_backend: torch") from None
    q = normalise(query).cpu().numpy()
    b = normalise(bank).cpu().numpy()
    index = faiss.IndexFlatIP(b.shape[1])
    if query.is_cuda and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), query.device.index or 0, index)
    index.add(b)
    s, i = index.search(q, k)
    return torch.from_numpy(s).to(query.device), torch.from_numpy(i).long().to(query.device)
