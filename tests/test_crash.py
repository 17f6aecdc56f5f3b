"""Crash tests: SIGKILL a stage at moments spread over its run, then `dvc repro`.

After each kill, `dvc repro` completes, `dvc status` is clean, every output equals the one of
an uninterrupted run (timing figures aside), every file in DVC's cache holds the content its
name (an MD5) says, and a temporary file the kill left (ignored by DVC) is gone after the
stage's next run. The pipeline is the tiny
synthetic CPU setup with one precision and one backend, so the whole file takes minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dvcrepo import Repo, make_tiny_repo
from tests.test_cli_errors import leftovers

pytestmark = pytest.mark.slow

EXTRA = ["train.subset=128", "quality.max_top1_drop=100.0", "precisions=[int8]", "backends=[onnxruntime]"]
EXTRA += ["bench.batch_sizes=[1]"]
# stage -> its module; each is killed at these fractions of its uninterrupted run time
KILLED = {"export": "export", "calibrate": "calibrate", "evaluate@int8": "evaluate", "report": "report"}
MOMENTS = (0.15, 0.5, 0.85)
OUTPUT_DIRS = ("data/prepared", "artifacts", "reports")
TIMING_KEY = re.compile(r"(_s|_seconds|_ms(_p\d+)?|_ips(_max)?)$|^(latency|throughput)")
TEMPORARY = re.compile(r"^\..+\.pid\d+\.")  # stages/lib/core/io.py temp_prefix
TIMING_PLOTS = {"latency.png", "throughput.png", "speedup.png", "throughput_end_to_end.png"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    r = make_tiny_repo(tmp_path_factory.mktemp("crash"), EXTRA)
    r.dvc("repro")
    return r


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stage_process(dvc: subprocess.Popen[str], module: str) -> int | None:
    """The pid of the stage's own process (not a per-backend child) under ``dvc``."""
    for pid in _children(dvc.pid):
        cmd = _cmdline(pid)
        if f"-m stages.{module} " in cmd and "--backend" not in cmd and not cmd.startswith("/bin/sh"):
            return pid
    return None


def _forced_run(repo: Repo, stage: str, module: str, kill_after: float | None) -> tuple[float, bool]:
    """`dvc repro -f -s stage`; SIGKILL the stage (and its children) ``kill_after`` seconds
    after it starts. Returns how long the stage process ran, and whether it was killed."""
    dvc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "-s", stage],
        cwd=repo.path,
        env=repo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pid, start, killed = None, time.monotonic(), False
    while dvc.poll() is None and pid is None and time.monotonic() - start < 300:
        pid = _stage_process(dvc, module)
        time.sleep(0.02)
    assert pid is not None, f"{stage}: its process never appeared"
    started = time.monotonic()
    while dvc.poll() is None and Path(f"/proc/{pid}").exists():
        if kill_after is not None and time.monotonic() - started >= kill_after:
            for victim in [pid, *_children(pid)]:  # by id: the stage and its backend children
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    ran = time.monotonic() - started
    out, _ = dvc.communicate(timeout=600)
    assert (dvc.returncode != 0) == killed, out[-4000:]
    return ran, killed


def _normalised(path: Path) -> Any:
    """A file's content for comparison: JSON without timing keys, else its MD5."""
    if path.suffix == ".json":
        return _drop_timing(json.loads(path.read_text()))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _drop_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if not TIMING_KEY.search(k)}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def _outputs(root: Path) -> dict[str, Any]:
    found = {}
    for top in OUTPUT_DIRS:
        for p in sorted((root / top).rglob("*")):
            bench_csv = p.suffix == ".csv" and "bench" in p.parts  # latency rows
            temporary = TEMPORARY.match(p.name)  # a killed writer's, checked apart
            if p.is_file() and p.name not in TIMING_PLOTS and not bench_csv and not temporary:
                found[str(p.relative_to(root))] = _normalised(p)
    return found


def _clean_status(repo: Repo) -> None:
    """`dvc status` lists nothing but the probe (always_changed: it reads the machine)."""
    status = json.loads(repo.dvc("status", "--json"))
    assert set(status) <= {"probe"}, status
    assert all(change == "always changed" for change in status.get("probe", ["always changed"])), status


def _cache_is_sound(repo: Repo) -> None:
    """Every file in DVC's cache has the MD5 its name says: nothing partial or stale."""
    cache = repo.path / ".dvc" / "cache" / "files" / "md5"
    for f in cache.rglob("*"):
        if f.is_file():
            name = f.parent.name + f.name.removesuffix(".dir")
            assert hashlib.md5(f.read_bytes()).hexdigest() == name, f"corrupt cache entry {f}"


@pytest.mark.parametrize("stage", list(KILLED))
def test_sigkill_then_repro_restores_every_output(repo: Repo, stage: str) -> None:
    module = KILLED[stage]
    duration, _ = _forced_run(repo, stage, module, None)  # the uninterrupted run compared against
    repo.dvc("repro")  # its downstream stages (new timing figures in its reports)
    _clean_status(repo)
    expected = _outputs(repo.path)
    for fraction in MOMENTS:
        at = fraction * duration
        for _ in range(3):  # a run faster than the measured one may finish first: kill earlier
            if _forced_run(repo, stage, module, at)[1]:
                break
            at *= 0.6
        else:
            pytest.fail(f"{stage} always finished before the kill at {fraction:.0%} of {duration:.1f} s")
        repo.dvc("repro")
        _clean_status(repo)
        got = _outputs(repo.path)
        differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        assert differ == [], f"{stage} killed at {fraction:.0%} of {duration:.1f} s: {differ}"
        for left in _leftovers(repo):  # DVC ignores them; the stage's next write removes them
            assert TEMPORARY.match(Path(left).name), left
        _cache_is_sound(repo)
    _forced_run(repo, stage, module, None)
    assert _leftovers(repo) == []


def _leftovers(repo: Repo) -> list[str]:
    return [x for top in OUTPUT_DIRS for x in leftovers(repo.path / top)]
