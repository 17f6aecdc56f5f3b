"""stages/predict.py (`trt-predict`) on the tiny project's test images written as PNG files."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import evaluate, predict
from stages.lib.core.config import load_params
from stages.lib.data import prepared as data
from stages.lib.runners.base import Artifacts
from tests.conftest import ROOT, run_stage

M = "artifacts/resnet18_cifar"
N = 24  # test images written as PNG files


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


@pytest.fixture(scope="module")
def images(prepared_tiny: Path) -> np.ndarray:
    return data.load_split(prepared_tiny / "data/prepared/test.npz").images[:N]


@pytest.fixture(scope="module")
def folder(images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N test images as PNGs in nested folders; the sorted paths keep their order."""
    root = tmp_path_factory.mktemp("pngs")
    for i, img in enumerate(images):
        _png(root / ("a" if i < N // 2 else "b/deeper") / f"{i:03d}.png", img)
    (root / "a" / "notes.txt").write_text("not an image suffix: not picked from a folder")
    return root


def _run(prepared_tiny: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.chdir(prepared_tiny)
    return predict.main(list(argv))


def _predicted(out: Path) -> np.ndarray:
    return np.array([p["top"][0]["index"] for p in json.loads(out.read_text())["predictions"]])


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_predict_gives_evaluates_top1_on_the_same_images(
    prepared_tiny: Path, folder: Path, images: np.ndarray, tmp_path: Path, monkeypatch, backend: str
) -> None:
    out = tmp_path / "pred.json"
    argv = [str(folder), "--backend", backend, "--top-k", "10", "--output", str(out)]
    assert _run(prepared_tiny, monkeypatch, *argv) == 0
    record = json.loads(out.read_text())
    assert [Path(p["file"]).name for p in record["predictions"]] == [f"{i:03d}.png" for i in range(N)]
    top1 = _predicted(out)
    # evaluate's own loop on these images, labelled with predict's answers: 100% top-1
    p = load_params(prepared_tiny / "params.yaml")
    artifacts = Artifacts(prepared_tiny / M / "checkpoint.pt", prepared_tiny / M / "onnx/fp32.onnx")
    split = data.Split(images, top1)
    reference = np.load(prepared_tiny / M / "reference_logits.npy")[:N]
    rec = evaluate.evaluate_backend(backend, p, artifacts, "fp32", split, reference, 10)
    assert rec["status"] == "ok" and rec["top1"] == 100.0
    # every class, ranked as the export's ORT FP32 logits rank them, with their softmax
    np.testing.assert_array_equal(top1, reference.argmax(1))
    ranks = np.array([[t["index"] for t in p["top"]] for p in record["predictions"]])
    assert sorted(ranks[0]) == list(range(10))
    ranked_logits = np.take_along_axis(reference, ranks, axis=1)
    assert (np.diff(ranked_logits, axis=1) <= 1e-3).all()
    probs = np.exp(reference - reference.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    got = np.array([[t["probability"] for t in p["top"]] for p in record["predictions"]])
    np.testing.assert_allclose(got, np.take_along_axis(probs, ranks, axis=1), atol=1e-4)


def test_prints_top_k_names_and_probabilities(prepared_tiny: Path, folder: Path, monkeypatch, capsys) -> None:
    assert _run(prepared_tiny, monkeypatch, str(folder / "a"), "--backend", "onnxruntime", "--top-k", "3") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == N // 2
    names = json.loads((prepared_tiny / "data/prepared/meta.json").read_text())["classes"]
    for i, line in enumerate(lines):
        file, *tops = line.split("\t")
        assert file == str(folder / "a" / f"{i:03d}.png") and len(tops) == 3
        classes = [t.rsplit(" ", 1)[0] for t in tops]
        probs = [float(t.rsplit(" ", 1)[1].rstrip("%")) for t in tops]
        assert set(classes) <= set(names) and len(set(classes)) == 3
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.05


def test_csv_output_has_one_row_per_file(prepared_tiny: Path, folder: Path, tmp_path: Path, monkeypatch) -> None:
    js, cs = tmp_path / "p.json", tmp_path / "p.csv"
    for out in (js, cs):
        assert (
            _run(
                prepared_tiny,
                monkeypatch,
                str(folder),
                "--backend",
                "onnxruntime",
                "--top-k",
                "2",
                "--output",
                str(out),
            )
            == 0
        )
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert list(rows[0]) == [
        "file",
        "top1_class",
        "top1_index",
        "top1_probability",
        "top2_class",
        "top2_index",
        "top2_probability",
        "error",
    ]
    record = json.loads(js.read_text())
    assert record["top_k"] == 2 and record["backend"] == "onnxruntime" and record["precision"] == "fp32"
    for row, pred in zip(rows, record["predictions"], strict=True):
        assert row["file"] == pred["file"] and row["error"] == ""
        assert int(row["top1_index"]) == pred["top"][0]["index"] and row["top2_class"] == pred["top"][1]["class"]
        assert float(row["top1_probability"]) == pytest.approx(pred["top"][0]["probability"])


def test_grey_and_rgba_images_become_rgb_as_in_the_dataset_loader(
    prepared_tiny: Path, images: np.ndarray, tmp_path: Path, monkeypatch
) -> None:
    grey = images[0].mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([images[1], np.full((32, 32, 1), 7, np.uint8)], axis=2)
    files = [
        _png(tmp_path / "1grey.png", grey, "L"),
        _png(tmp_path / "2grey_as_rgb.png", np.repeat(grey[:, :, None], 3, axis=2)),
        _png(tmp_path / "3rgba.png", rgba, "RGBA"),
        _png(tmp_path / "4rgb.png", images[1]),
    ]
    out = tmp_path / "p.json"
    assert _run(prepared_tiny, monkeypatch, *map(str, files), "--backend", "onnxruntime", "--output", str(out)) == 0
    preds = json.loads(out.read_text())["predictions"]
    assert preds[0]["top"] == preds[1]["top"] and preds[2]["top"] == preds[3]["top"]


def test_any_size_goes_through_the_evaluation_transform(prepared_tiny: Path, tmp_path: Path, monkeypatch) -> None:
    from stages.lib.data.transforms import eval_transform

    rng = np.random.default_rng(3)
    odd = {"wide.png": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)}
    odd["tall.png"] = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    files = [_png(tmp_path / name, img) for name, img in odd.items()]
    files += [_png(tmp_path / f"as32_{name}", eval_transform(img, 32)) for name, img in odd.items()]
    out = tmp_path / "p.json"
    assert _run(prepared_tiny, monkeypatch, *map(str, files), "--backend", "onnxruntime", "--output", str(out)) == 0
    preds = json.loads(out.read_text())["predictions"]
    assert preds[0]["top"] == preds[2]["top"] and preds[1]["top"] == preds[3]["top"]


@pytest.fixture(scope="module")
def bad_files(images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "notes.png").write_text("a text file named .png")
    (root / "empty.webp").write_bytes(b"")
    return {
        "truncated": root / "truncated.jpg",
        "text": root / "notes.png",
        "empty": root / "empty.webp",
        "good": _png(root / "good.png", images[2]),
    }


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("truncated", "not a readable image ("),  # then Pillow's words, e.g. (Truncated File Read)
        ("text", "not a readable image (not an image file, or a format Pillow cannot read)"),
        ("empty", "not a readable image (not an image file, or a format Pillow cannot read)"),
    ],
)
def test_a_bad_file_is_a_one_line_error_naming_it(prepared_tiny: Path, bad_files, bad: str, needle: str) -> None:
    args = [str(bad_files["good"]), str(bad_files[bad]), "--backend", "onnxruntime"]
    proc = run_stage("predict", args, prepared_tiny, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: predict: {bad_files[bad]}: {needle}")
    assert proc.stdout == ""  # nothing predicted


def test_skip_bad_reports_each_bad_file_and_predicts_the_others(
    prepared_tiny: Path, bad_files, tmp_path: Path, monkeypatch, capsys
) -> None:
    files = [str(bad_files[k]) for k in ("truncated", "good", "text", "empty")]
    js, cs = tmp_path / "p.json", tmp_path / "p.csv"
    proc = run_stage("predict", [*files, "--backend", "onnxruntime", "--skip-bad", "--output", str(js)], prepared_tiny)
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped: ")]
    assert [s.split(": ")[1] for s in skipped] == [files[0], files[2], files[3]]
    assert "error" not in proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [files[1]]
    record = json.loads(js.read_text())
    assert [p["file"] for p in record["predictions"]] == [files[1]]
    assert [(s["file"], s["error"].startswith(s["file"] + ": ")) for s in record["skipped"]] == [
        (files[0], True),
        (files[2], True),
        (files[3], True),
    ]
    assert _run(prepared_tiny, monkeypatch, *files, "--backend", "onnxruntime", "--skip-bad", "--output", str(cs)) == 0
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert [(r["file"], bool(r["error"]), bool(r["top1_class"])) for r in rows] == [
        (files[1], False, True),
        (files[0], True, False),
        (files[2], True, False),
        (files[3], True, False),
    ]


def test_skip_bad_with_nothing_readable_fails(prepared_tiny: Path, bad_files) -> None:
    args = [str(bad_files["text"]), "--backend", "onnxruntime", "--skip-bad"]
    proc = run_stage("predict", args, prepared_tiny, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: predict: none of the 1 file(s) is a readable image"


def test_missing_paths_and_empty_folders_are_one_line_errors(prepared_tiny: Path, tmp_path: Path) -> None:
    proc = run_stage("predict", [str(tmp_path / "nope.png"), "--backend", "onnxruntime"], prepared_tiny, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: predict: {tmp_path / 'nope.png'}: no such file or folder"]
    (tmp_path / "empty").mkdir()
    proc = run_stage("predict", [str(tmp_path / "empty"), "--backend", "onnxruntime"], prepared_tiny, check=False)
    assert proc.returncode == 1 and "no image files (.png .jpg" in proc.stderr.strip().splitlines()[0]


def _has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is importable here")
def test_default_backend_without_tensorrt_says_so_and_names_the_alternatives(prepared_tiny: Path, bad_files) -> None:
    proc = run_stage("predict", [str(bad_files["good"])], prepared_tiny, check=False, env={"TRT_PYTHON": ""})
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: predict: TensorRT is not importable in this interpreter")
    assert line.endswith("use --backend onnxruntime or --backend pytorch instead (--device cpu runs them on the CPU)")


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is importable here")
def test_tensorrt_runs_in_trt_python_whose_error_is_the_one_line(prepared_tiny: Path, bad_files) -> None:
    """With TRT_PYTHON set, the TensorRT part runs there (here: this interpreter, without
    TensorRT): its one-line error and exit code are the command's."""
    proc = run_stage(
        "predict", [str(bad_files["good"])], prepared_tiny, check=False, env={"TRT_PYTHON": sys.executable}
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: predict: TensorRT is not importable") and "--backend onnxruntime" in line


def test_console_script_runs_predict_main() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    entry = next(line for line in section.splitlines() if line.startswith("trt-predict"))
    module, func = entry.split("=", 1)[1].split("#")[0].strip().strip('"').split(":")
    assert (module, func) == ("stages.predict", "main")
    assert os.path.isfile(ROOT / "stages" / "predict.py")
    with pytest.raises(SystemExit) as exc:
        predict.main(["--help"])
    assert exc.value.code == 0
