"""One GPU per stage (stages/lib/core/gpus.py), with a stand-in nvidia-smi: listing, locking,
waiting, CUDA_VISIBLE_DEVICES, child processes, and the GPU named in benchmark records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from stages.lib.core import gpus
from tests.conftest import ROOT

SMI = textwrap.dedent("""\
    GPU 0: NVIDIA H200 (UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555)
      MIG 1g.18gb     Device  0: (UUID: MIG-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff)
    GPU 1: NVIDIA H200 (UUID: GPU-ffeeddcc-0000-1111-2222-333344445555)
    """)
UUID0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555"
UUID1 = "GPU-ffeeddcc-0000-1111-2222-333344445555"

# A stage stand-in: holds a GPU through run_main(gpu=True), writes what it sees to argv[1],
# optionally runs itself again as a per-backend child (argv[3] == "child"), and keeps the GPU
# until the file argv[2] exists.
HOLDER = textwrap.dedent("""\
    import json, os, sys, time
    from pathlib import Path
    from stages.lib.core.cli import run_main
    from stages.lib.core.interpreter import run_module

    def body():
        seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PIPELINE_GPU")}
        Path(sys.argv[1]).write_text(json.dumps({**seen, "t_start": time.time()}))
        if len(sys.argv) > 3 and sys.argv[3] == "child":
            run_module("gpuholder", [sys.argv[1] + ".child", sys.argv[2]])
        while not Path(sys.argv[2]).exists():
            time.sleep(0.05)

    sys.exit(run_main("holder", body, gpu=True))
    """)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """An environment with a stand-in nvidia-smi listing two GPUs and a private lock folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "smi.txt").write_text(SMI)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] && cat "{tmp_path / "smi.txt"}"\n')
    smi.chmod(0o755)
    (tmp_path / "gpuholder.py").write_text(HOLDER)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", PIPELINE_LOCK_DIR=str(tmp_path / "locks"))
    for key in ("CUDA_VISIBLE_DEVICES", "PIPELINE_GPU", "PIPELINE_CHILD", "PIPELINE_GPU_LOCK"):
        env.pop(key, None)
    return env


def _start(env: dict[str, str], tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen[str], Path, Path]:
    seen, release = tmp / f"{name}.json", tmp / f"{name}.release"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuholder", str(seen), str(release), *extra],
        cwd=tmp,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, seen, release


def _await(path: Path, proc: subprocess.Popen[str], seconds: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


def _finish(proc: subprocess.Popen[str], release: Path) -> str:
    release.touch()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_nvidia_smi_list_is_parsed_without_mig_instances() -> None:
    found = gpus.parse_smi_list(SMI)
    assert found == [gpus.Gpu(0, "NVIDIA H200", UUID0), gpus.Gpu(1, "NVIDIA H200", UUID1)]
    assert gpus.parse_smi_list("No devices were found\n") == []


def test_cuda_visible_devices_narrows_the_gpus() -> None:
    both = gpus.parse_smi_list(SMI)
    assert gpus.visible_gpus(both, None) == both
    assert gpus.visible_gpus(both, "1") == [both[1]]
    assert gpus.visible_gpus(both, "GPU-ffeeddcc,0") == [both[1], both[0]]  # UUID prefixes, CUDA's order
    assert gpus.visible_gpus(both, "") == []
    assert gpus.visible_gpus(both, "-1") == []
    assert gpus.visible_gpus(both, "0,-1,1") == [both[0]]  # CUDA stops at the first invalid entry
    assert gpus.visible_gpus(both, "MIG-9f8e7d6c") is None  # not a GPU nvidia-smi lists: left alone
    assert gpus.visible_gpus(both, "7") is None


def test_two_stages_get_two_gpus_and_a_third_waits(host: dict[str, str], tmp_path: Path) -> None:
    a, a_seen, a_release = _start(host, tmp_path, "a")
    first = _await(a_seen, a)
    b, b_seen, b_release = _start(host, tmp_path, "b")
    second = _await(b_seen, b)
    assert {first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]} == {UUID0, UUID1}
    assert json.loads(first["PIPELINE_GPU"])["uuid"] == first["CUDA_VISIBLE_DEVICES"]
    assert json.loads(first["PIPELINE_GPU"])["name"] == "NVIDIA H200"

    c, c_seen, c_release = _start(host, tmp_path, "c")
    time.sleep(1.5)
    assert not c_seen.exists(), "a third stage ran while both GPUs were held"
    released = time.time()
    _finish(a, a_release)
    third = _await(c_seen, c)
    assert third["t_start"] >= released
    assert third["CUDA_VISIBLE_DEVICES"] == first["CUDA_VISIBLE_DEVICES"]  # the GPU the first gave back
    err = _finish(c, c_release)
    waiting = [line for line in err.splitlines() if "waits for a GPU" in line]
    assert len(waiting) == 1, err  # one line, naming the locks and who holds them
    assert str(tmp_path / "locks" / f"{UUID0}.lock") in waiting[0] and "holder (pid" in waiting[0]
    _finish(b, b_release)


