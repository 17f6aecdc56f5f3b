"""Faults of the file system: a full disk, a read-only folder, a write refused at any site.

Each gives one ``error:`` line naming the path, the cause in words and what to do, exit 1,
no temporary file left and the earlier output as it was. The real-file-system tests mount a
tmpfs (root only; skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.lib.core import io
from stages.lib.core.cli import os_error_line, run_main
from stages.lib.core.errors import OutputWriteError
from tests.conftest import run_stage
from tests.test_cli_errors import leftovers, one_line_error

A = "artifacts/resnet18_cifar"


def _mount(target: Path, *options: str) -> None:
    proc = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip() or proc.returncode})")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    target = tmp_path / "small"
    target.mkdir()
    _mount(target, "-t", "tmpfs", "-o", "size=256k", "tmpfs")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(fs: Path) -> None:
    """Leave no free block on ``fs``."""
    with open(fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _remount_ro(target: Path) -> None:
    _mount(target, "-o", "remount,ro")


def test_full_disk_during_prepare_names_the_file_and_keeps_the_earlier_output(project: Path, small_fs: Path) -> None:
    earlier = small_fs / "prepared"
    earlier.mkdir()
    (earlier / "meta.json").write_text('{"earlier": true}\n')
    proc = run_stage("prepare", ["--out", str(earlier)], project, check=False, env={"PIPELINE_LOG_LEVEL": "ERROR"})
    # 1024 training images of 32x32x3 bytes, refused before writing
    one_line_error(proc, "prepare", "no space left on device writing small/prepared/train.npz (needs about 3.0 MiB, ")
    assert {p.name for p in earlier.iterdir()} == {"meta.json"}
    assert (earlier / "meta.json").read_text() == '{"earlier": true}\n'
    assert leftovers(small_fs) == []


def test_export_refuses_a_disk_too_small_for_the_onnx_model_before_writing(prepared_tiny: Path, small_fs: Path) -> None:
    out = small_fs / "onnx"
    args = ["--checkpoint", f"{prepared_tiny}/{A}/checkpoint.pt", "--test", f"{prepared_tiny}/data/prepared/test.npz"]
    args += ["--out-dir", str(out), "--reference", str(small_fs / "ref.npy"), "--report", str(small_fs / "e.json")]
    proc = run_stage("export", args, prepared_tiny, check=False, env={"PIPELINE_LOG_LEVEL": "ERROR"})
    # resnet18_cifar: 11.2 M float32 weights
    line = one_line_error(proc, "export", f"no space left on device writing {out}/fp32.onnx (needs about 42.")
    assert "MiB, " in line and "free at least 42." in line
    assert sorted(p.name for p in small_fs.rglob("*")) == ["onnx"]


def test_read_only_folder(project: Path, small_fs: Path) -> None:
    earlier = small_fs / "params-valid.json"
    earlier.write_text("earlier\n")
    _remount_ro(small_fs)
    proc = run_stage("validate", ["--out", str(earlier)], project, check=False)
    line = one_line_error(proc, "validate", "read-only file system writing small/params-valid.json", "read-write")
    assert "needs" not in line
    assert earlier.read_text() == "earlier\n"
    assert leftovers(small_fs) == []


def test_read_only_folder_that_does_not_exist_yet(project: Path, small_fs: Path) -> None:
    _remount_ro(small_fs)
    out = small_fs / "reports" / "m" / "gate.json"
    proc = run_stage("validate", ["--out", str(out)], project, check=False)
    one_line_error(proc, "validate", "read-only file system", "small/reports")
    assert not (small_fs / "reports").exists()


# -- the one-line message itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cause", "remedy"),
    [
        (errno.ENOSPC, "no space left on device", "free at least 2.0 MiB on that file system"),
        (errno.EDQUOT, "disk quota exceeded", "free space within your quota"),
        (errno.EROFS, "read-only file system", "remount out read-write"),
        (errno.EACCES, "permission denied", "give this user write permission on out"),
        (errno.EPERM, "permission denied", "give this user write permission on out"),
    ],
)
def test_each_cause_in_words(code: int, cause: str, remedy: str) -> None:
    line = os_error_line(OutputWriteError(code, "out/model.onnx", 2 << 20, 4096))
    assert line.startswith(f"{cause} writing out/model.onnx")
    assert remedy in line
    assert ("needs about 2.0 MiB, 4.0 KiB free there" in line) == (code in (errno.ENOSPC, errno.EDQUOT))


def test_a_fault_outside_an_atomic_write_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "data/raw/x.tar.gz")

    assert run_main("prepare", body) == 1
    err = capsys.readouterr().err
    expected = "permission denied at data/raw/x.tar.gz: give this user write permission on data/raw"
    assert err == f"error: prepare: {expected} (or run from a clone it owns), then rerun\n"


def test_other_os_errors_keep_their_traceback() -> None:
    def body() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    with pytest.raises(FileNotFoundError):
        run_main("prepare", body)


def test_a_runtime_error_on_a_full_disk_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as RuntimeError('... file write failed')."""
    monkeypatch.setattr(io, "free_bytes", lambda folder: 0)
    dest = tmp_path / "checkpoint.pt"
    with pytest.raises(OutputWriteError) as info, io.atomic_path(dest) as tmp:
        tmp.write_bytes(b"x" * 100)
        raise RuntimeError(
            "[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0: file write failed"
        )
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(dest)
    assert info.value.need_bytes == 100 and info.value.at_least
    assert list(tmp_path.iterdir()) == []


# -- an injected fault at every write site of a stage ---------------------------------------

