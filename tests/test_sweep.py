"""Sweeps on DVC's queue (stages/sweep.py) and a shared DVC remote.

Fast tests: the grid, the report and the comparison from stand-in `dvc exp show` output.
Slow tests (a tiny synthetic CPU pipeline in a temporary git repo, tests/dvcrepo.py): a clone
that pulls from a local-directory remote reruns only the probe, and a grid of two points
runs two experiments at once on the queue without either's outputs reaching the other.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from stages import sweep
from stages.lib.core.errors import InputFileError, ParamsError, SweepError
from stages.lib.core.io import write_json
from stages.lib.sweep import compare as sweeps
from stages.lib.sweep import grid
from tests.dvcrepo import Repo, make_tiny_repo, ran, unchanged

MODEL = "resnet18_cifar"
D = f"reports/{MODEL}"
RAW = "data/raw/archive.tar.gz"  # ignored by git, like the CIFAR-10 archive
# As in test_pipeline.py, with INT8 alone and two backends: these tests are about what DVC runs.
EXTRA = ["train.subset=128", "quality.max_top1_drop=100.0", "backends=[pytorch,onnxruntime]", "precisions=[int8]"]

# -- the grid ------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_of_comma_lists() -> None:
    groups = grid.parse_grid(["calibrate.method=minmax,entropy", "precision=int8,fp16", "train.epochs=3"])
    assert grid.grid_points(groups) == [
        ["calibrate.method=minmax", "precision=int8", "train.epochs=3"],
        ["calibrate.method=minmax", "precision=fp16", "train.epochs=3"],
        ["calibrate.method=entropy", "precision=int8", "train.epochs=3"],
        ["calibrate.method=entropy", "precision=fp16", "train.epochs=3"],
    ]


def test_commas_inside_brackets_and_quotes_do_not_split() -> None:
    assert grid.split_values("[1,4],[8],'a,b',{x: 1, y: 2}") == ["[1,4]", "[8]", "'a,b'", "{x: 1, y: 2}"]
    groups = grid.parse_grid(["bench.batch_sizes=[1,4],[8]"])
    assert grid.grid_points(groups) == [["bench.batch_sizes=[1,4]"], ["bench.batch_sizes=[8]"]]


def test_a_bad_grid_names_every_mistake() -> None:
    with pytest.raises(ParamsError) as err:
        grid.parse_grid(["precision", "a=1,", "b=1", "b=2"])
    assert len(err.value.problems) == 3
    assert "the sweep grid" in str(err.value) and "b is given twice" in str(err.value)


def test_jobs_default_to_one_per_gpu_or_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.lib.core.gpus import parse_smi_list

    two = parse_smi_list("GPU 0: A (UUID: GPU-aa)\nGPU 1: A (UUID: GPU-bb)\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sweep, "host_gpus", lambda: two)
    assert sweep.default_jobs() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert sweep.default_jobs() == 1
    monkeypatch.setattr(sweep, "host_gpus", lambda: [])
    assert sweep.default_jobs() == 1


# -- the report, from stand-in `dvc exp show --json` output ---------------------------------

H200 = {"name": "NVIDIA H200", "index": 1, "uuid": "GPU-ffee"}
CPU = {"name": "cpu", "index": None, "uuid": None}


def _bench(backend: str, ips: float, gpu: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rec = {"status": "ok", "compute_throughput_ips_max": ips, "compute_throughput_batch": 256, "gpu": gpu}
    return {backend: {**rec, "compute_bs1_latency_ms_p50": 1000.0 / ips, **extra}}


def _exp(name: str, method: str, benches: dict[str, dict[str, Any]], top1: dict[str, float], state: str) -> Any:
    metrics = {f"{D}/metrics.json": {"data": top1}}
    metrics.update({f"{D}/bench/{prec}.json": {"data": {"precision": prec, **b}} for prec, b in benches.items()})
    params = {"model": {"name": MODEL}, "precisions": sorted(benches), "calibrate": {"method": method, "x": 1}}
    rev = {"rev": f"rev-{name}", "name": name, "error": None}
    rev["data"] = {"timestamp": "2026-12-01T10:00:05", "params": {"params.yaml": {"data": params}}, "metrics": metrics}
    return {"name": name, "executor": {"state": state}, "revs": [rev]}


def _show() -> list[dict[str, Any]]:
    a = _exp(
        "s-1",
        "minmax",
        {"int8": {**_bench("tensorrt", 90000.0, H200), **_bench("onnxruntime", 99000.0, H200)}},
        {"tensorrt_int8_top1": 93.0, "onnxruntime_int8_top1": 93.1},
        "success",
    )
    b = _exp(
        "s-2",
        "entropy",
        {"int8": {**_bench("onnxruntime", 20.0, CPU), **_bench("pytorch", 30.0, CPU)}},
        {"onnxruntime_int8_top1": 92.0},  # pytorch has no top-1 here: not a headline candidate
        "success",
    )
    return [{"rev": "workspace", "experiments": None}, {"rev": "base", "experiments": [a, b]}]


def _manifest(jobs: int, wall: float) -> dict[str, Any]:
    pts = [
        {"name": "s-1", "overrides": ["calibrate.method=minmax"], "label": "calibrate.method=minmax"},
        {"name": "s-2", "overrides": ["calibrate.method=entropy"], "label": "calibrate.method=entropy"},
        {"name": "s-3", "overrides": ["calibrate.method=percentile"], "label": "calibrate.method=percentile"},
    ]
    return {
        "name": f"s-{jobs}gpu",
        "baseline": "base0123456",
        "grid": ["calibrate.method=minmax,entropy,percentile"],
        "jobs": jobs,
        "gpus": [H200] * jobs,
        "points": pts,
        "started_at": 1.0,
        "wall_s": wall,
        "states": {"s-1": "success", "s-2": "success", "s-3": "missing"},
    }


def test_exp_show_output_becomes_one_row_per_point_and_precision() -> None:
    found = sweeps.experiments(_show())
    assert found["s-1"]["state"] == "success" and found["s-2"]["params"]["calibrate"]["method"] == "entropy"
    rows = sweeps.point_rows(sweeps.points(_manifest(1, 10.0), found))
    by_exp = {r["experiment"]: r for r in rows}
    assert by_exp["s-1"]["backend"] == "tensorrt"  # TensorRT where it ran, even if another is faster
    assert by_exp["s-1"]["throughput_ips"] == 90000.0 and by_exp["s-1"]["top1"] == 93.0
    assert by_exp["s-1"]["gpu"] == "NVIDIA H200" and by_exp["s-1"]["gpu_index"] == 1
    assert by_exp["s-2"]["backend"] == "onnxruntime" and by_exp["s-2"]["gpu"] == "cpu"
    assert by_exp["s-2"]["calibrate.method"] == "entropy" and "calibrate.x" not in by_exp["s-2"]  # only what varies
    assert by_exp["s-3"]["state"] == "missing" and "backend" not in by_exp["s-3"]


def test_report_writes_the_table_the_figures_and_the_plot(tmp_path: Path) -> None:
    sweeps.write_report(_manifest(2, 12.5), sweeps.experiments(_show()), tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "| experiment | state | calibrate.method | precision | backend | top1 |" in md
    assert "| s-1 | success | minmax | int8 | tensorrt | 93 | 9e+04 | 256 | NVIDIA H200 |" in md
    assert "Wall time: 12.5 s" in md and "2 at a time" in md and "1 missing, 2 success" in md
    figures = (tmp_path / "figures.csv").read_text().splitlines()
    assert figures[0] == "experiment,label,precision,backend,figure,value,gpu,gpu_index,gpu_uuid"
    trt = "s-1,calibrate.method=minmax,int8,tensorrt"
    assert f"{trt},compute_throughput_ips_max,90000.0,NVIDIA H200,1,GPU-ffee" in figures
    assert len(figures) == 1 + 4 * 2  # 4 backend records x 2 figures each
    assert (tmp_path / sweeps.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_gives_the_speedup_and_each_figures_difference(tmp_path: Path) -> None:
    one, four = tmp_path / "one", tmp_path / "four"
    with pytest.raises(InputFileError, match="stages.sweep report"):
        sweeps.compare(one, four, tolerance=0.05)
    write_json(one / "sweep.json", _manifest(1, 400.0))
    sweeps.write_report(_manifest(1, 400.0), sweeps.experiments(_show()), one)
    show = _show()
    trt = show[1]["experiments"][0]["revs"][0]["data"]["metrics"][f"{D}/bench/int8.json"]["data"]["tensorrt"]
    trt["compute_throughput_ips_max"] = 99000.0  # 10% faster in the second run
    write_json(four / "sweep.json", _manifest(4, 105.0))
    sweeps.write_report(_manifest(4, 105.0), sweeps.experiments(show), four)
    rows, facts = sweeps.compare(one, four, tolerance=0.05)
    assert facts["speedup"] == pytest.approx(400.0 / 105.0, abs=0.01)
    assert facts["compared"] == 8 and facts["unmatched"] == 0 and facts["within"] == 7
    slow = [r for r in rows if not r["within"]]
    assert [(r["backend"], r["figure"], r["diff_pct"]) for r in slow] == [
        ("tensorrt", "compute_throughput_ips_max", 10.0)
    ]
    sweeps.write_comparison(one, four, tmp_path / "cmp", 0.05)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**3.81**" in md and "7 within ±5%" in md and "max 10.0%" in md


def _shown(*states: str | None) -> str:
    """`dvc exp show --json` output with experiments s-1, s-2 in these states (None: absent)."""
    show = _show()
    exps = show[1]["experiments"]
    for exp, state in zip(exps, states, strict=True):
        exp["executor"]["state"] = state
    show[1]["experiments"] = [e for e in exps if e["executor"]["state"]]
    return json.dumps(show)


def test_wait_follows_the_queue_through_hiccups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`dvc exp show` fails while a worker sets up a workspace, and an experiment can drop out
    of its output for a moment; neither ends the wait, and the peak concurrency is recorded."""
    looks = iter(
        [SweepError("directory .dvc/tmp/exps/tmpx/.dvc does not exist"), _shown("queued", "queued")]
        + [_shown("running", "running"), _shown("running", None), _shown("success", "running")]
        + [_shown("success", "success")]
    )

    def fake_dvc(*args: str) -> str:
        assert args[:4] == ("exp", "show", "--json", "--rev")
        look = next(looks)
        if isinstance(look, Exception):
            raise look
        return look

    monkeypatch.setattr(sweep, "dvc", fake_dvc)
    manifest = _manifest(2, 0.0)
    manifest["points"] = manifest["points"][:2]
    manifest["started_at"] = datetime(2026, 12, 1, 10, 0, 0).timestamp()
    write_json(tmp_path / "sweep.json", manifest)
    done = sweep.wait(tmp_path / "sweep.json", timeout=60, poll=0)
    assert done["max_running"] == 2 and done["states"] == {"s-1": "success", "s-2": "success"}
    assert done["wall_s"] == 5.0  # to the last experiment's commit time, 10:00:05
    assert json.loads((tmp_path / "sweep.json").read_text())["wall_s"] == 5.0


