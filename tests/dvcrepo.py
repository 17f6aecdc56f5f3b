"""A temporary git + DVC repository holding the pipeline with the tiny synthetic CPU setup,
for the tests that drive DVC itself (test_pipeline.py, test_sweep.py).

Its default configuration is the tiny setup (conf/profile/test.yaml holding conftest.TINY
plus the caller's extras, selected in conf/config.yaml), so `dvc repro` and
`dvc exp run -S ...` compose it exactly as they would the real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, TINY, copy_files


class Repo:
    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.env = dict(
            os.environ,
            DVC_NO_ANALYTICS="1",
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            GIT_AUTHOR_NAME="test",
            GIT_AUTHOR_EMAIL="test@example.com",
            GIT_COMMITTER_NAME="test",
            GIT_COMMITTER_EMAIL="test@example.com",
        )
        self.env.update(env or {})
        self.env.pop("PYTHONPATH", None)
        self.env.pop("SERVE_PYTHON", None)  # serve@p records "skipped"; tests/test_serve.py serves for real

    def run(self, *args: str, check: bool = True, timeout: int = 1200) -> str:
        proc = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}")
        return out

    def dvc(self, *args: str, check: bool = True, timeout: int = 1200) -> str:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, timeout=timeout)

    def git(self, *args: str) -> str:
        return self.run("git", *args)

    def json(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text())


def ran(output: str) -> list[str]:
    """The stages DVC ran, in order, from `dvc repro`/`dvc exp run` output."""
    return re.findall(r"Running stage '([^']+)'", output)


def unchanged(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _test_profile(extra: list[str]) -> str:
    """conf/profile/test.yaml: the CPU profile with TINY and ``extra`` (keys, not group choices)
    applied on top."""
    prof = yaml.safe_load((ROOT / "conf" / "profile" / "cpu.yaml").read_text())
    for override in [*TINY, *extra]:
        key, value = override.split("=", 1)
        if not (ROOT / "conf" / key).is_dir():  # group choices (data=..., profile=...) are made in config.yaml
            _set(prof, key, yaml.safe_load(value))
    return "# @package _global_\n" + yaml.safe_dump(prof, sort_keys=False)


def make_tiny_repo(root: Path, extra: list[str], env: dict[str, str] | None = None) -> Repo:
    """The project in ``root`` as a committed git + DVC repo (Hydra on) whose defaults are the
    tiny synthetic CPU setup plus ``extra`` (dotted overrides)."""
    copy_files(root, ("conf", "stages", "dvc.yaml", ".dvcignore", "pyproject.toml"))
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy2(ROOT / "data" / "raw" / "README.md", root / "data" / "raw" / "README.md")
    (root / "conf" / "profile" / "test.yaml").write_text(_test_profile(extra))
    config = (root / "conf" / "config.yaml").read_text()
    assert "  - data: cifar10\n" in config and "  - profile: gpu\n" in config
    config = config.replace("  - data: cifar10\n", "  - data: synthetic\n")
    config = config.replace("  - profile: gpu\n", "  - profile: test\n")
    (root / "conf" / "config.yaml").write_text(config)

    r = Repo(root, env)
    r.git("init", "-q")
    r.dvc("init", "-q")
    r.dvc("config", "hydra.enabled", "True")
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")  # the custom plot templates
    # what `make params` does
    r.run(
        sys.executable,
        "-c",
        "import os; from dvc.utils.hydra import compose_and_dump as c; "
        "c('params.yaml', os.path.abspath('conf'), None, 'config', '', [])",
    )
    r.git("add", "-A")
    r.git("commit", "-q", "-m", "tiny synthetic pipeline")
    return r