R = "reports/resnet18_cifar"
INJECTED = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)  # cycled over the sites
SITES = {  # stage -> (module, the stage's name in messages, argv as dvc.yaml gives it)
    "validate": ("validate", "validate", ["--out", "artifacts/params-valid.json"]),
    "prepare": ("prepare", "prepare", ["--out", "data/prepared"]),
    "export": (
        "export",
        "export",
        ["--checkpoint", f"{A}/checkpoint.pt", "--test", "data/prepared/test.npz", "--out-dir", f"{A}/onnx"]
        + ["--reference", f"{A}/reference_logits.npy", "--report", f"{R}/export.json"],
    ),
    "calibrate": (
        "calibrate",
        "calibrate",
        ["--onnx", f"{A}/onnx/fp32.onnx", "--calib", "data/prepared/calib.npz", "--out", f"{A}/onnx/int8.onnx"]
        + ["--ranges", f"{A}/calibration/ranges.json", "--report", f"{R}/calibrate.json"],
    ),
    "report": ("report", "report", ["--model-dir", R, "--data-meta", "data/prepared/meta.json"]),
    "gate": ("gate", "quality gate", ["--model-dir", R, "--out", f"{R}/gate.json"]),
}
CAUSE_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
}


def _passing_evals(root: Path) -> None:
    for prec in ("fp32", "fp16", "int8"):
        rec = {"status": "ok", "top1": 50.0, "top1_agreement_vs_ort_fp32": 1.0, "agreement_images": 128}
        rec.update(max_abs_diff_vs_ort_fp32=0.0, images=128)
        io.write_json(root / R / "eval" / f"{prec}.json", {"precision": prec, "onnxruntime": rec})


def _snapshot(path: Path) -> object:
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes() if path.exists() else None


def _shown(dest: Path, root: Path) -> str:
    """How the message names ``dest``: relative, and under the final folder for a file
    written inside an atomic_dir's temporary folder (prepare)."""
    parts = [p for p in dest.relative_to(root).parts]
    if parts[-1].startswith(".") and parts[-1].endswith(".tmp"):  # a stage's own temporary (calibrate)
        parts[-1] = "." + parts[-1].split(".")[1]
    return "/".join("prepared" if p.startswith(".prepared.") else p for p in parts)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(SITES))
def test_injected_fault_at_each_write_site(
    stage: str, prepared_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    root = tmp_path / "p"
    shutil.copytree(prepared_tiny, root)
    _passing_evals(root)
    monkeypatch.chdir(root)
    module, name, argv = SITES[stage]
    main = importlib.import_module(f"stages.{module}").main
    real = io.commit
    sites: list[Path] = []

    def record(tmp: Path, dest: Path) -> None:
        sites.append(Path(dest).resolve())
        real(tmp, dest)

    monkeypatch.setattr(io, "commit", record)
    assert main(argv) == 0
    assert sites, f"{stage} wrote nothing through the atomic-write helper"
    for k, dest in enumerate(sites):
        code = INJECTED[k % len(INJECTED)]
        before, calls = _snapshot(dest), iter(range(len(sites) + 1))

        def fail_at_k(tmp: Path, target: Path, k: int = k, code: int = code, calls: Iterator[int] = calls) -> None:
            if next(calls) == k:
                raise OSError(code, os.strerror(code), str(tmp))
            real(tmp, target)

        monkeypatch.setattr(io, "commit", fail_at_k)
        capsys.readouterr()
        assert main(argv) == 1, f"write {k} ({dest})"
        stderr = capsys.readouterr().err
        err = [line for line in stderr.splitlines() if line.startswith("error:")]  # beside progress bars
        assert len(err) == 1 and "Traceback" not in stderr, stderr
        assert err[0].startswith(f"error: {name}: {CAUSE_WORDS[code]} writing {_shown(dest, root)}"), err[0]
        assert _snapshot(dest) == before, f"write {k}: {dest} changed"
        assert leftovers(root) == [], f"write {k}"


def test_folder_without_write_permission(project: Path, tmp_path: Path) -> None:
    """A folder another user owns, written by root without the capabilities that bypass
    permission bits (root otherwise ignores them)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1) to drop CAP_DAC_OVERRIDE")
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    os.chown(folder, 65534, -1)
    (folder / "params-valid.json").write_text("earlier\n")
    os.chmod(folder / "params-valid.json", 0o644)
    cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable, "-m", "stages.validate"]
    proc = subprocess.run(
        [*cmd, "--out", str(folder / "params-valid.json")], cwd=project, capture_output=True, text=True
    )
    if "setpriv:" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    line = one_line_error(proc, "validate", "permission denied writing", "give this user write permission on")
    assert "theirs" in line
    assert (folder / "params-valid.json").read_text() == "earlier\n"
    assert leftovers(folder) == []


def test_predict_into_a_full_file_system(prepared_tiny: Path, small_fs: Path, tmp_path: Path) -> None:
    """A command, not a DVC stage: the same one line."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "red.png")
    _fill(small_fs)
    out = small_fs / "preds.json"
    args = [str(images), "--backend", "onnxruntime", "--device", "cpu", "--output", str(out)]
    proc = run_stage("predict", args, prepared_tiny, check=False, env={"PIPELINE_LOG_LEVEL": "ERROR"})
    one_line_error(proc, "predict", f"no space left on device writing {out} (needs about ", "free at least")
    assert not out.exists() and leftovers(small_fs) == []


def test_a_killed_writers_temporary_files_go_at_the_next_write(tmp_path: Path) -> None:
    dead = 2**22 + 1  # above Linux's largest pid
    stale_file = tmp_path / f".a.json.pid{dead}.x1.tmp"
    stale_dir = tmp_path / f".prepared.pid{dead}.x2"
    live = tmp_path / f".b.json.pid{os.getpid()}.x3.tmp"
    for p in (stale_file, live):
        p.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "train.npz").write_text("partial")
    io.write_json(tmp_path / "a.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "a.json"]
