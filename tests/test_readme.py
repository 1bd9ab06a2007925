"""README's two commands are exactly what CI runs, and the CLI reference matches the parser."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_commands_are_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    install, tests = _bash_blocks(readme)[:2]
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert install in ci, "README install command differs from .ci/run"
    assert tests in ci, "README test command differs from .ci/run"
    assert "harness run specs/demo.yaml" in install


def test_readme_quick_tier_is_the_test_command_without_slow_tests():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert blocks[2] == blocks[1] + ' -m "not slow"'
    assert "slow:" in (ROOT / "setup.cfg").read_text()  # the marker is registered


def test_cli_subcommands_are_documented():
    from harness.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    for name in sub.choices:
        assert f"`harness {name}" in readme, name