def test_wait_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sweep, "dvc", lambda *args: _shown("running", "queued"))
    manifest = _manifest(2, 0.0)
    manifest["points"] = manifest["points"][:2]
    write_json(tmp_path / "sweep.json", manifest)
    with pytest.raises(SweepError, match=r"still running after 0 s \(1 queued, 1 running\).*dvc queue stop --kill"):
        sweep.wait(tmp_path / "sweep.json", timeout=0.01, poll=0.02)


def test_wait_gives_up_when_no_worker_starts_an_experiment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_dvc(*args: str) -> str:
        calls.append(args)
        return "No experiments in task queue for now." if args[0] == "queue" else _shown("queued", "queued")

    monkeypatch.setattr(sweep, "dvc", fake_dvc)
    manifest = _manifest(2, 0.0)
    manifest["points"] = manifest["points"][:2]
    write_json(tmp_path / "sweep.json", manifest)
    with pytest.raises(SweepError, match=r"no experiment has started 0 s after .*No experiments in task queue"):
        sweep.wait(tmp_path / "sweep.json", timeout=60, poll=0.01, start_timeout=0.02)
    assert ("queue", "status") in calls
    # one running experiment is a start: then only the overall timeout ends the wait
    monkeypatch.setattr(sweep, "dvc", lambda *args: _shown("running", "queued"))
    with pytest.raises(SweepError, match="still running after"):
        sweep.wait(tmp_path / "sweep.json", timeout=0.1, poll=0.01, start_timeout=0.02)


