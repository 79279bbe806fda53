"""The project's own promises: the top-level layout, and CI running exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_top_level_layout():
    for name in ("mmos_ray", "jobs", "cluster", "tests", "ray_cluster.yaml", "pyproject.toml", "configs",
                 "benchmarks", "README.md", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_ci_runs_exactly_the_readme_test_command():
    install_and_run, install_and_test = _readme_commands()[:2]
    assert "mmos run" in install_and_run
    assert "pytest" in install_and_test
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    assert ci_lines[-1] == install_and_test
