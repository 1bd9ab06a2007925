"""Cost of verifying a feature-cache entry's checksum, relative to reading the entry once.

Every entry is verified (BLAKE2b over its array bytes) the first time a process reads it. This writes
entries of the sizes tasks use (a 768-d vector cache of 150k crops; an fp16 token cache of 2,000 windows
of 1,025 tokens x 768) through the real writer, then times, in one run, the verification and one full read
of the same entry (what a probe or a retrieval does at least once; training reads it every epoch).

Last line exactly: ``verify_over_read=<ratio for the token entry> vector_ratio=<ratio for the vector entry>
verify_gb_s=<verification throughput>``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.api import FeatureCache, array_checksum


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def entry(cache: FeatureCache, key: str, shape, dtype) -> Path:
    rng = np.random.default_rng(0)
    w = cache.open_writer(key, shape, dtype, {"n": shape[0]})
    step = max(1, (64 << 20) // (int(np.prod(shape[1:])) * np.dtype(dtype).itemsize))
    for s in range(0, shape[0], step):
        rows = rng.standard_normal((min(step, shape[0] - s),) + tuple(shape[1:])).astype(dtype)
        w.write(s, rows)
    w.commit()
    return cache.path(key)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=2000, help="token entry rows (1,025 x 768 fp16 each)")
    ap.add_argument("--vectors", type=int, default=150000, help="vector entry rows (768 fp32 each)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cache = FeatureCache(d)
        out = {}
        for name, shape, dtype in (("tokens", (args.windows, 1025, 768), np.float16),
                                   ("vectors", (args.vectors, 768), np.float32)):
            p = entry(cache, name[0] * 64, shape, dtype)
            read = best_of(lambda: np.array(np.load(p, mmap_mode="r")), args.repeat)
            verify = best_of(lambda: array_checksum(p), args.repeat)
            gb = p.stat().st_size / 1e9
            out[name] = (verify / read, gb / verify)
            print(f"{name}: {gb:.2f} GB  read {read:.2f} s  verify {verify:.2f} s  ratio {verify / read:.2f}")
        print(f"verify_over_read={out['tokens'][0]:.2f} vector_ratio={out['vectors'][0]:.2f} "
              f"verify_gb_s={out['tokens'][1]:.2f}")


if __name__ == "__main__":
    main()