# -- DVC end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """The tiny pipeline, reproduced once and committed: the baseline every test starts from.
    Its data/raw holds a file git ignores, as a real dataset archive is."""
    root = tmp_path_factory.mktemp("sweep")
    repo = make_tiny_repo(root / "repo", EXTRA, env={"PIPELINE_LOCK_DIR": str(root / "gpu-locks")})
    (repo.path / ".gitignore").write_text(f"/{RAW}\n")
    (repo.path / RAW).write_bytes(b"a dataset archive stand-in")
    repo.dvc("repro")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "reproduced")
    return repo


@pytest.mark.slow
def test_a_fresh_clone_pulls_from_the_remote_and_reruns_only_the_probe(base: Repo, tmp_path: Path) -> None:
    """The shared cache: push from one clone, pull into a fresh one, and `dvc repro` there
    reruns only the always-run probe. On the CPU profile the engines are "skipped" records,
    but they are cached, pushed and pulled like real engines; and as for real engines, a
    different fingerprint (another GPU model or TensorRT version) marks every build stale."""
    base.dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"))
    base.git("commit", "-q", "-m", "shared remote", ".dvc/config")
    assert "pushed" in base.dvc("push")

    clone = Repo(tmp_path / "clone", base.env)
    Repo(tmp_path, base.env).git("clone", "-q", str(base.path), str(clone.path))
    assert not (clone.path / "artifacts" / MODEL / "checkpoint.pt").exists()
    (clone.path / RAW).write_bytes((base.path / RAW).read_bytes())  # the dataset, on every machine
    clone.dvc("pull")
    for out in ("checkpoint.pt", "onnx/int8.onnx", "calibration/ranges.json", "engines/int8/build.json"):
        assert (clone.path / "artifacts" / MODEL / out).is_file(), out
    out = clone.dvc("repro")
    assert ran(out) == ["probe"]
    assert "train" in unchanged(out) and "build@int8" in unchanged(out)

    fp_path = clone.path / "artifacts" / "fingerprint.json"
    fp = json.loads(fp_path.read_text())
    write_json(fp_path, {**fp, "gpu": "NVIDIA H200", "compute_capability": "9.0", "tensorrt": "10.16.0"})
    stale = json.loads(clone.dvc("status", "--json"))
    fingerprint_changed = {  # stages whose deps changed with the fingerprint (probe: its output)
        stage
        for stage, why in stale.items()
        for w in why
        if isinstance(w, dict) and "artifacts/fingerprint.json" in w.get("changed deps", {})
    }
    assert fingerprint_changed == {"build@int8", "report"}  # the report names the GPU


@contextlib.contextmanager
def _queue_stopped(repo: Repo) -> Iterator[None]:
    """Stop the queue's workers and experiments afterwards, whatever happened."""
    try:
        yield
    finally:
        repo.dvc("queue", "stop", "--kill", check=False, timeout=120)
        for proc in psutil.process_iter(["pid", "cmdline"]):  # anything left that runs in the repo
            with contextlib.suppress(psutil.Error):
                if str(repo.path) in " ".join(proc.info["cmdline"] or []) or str(repo.path) in proc.cwd():
                    proc.kill()


