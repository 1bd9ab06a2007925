"""Shared dataset machinery: crops of source images, the decoded-source LRU, pickling."""
import pickle

import numpy as np
from PIL import Image

from partbench_plugins.datasets._common import SourceCache
from partbench_plugins.datasets.part_crops import crop_samples


def test_crop_samples_crop_black_outside_and_survive_pickling(tmp_path):
    img = np.full((20, 30, 3), 200, np.uint8)
    img[:10, :15] = (10, 20, 30)
    Image.fromarray(img).save(tmp_path / "a.png")
    items = [("a#1", 0, str(tmp_path / "a.png"), (0, 0, 10, 10)),
             ("a#2", 1, str(tmp_path / "a.png"), (25, 15, 35, 25))]  # partly outside: black there
    s = crop_samples(items, ["x", "y"], {"kept": 2})
    first = np.asarray(s.image(0))
    assert (first == (10, 20, 30)).all()
    second = np.asarray(s.image(1))
    assert (second[:5, :5] == 200).all() and (second[5:, :] == 0).all() and (second[:, 5:] == 0).all()
    clone = pickle.loads(pickle.dumps(s))
    assert np.array_equal(np.asarray(clone.image(1)), second)
    assert clone.source(1) == (str(tmp_path / "a.png"), (25, 15, 35, 25))


def test_source_cache_is_lru_and_loads_once():
    calls = []
    cache = SourceCache(size=2)
    for key in ["a", "b", "a", "c", "a", "b"]:
        cache.get(key, lambda k=key: calls.append(k) or k.upper())
    assert calls == ["a", "b", "c", "b"]  # "b" was evicted by "c" (LRU), "a" stayed hot
