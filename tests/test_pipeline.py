"""The DVC pipeline end to end on synthetic data, in a temporary git repository.

The repository's own default configuration is the tiny synthetic CPU setup (tests/dvcrepo.py),
so `dvc repro` and `dvc exp run -S ...` compose it exactly as they would the real one. The
tests run in file order and share the repo:
first repro, a no-op repro, `-S precision=int8`, `-S train.epochs=2`, then the DVC views.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import TINY, compose
from tests.dvcrepo import Repo, make_tiny_repo, ran, unchanged

pytestmark = pytest.mark.slow

MODEL = "resnet18_cifar"
D = f"reports/{MODEL}"
# On top of TINY: fewer training images (this file trains three times), and a quality budget
# that a barely trained model on 128 test images always meets; these tests are about what DVC
# runs, the gate's arithmetic is tested in test_report.py.
EXTRA = ["train.subset=128", "quality.max_top1_drop=100.0"]
UPSTREAM = ["prepare", "train", "export", "calibrate"]
PER_PRECISION = ["build", "evaluate", "benchmark"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return make_tiny_repo(tmp_path_factory.mktemp("pipeline"), EXTRA)


@pytest.fixture(scope="module")
def stage_names(repo: Repo) -> list[str]:
    return repo.dvc("stage", "list", "--name-only").split()


@pytest.fixture(scope="module")
def first_repro(repo: Repo) -> str:
    return repo.dvc("repro")


def test_repo_default_is_the_tiny_setup(repo: Repo) -> None:
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    assert params == compose([*TINY, *EXTRA])
    assert params["data"]["source"] == "synthetic" and params["device"] == "cpu"


def test_first_repro_runs_every_stage(repo: Repo, stage_names: list[str], first_repro: str) -> None:
    assert sorted(ran(first_repro)) == sorted(stage_names)
    assert len(stage_names) == 21
    assert ran(first_repro)[0] == "validate"
    assert unchanged(first_repro) == []
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(stage_names)


def test_first_repro_writes_the_report(repo: Repo, first_repro: str) -> None:
    md = (repo.path / D / "summary.md").read_text()
    assert md.startswith(f"# {MODEL}: results")
    assert "> **SYNTHETIC DATA**" in md
    assert "profile cpu, no CUDA GPU, no TensorRT" in md
    skipped = md.split("## Skipped or not run", 1)[1].split("\n## ", 1)[0]
    not_run = {}  # '- **status**: reason (a, b, ...)' -> {a: (status, reason), ...}
    for line in skipped.splitlines():
        m = re.match(r"- \*\*(\S+)\*\*: (.*) \(([^()]*)\)$", line)
        if m:
            not_run.update({where: (m.group(1), m.group(2)) for where in m.group(3).split(", ")})
    for prec in ("FP32", "FP16", "INT8"):
        assert not_run[f"build TensorRT {prec}"][0] == "skipped", prec
        assert not_run[f"evaluate tensorrt {prec}"][0] == "skipped", prec
        assert not_run[f"evaluate tensorrt {prec}"][1].startswith("TensorRT"), prec
        assert not_run[f"benchmark tensorrt {prec}"][1].startswith("TensorRT"), prec
    for backend in ("pytorch", "onnxruntime"):
        status, reason = not_run[f"evaluate {backend} FP16"]
        assert status == "skipped" and re.search("CUDA|cuda", reason), backend
    assert "| onnxruntime | INT8 |" in md and "| pytorch | FP32 |" in md

    metrics = repo.json(f"{D}/metrics.json")
    assert metrics["synthetic_data"] is True
    for key in (
        "pytorch_fp32_top1",
        "onnxruntime_fp32_top1",
        "onnxruntime_int8_top1",
        "train_test_top1",
        "onnxruntime_int8_compute_bs1_latency_ms_p50",
    ):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["pytorch_fp32_top1"] == pytest.approx(metrics["train_test_top1"], abs=0.01)
    assert not any(isinstance(v, (dict, list)) for v in metrics.values())

    plots = sorted(p.name for p in (repo.path / D / "plots").glob("*.png"))
    assert plots == ["accuracy.png", "latency.png", "speedup.png", "throughput.png", "training.png"]
    for name in plots:
        assert (repo.path / D / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for prec in ("fp32", "fp16", "int8"):
        ev = repo.json(f"{D}/eval/{prec}.json")
        bench = repo.json(f"{D}/bench/{prec}.json")
        build = repo.json(f"{D}/build/{prec}.json")
        assert ev["precision"] == prec and ev["synthetic_data"] is True
        assert ev["tensorrt"]["status"] == "skipped" and bench["tensorrt"]["status"] == "skipped"
        assert build["status"] == "skipped" and build["reason"]
        assert (repo.path / D / "eval" / f"{prec}_detail.json").is_file()
        assert (repo.path / D / "bench" / f"{prec}.csv").is_file()
    assert repo.json(f"{D}/eval/fp32.json")["onnxruntime"]["top1_agreement_vs_ort_fp32"] == 1.0
    assert repo.json(f"{D}/eval/int8.json")["onnxruntime"]["status"] == "ok"
    assert repo.json(f"{D}/bench/fp32.json")["pytorch"]["status"] == "ok"

    gate = repo.json(f"{D}/gate.json")
    assert gate["passed"] is True and gate["failed"] == 0 and gate["checks"] >= 3

    package = repo.json(f"{D}/package.json")
    assert sorted(m["name"] for m in package["models"] if m["status"] == "packaged") == [
        f"{MODEL}_fp32_onnx",
        f"{MODEL}_int8_onnx",
    ]
    repository = repo.path / "artifacts" / MODEL / "model_repository"
    assert sorted(p.name for p in repository.iterdir()) == [f"{MODEL}_fp32_onnx", f"{MODEL}_int8_onnx"]
    for prec in ("fp32", "fp16", "int8"):
        served = repo.json(f"{D}/serve/{prec}.json")
        assert {served[b]["status"] for b in ("tensorrt", "onnxruntime")} == {"skipped"}
        assert "SERVE_PYTHON" in served["onnxruntime"]["reason"]

    train = repo.json(f"{D}/train.json")
    assert train["epochs"] == 1 and train["train_images"] == 128 and train["synthetic_data"] is True
    for out in (
        "checkpoint.pt",
        "onnx/fp32.onnx",
        "onnx/fp16.onnx",
        "onnx/int8.onnx",
        "reference_logits.npy",
        "calibration/ranges.json",
    ):
        assert (repo.path / "artifacts" / MODEL / out).is_file(), out


def test_second_repro_runs_nothing(repo: Repo, stage_names: list[str], first_repro: str) -> None:
    out = repo.dvc("repro")
    # probe is always_changed (it fingerprints the machine); its output is identical, so
    # nothing downstream runs
    assert ran(out) == ["probe"]
    assert sorted(unchanged(out)) == sorted(set(stage_names) - {"probe"})


def test_exp_run_precision_int8_reruns_only_what_depends_on_it(repo: Repo, first_repro: str) -> None:
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "first repro")
    out = repo.dvc("exp", "run", "-S", "precision=int8")
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    assert params["precisions"] == ["int8"]

    # package reads the precisions
    assert sorted(ran(out)) == ["gate", "package", "probe", "report", "validate"]
    skipped = set(unchanged(out))
    assert {"build@int8", "evaluate@int8", "benchmark@int8", "serve@int8", *UPSTREAM} <= skipped
    for name in ("build@fp32", "evaluate@fp16", "benchmark@fp32"):  # not in this pipeline at all
        assert name not in out

    md = (repo.path / D / "summary.md").read_text()
    assert "- Precisions: int8;" in md
    metrics = repo.json(f"{D}/metrics.json")
    assert "onnxruntime_int8_top1" in metrics
    assert not [k for k in metrics if "_fp32_" in k or "_fp16_" in k]
    assert repo.json(f"{D}/gate.json")["passed"] is True


def test_exp_run_more_epochs_reruns_train_and_everything_downstream(repo: Repo, stage_names: list[str]) -> None:
    repo.git("checkout", "--", ".")  # back to the committed baseline (all precisions)
    out = repo.dvc("exp", "run", "-S", "train.epochs=2")
    assert yaml.safe_load((repo.path / "params.yaml").read_text())["train"]["epochs"] == 2
    expected = set(stage_names) - {"prepare"}
    assert set(ran(out)) == expected
    assert unchanged(out) == ["prepare"]
    assert ran(out).index("train") < ran(out).index("export") < ran(out).index("calibrate")
    assert ran(out)[-2:] == ["report", "gate"]

    train = repo.json(f"{D}/train.json")
    assert train["epochs"] == 2
    history = (repo.path / D / "train_history.csv").read_text().strip().splitlines()
    assert history[0].startswith("epoch,") and [r.split(",")[0] for r in history[1:]] == ["1", "2"]
    assert "2 epochs on 128 images" in (repo.path / D / "summary.md").read_text()


def test_dvc_views_show_the_metrics(repo: Repo) -> None:
    md = repo.dvc("exp", "show", "--md")
    assert "test_top1" in md and "train.epochs" in md
    exps = json.loads(repo.dvc("exp", "show", "--json"))
    names = [e["name"] for c in exps for exp in (c.get("experiments") or []) for e in exp["revs"]]
    assert len(names) == 2, exps  # the int8 and the 2-epoch experiment

    shown = repo.dvc("metrics", "show")
    assert "test_top1" in shown and "reports/resnet18_cifar/metrics.json" in shown

    shown_json = json.loads(repo.dvc("metrics", "show", "--json"))
    assert shown_json, "dvc metrics show --json is empty"

    diff = repo.dvc("metrics", "diff", "--all")
    assert "test_top1" in diff and "HEAD" in diff and "workspace" in diff
    assert re.search(r"train\.json\s+epochs\s+1\s+2", diff), diff

    repo.dvc("plots", "show")
    html = (repo.path / "dvc_plots" / "index.html").read_text()
    assert "test_top1" in html and "train_loss" in html
    assert "accuracy.png" in html
    repo.dvc("plots", "diff", "HEAD")
    assert "test_top1" in (repo.path / "dvc_plots" / "index.html").read_text()


# -- what a change reruns, and what a bad value leaves alone ----------------------------------


def _fingerprints(repo: Repo, rels: list[str]) -> dict[str, str]:
    """sha256 of every file under each path (DVC may re-link a cached file; its content stays)."""
    import hashlib

    out = {}
    for rel in rels:
        root = repo.path / rel
        for f in [root] if root.is_file() else sorted(root.rglob("*")):
            if f.is_file():
                out[str(f.relative_to(repo.path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochs=-1", "train.epochs: must be >= 0, got -1"),
        ("data.calib_size=999999", "data.calib_size: 999999 exceeds the 1024 training images"),
    ],
)
def test_a_bad_value_fails_first_and_leaves_every_output_in_place(repo: Repo, override: str, needle: str) -> None:
    outputs = ["data/prepared", f"artifacts/{MODEL}", D]
    before = _fingerprints(repo, outputs)
    assert f"artifacts/{MODEL}/checkpoint.pt" in before and "data/prepared/train.npz" in before
    params = (repo.path / "params.yaml").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", override],
        cwd=repo.path,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ran(out) == ["validate"], out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: validate: ") and needle in errors[0], out[-3000:]
    assert "decode" not in out  # nothing was loaded
    assert _fingerprints(repo, outputs) == before
    (repo.path / "params.yaml").write_text(params)


def test_editing_a_library_module_reruns_exactly_its_stages_and_what_they_feed(repo: Repo) -> None:
    """onnxgraph.py is imported by export (topological sort) and calibrate (Q/DQ placement):
    DVC sees both change and nothing else; a new Q/DQ node name changes int8.onnx only, so the
    INT8 stages, the model repository and the report rerun, and the FP32/FP16 ones do not."""
    assert "probe" in repo.dvc("status")  # always changed; otherwise the workspace is up to date
    assert not re.search(r"^(?!probe)\S+:$", repo.dvc("status"), re.M)
    module = repo.path / "stages" / "lib" / "onnxgraph.py"
    code = module.read_text()
    assert '_{tag}_Q"' in code
    module.write_text(code.replace('_{tag}_Q"', '_{tag}_quantize"'))
    status = repo.dvc("status")
    changed = set(re.findall(r"^(\S+):$", status, re.M))
    assert changed == {"export", "calibrate", "probe"}, status
    assert status.count("stages/lib/quant/onnxgraph.py") == 2

    out = repo.dvc("repro")
    int8 = {"build@int8", "evaluate@int8", "benchmark@int8"}
    # package holds every ONNX model; serve@int8 serves int8.onnx
    assert set(ran(out)) == {"probe", "export", "calibrate", *int8, "package", "serve@int8", "report", "gate"}
    assert {"train", "prepare", "build@fp32", "evaluate@fp16", "benchmark@fp32", "serve@fp32"} <= set(unchanged(out))