@pytest.mark.slow
def test_two_workers_run_two_experiments_that_keep_their_own_outputs(base: Repo) -> None:
    grid = ["calibrate.method=percentile,entropy", "calibrate.min_agreement=0.0"]  # no fallback: each keeps its method
    with _queue_stopped(base):
        args = ["run", *grid, "--jobs", "2", "--poll", "2", "--timeout", "900"]
        out = base.run(sys.executable, "-m", "stages.sweep", *args, timeout=1200)
    manifest = base.json("reports/sweep/sweep.json")
    assert manifest["jobs"] == 2 and manifest["max_running"] == 2, out  # both ran at once
    assert manifest["copied"] == [RAW]  # the dataset git ignores: prepare and train stay done
    assert set(manifest["states"].values()) == {"success"}, out
    names = {p["label"]: p["name"] for p in manifest["points"]}
    assert set(names) == {"calibrate.method=percentile", "calibrate.method=entropy"}

    shown = base.dvc("exp", "show", "--md")
    assert all(name in shown for name in names.values())
    found = sweeps.experiments(json.loads(base.dvc("exp", "show", "--json")))
    for label, name in names.items():
        log = base.dvc("queue", "logs", name)
        assert "calibrate" in ran(log) and not {"prepare", "train"} & set(ran(log)), log[-3000:]
        method = label.split("=")[1]
        exp = found[name]
        assert exp["state"] == "success"
        assert exp["params"]["calibrate"]["method"] == method
        assert exp["metrics"][f"{D}/calibrate.json"]["method"] == method
        assert exp["metrics"][f"{D}/bench/int8.json"]["onnxruntime"]["gpu"]["name"] == "cpu"
        params = yaml.safe_load(base.run("git", "show", f"{exp['rev']}:params.yaml"))
        assert params["calibrate"]["method"] == method
        summary = base.run("git", "show", f"{exp['rev']}:{D}/summary.md")
        assert f"INT8: explicit quantization, {method} calibration" in summary

    rows = (base.path / "reports/sweep/points.csv").read_text().splitlines()
    int8 = [r for r in rows if ",int8," in r]
    assert len(int8) == 2 and all(r.split(",")[0] == names[r.split(",")[2]] for r in int8)
    assert (base.path / "reports/sweep" / sweeps.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((base.path / "params.yaml").read_text())["calibrate"]["method"] == "minmax"  # untouched


def test_experiments_get_what_git_does_not_track_of_the_raw_dataset_and_the_paths_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scmrepo.git import Git

    monkeypatch.chdir(tmp_path)
    Git.init(".")
    Path(".gitignore").write_text("/raw/archive.tar.gz\n/raw/batches/\n/extra/\n")
    Path("params.yaml").write_text(yaml.safe_dump({"data": {"raw_dir": "raw"}}))
    for rel in ("raw/README.md", "raw/archive.tar.gz", "raw/batches/b1", "extra/x"):
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        Path(rel).write_text(rel)
    Git(".").add(["raw/README.md", ".gitignore", "params.yaml"])
    Git(".").commit("tracked")
    assert sweep.copy_paths(["extra", "missing", "raw"]) == ["raw/archive.tar.gz", "raw/batches", "extra"]
    assert sweep.copy_paths([], Path("none.yaml")) == []
