"""A skipped test fails the run (the README's test command, which CI runs) unless the test is marked
allow_skip; --allow-skips accepts skips for a local run. The suite's own conftest runs a small suite."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SUITE = textwrap.dedent("""
    import pytest

    def test_runs():
        pass

    @pytest.mark.allow_skip("needs a capability some machines lack")
    def test_may_skip():
        pytest.skip("no capability here")

    @pytest.mark.xfail(reason="a known bug", strict=True)
    def test_known_bug():
        assert False
    """)
UNEXPECTED = textwrap.dedent("""
    import pytest

    def test_skips():
        pytest.skip("no foo here")
    """)


def _pytest(tmp_path, *args):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "setup.cfg").write_text("[tool:pytest]\nmarkers =\n    allow_skip(reason): may skip\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_expected_skips_and_xfails_pass(tmp_path):
    (tmp_path / "test_a.py").write_text(SUITE)
    r = _pytest(tmp_path)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in r.stdout and "unexpected skips" not in r.stdout


@pytest.mark.parametrize("workers", [[], pytest.param(["-n", "2"], marks=pytest.mark.slow)],
                         ids=["one-process", "xdist"])
def test_an_unexpected_skip_fails_the_run_with_its_reason(tmp_path, workers):
    (tmp_path / "test_a.py").write_text(SUITE)
    (tmp_path / "test_b.py").write_text(UNEXPECTED)
    r = _pytest(tmp_path, *workers)
    assert r.returncode == 1, r.stdout
    section = r.stdout.split("unexpected skips (the run fails)")[1].split("short test summary")[0]
    assert "test_b.py::test_skips: no foo here" in section and "test_may_skip" not in section


def test_allow_skips_accepts_them_locally(tmp_path):
    (tmp_path / "test_b.py").write_text(UNEXPECTED)
    r = _pytest(tmp_path, "--allow-skips")
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
