"""Golden outputs (tests/golden.py, docs/plugins.md "Versions"): every built-in encoder and task plugin has a
golden file made with its current version, and still produces those outputs within floating-point noise. A
change that alters the numbers fails here until the plugin's ``version`` is bumped and the file regenerated
with ``python tests/golden.py --update NAME``. The tests of the tool itself follow: the refusal, the messages,
and that realistic changes exceed the tolerances."""
import json

import pytest
import torch
import torch.nn.functional as F

import golden

BUILTIN = [(kind, name) for kind in golden.KINDS for name in golden.builtin(kind)]


@pytest.mark.parametrize("kind,name", BUILTIN, ids=[f"{k}:{n}" for k, n in BUILTIN])
def test_outputs_equal_the_golden_file(kind, name):
    ok, message = golden.check(kind, name)
    assert ok, message


def test_every_builtin_has_a_case_and_every_golden_file_a_plugin():
    assert {k for k, _ in BUILTIN} == set(golden.KINDS)
    for kind in golden.KINDS:
        extra = set(golden.CASES[kind]) - set(golden.builtin(kind))
        assert not extra, f"golden cases of {kind}s that are not built in: {sorted(extra)}"
    assert golden.stale_files() == []


# -- the tool ---------------------------------------------------------------------------------------------
def _pixels_cls():
    return golden.registration("encoder", "pixels").cls


def test_a_plugin_without_a_golden_file_names_the_command(tmp_path):
    ok, message = golden.check("encoder", "pixels", tmp_path)
    assert not ok and "has no golden file" in message
    assert "`python tests/golden.py --update pixels`" in message


def test_update_refuses_changed_outputs_until_the_version_is_bumped(tmp_path, monkeypatch):
    assert golden.update("encoder", "pixels", tmp_path).endswith("created (version 1, 1 cases)")
    path = golden.golden_path("encoder", "pixels", tmp_path)
    before = path.read_bytes()
    assert golden.check("encoder", "pixels", tmp_path)[0]
    assert golden.update("encoder", "pixels", tmp_path).endswith("up to date (version 1)")

    cls = _pixels_cls()
    forward = cls.forward
    # a real change of the plugin's computation: every output moves by 1e-3
    monkeypatch.setattr(cls, "forward", lambda self, x, reps: {k: v + 1e-3 for k, v in forward(self, x, reps).items()})
    ok, message = golden.check("encoder", "pixels", tmp_path)
    assert not ok and "beyond floating-point noise while its version is still '1'" in message
    assert "bump Pixels.version (in plugins/encoders/baselines.py)" in message
    with pytest.raises(golden.Refused, match=r"not overwritten: .*bump Pixels\.version .* first"):
        golden.update("encoder", "pixels", tmp_path)
    assert path.read_bytes() == before

    monkeypatch.setattr(cls, "version", "2")
    ok, message = golden.check("encoder", "pixels", tmp_path)
    assert not ok and "is version 2 but pixels.json was made with version 1: regenerate it" in message
    assert golden.update("encoder", "pixels", tmp_path).endswith("regenerated for version 2 (was 1)")
    assert json.loads(path.read_text())["version"] == "2"
    assert golden.check("encoder", "pixels", tmp_path)[0]


def test_a_changed_case_is_regenerated_without_a_bump(tmp_path, monkeypatch):
    golden.update("encoder", "pixels", tmp_path)

    def other_input(tmp):
        return {"32x48": golden.encoder_case("pixels", {"grid": 2, "patch_size": 16}, golden.image_batch(1, 2, 32, 48))}

    monkeypatch.setitem(golden.CASES["encoder"], "pixels", other_input)
    ok, message = golden.check("encoder", "pixels", tmp_path)
    assert not ok and "its cases in tests/golden.py changed" in message and "no version bump needed" in message
    assert golden.update("encoder", "pixels", tmp_path).endswith("updated for changed cases (1 changed; version 1 "
                                                                 "unchanged)")
    assert golden.check("encoder", "pixels", tmp_path)[0]


def test_changed_inputs_with_the_same_outputs_pass_and_are_recorded_by_update(tmp_path, monkeypatch):
    golden.update("encoder", "pixels", tmp_path)

    def same_outputs(tmp):  # other code, the same numbers
        return {"32x48": golden.encoder_case("pixels", {"patch_size": 16, "grid": 4}, golden.image_batch(1, 2, 32, 48))}

    monkeypatch.setitem(golden.CASES["encoder"], "pixels", same_outputs)
    ok, message = golden.check("encoder", "pixels", tmp_path)
    assert ok and "its cases changed since the file was made" in message
    assert "(outputs unchanged; version 1 unchanged)" in golden.update("encoder", "pixels", tmp_path)
    assert golden.update("encoder", "pixels", tmp_path).endswith("up to date (version 1)")


def test_rounding_noise_passes_and_a_small_real_difference_fails(tmp_path):
    golden.update("encoder", "pixels", tmp_path)
    path = golden.golden_path("encoder", "pixels", tmp_path)
    doc = json.loads(path.read_text())

    def scaled(factor):
        d = json.loads(json.dumps(doc))
        for out in d["cases"]["32x48"].values():
            out["sample"]["value"] = [v * factor for v in out["sample"]["value"]]
        golden.write_document(d, path)
        return golden.check("encoder", "pixels", tmp_path)

    assert scaled(1 + 5e-6)[0]  # the worst rounding seen between machines is ~5e-6
    ok, message = scaled(1 + 2e-4)
    assert not ok and "sampled values differ" in message


# -- realistic changes exceed the tolerances (the goldens of the repository) ------------------------------
def _changed(monkeypatch, module, name, make):
    monkeypatch.setattr(module, name, make(getattr(module, name)))


def test_tanh_gelu_instead_of_exact_fails(monkeypatch):
    _changed(monkeypatch, F, "gelu", lambda old: lambda x, approximate="none": old(x, approximate="tanh"))
    ok, message = golden.check("encoder", "deit")
    assert not ok and "sampled values differ" in message


def test_a_layernorm_eps_of_1e5_instead_of_1e6_fails(monkeypatch):
    _changed(monkeypatch, F, "layer_norm", lambda old: lambda x, s, w=None, b=None, eps=1e-5: old(x, s, w, b, eps * 10))
    ok, message = golden.check("encoder", "deit")
    assert not ok and "224x224_small_embeddings" in message


def test_ap_without_tie_groups_fails(monkeypatch):
    import numpy as np

    from partbench_plugins.tasks import retrieval_metrics

    _changed(monkeypatch, retrieval_metrics, "_tied_rows", lambda old: lambda k: np.zeros(k.shape[0], bool))
    ok, message = golden.check("task", "retrieval")
    assert not ok and "metrics.AP" in message


def test_one_more_probe_epoch_in_the_schedule_fails(monkeypatch):
    from partbench_plugins.tasks import _probe

    _changed(monkeypatch, _probe, "cosine_lr", lambda old: lambda lr, epoch, epochs: old(lr, epoch, epochs + 1))
    ok, message = golden.check("task", "linear_probe")
    assert not ok and "train_loss" in message