def test_child_processes_inherit_the_gpu_without_locking_again(host: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "smi.txt").write_text(SMI.splitlines()[0] + "\n")  # one GPU: a second lock would hang
    proc, seen, release = _start(host, tmp_path, "parent", "child")
    parent = _await(seen, proc)
    child = _await(Path(f"{seen}.child"), proc)
    assert parent["CUDA_VISIBLE_DEVICES"] == child["CUDA_VISIBLE_DEVICES"] == UUID0
    assert child["PIPELINE_GPU"] == parent["PIPELINE_GPU"]
    _finish(proc, release)


def test_the_lock_can_be_switched_off(host: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "smi.txt").write_text(SMI.splitlines()[0] + "\n")
    env = dict(host, PIPELINE_GPU_LOCK="off")
    a, a_seen, a_release = _start(env, tmp_path, "a")
    b, b_seen, b_release = _start(env, tmp_path, "b")
    assert _await(a_seen, a)["CUDA_VISIBLE_DEVICES"] == _await(b_seen, b)["CUDA_VISIBLE_DEVICES"] == UUID0
    _finish(a, a_release)
    _finish(b, b_release)


def test_without_a_gpu_nothing_is_locked_or_set(host: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "smi.txt").write_text("")
    proc, seen, release = _start(host, tmp_path, "cpu")
    assert _await(seen, proc) | {"t_start": 0} == {"CUDA_VISIBLE_DEVICES": None, "PIPELINE_GPU": None, "t_start": 0}
    _finish(proc, release)
    assert not (tmp_path / "locks").exists()


def test_an_unusable_lock_folder_is_a_one_line_error(host: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = dict(host, PIPELINE_LOCK_DIR=str(tmp_path / "a-file" / "locks"))
    proc, seen, _ = _start(env, tmp_path, "x")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and not seen.exists()
    assert err.strip().splitlines()[-1].startswith("error: holder: cannot create the GPU lock folder")
    assert "PIPELINE_LOCK_DIR" in err


def test_benchmark_records_name_their_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.benchmark import device_record

    held = gpus.Gpu(1, "NVIDIA H200", UUID1)
    monkeypatch.setenv("PIPELINE_GPU", json.dumps(held.record()))
    assert device_record("cuda") == {"index": 1, "name": "NVIDIA H200", "uuid": UUID1}
    assert device_record("cpu") == {"name": "cpu", "index": None, "uuid": None}
    monkeypatch.delenv("PIPELINE_GPU")
    monkeypatch.setattr(gpus, "host_gpus", lambda: gpus.parse_smi_list(SMI))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert device_record("cuda")["uuid"] == UUID1  # not held: the first visible GPU, CUDA's device 0
    monkeypatch.setattr(gpus, "host_gpus", lambda: [])
    assert device_record("cuda")["name"] == "unknown CUDA device"
