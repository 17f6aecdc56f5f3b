"""A sweep's report, from `dvc exp show --json`: the params that vary, headline metrics,
every benchmark figure with the GPU it ran on, a throughput-vs-top-1 plot; and the
comparison of two runs of one grid (e.g. on one GPU and on N).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.errors import InputFileError
from ..core.gpus import columns
from ..core.io import atomic_path, read_json, write_csv, write_text

# The benchmark stage's headline figures per backend and precision (stages/benchmark.headline).
FIGURES = (
    "compute_bs1_latency_ms_p50",
    "compute_throughput_ips_max",
    "end_to_end_throughput_ips_max",
    "pipelined_throughput_ips_max",
    "concurrent_throughput_ips_max",
)
PLOT = "throughput_vs_top1.png"


def experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> {state, rev, timestamp, params, metrics} for every experiment in the output."""
    found = {}
    for commit in show:
        for exp in commit.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            data = rev.get("data") or {}
            executor = exp.get("executor") or {}
            state = executor.get("state") or ("failed" if rev.get("error") else "success")
            found[exp.get("name") or rev.get("name")] = {
                "state": state,
                "rev": rev.get("rev"),
                "timestamp": data.get("timestamp"),
                "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                "metrics": {path: f["data"] for path, f in (data.get("metrics") or {}).items() if "data" in f},
            }
    return found


@dataclass
class Point:
    name: str
    label: str
    state: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    flat: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.flat = _flatten(self.params)

    @property
    def model(self) -> str:
        return str((self.params.get("model") or {}).get("name"))

    def bench(self, prec: str) -> dict[str, Any]:
        return self.metrics.get(f"reports/{self.model}/bench/{prec}.json") or {}

    def top1(self, prec: str, backend: str) -> Any:
        return (self.metrics.get(f"reports/{self.model}/metrics.json") or {}).get(f"{backend}_{prec}_top1")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v)
    return out


def points(manifest: dict[str, Any], found: dict[str, dict[str, Any]]) -> list[Point]:
    out = []
    for p in manifest["points"]:
        exp = found.get(p["name"], {"state": "missing", "params": {}, "metrics": {}})
        out.append(Point(p["name"], p["label"], exp["state"], exp["params"], exp["metrics"]))
    return out


def varying(pts: list[Point]) -> list[str]:
    """The params whose values differ between the points (what `dvc exp show --only-changed` keeps)."""
    keys = sorted({k for p in pts for k in p.flat})
    return [k for k in keys if len({p.flat.get(k) for p in pts if p.params}) > 1]


def headline(p: Point, prec: str) -> dict[str, Any]:
    """TensorRT's best compute img/s and top-1 where TensorRT ran, else the fastest backend's."""
    ok = [
        (b, r)
        for b, r in p.bench(prec).items()
        if isinstance(r, dict) and r.get("status") == "ok" and r.get("compute_throughput_ips_max") is not None
    ]
    ok = [(b, r) for b, r in ok if p.top1(prec, b) is not None]
    if not ok:
        return {}
    trt = [(b, r) for b, r in ok if b == "tensorrt"]
    backend, rec = trt[0] if trt else max(ok, key=lambda br: float(br[1]["compute_throughput_ips_max"]))
    return {
        "backend": backend,
        "top1": p.top1(prec, backend),
        "throughput_ips": rec["compute_throughput_ips_max"],
        "throughput_batch": rec.get("compute_throughput_batch"),
        **columns(rec.get("gpu")),
    }


def point_rows(pts: list[Point]) -> list[dict[str, Any]]:
    """One row per point and precision: the params that vary and the headline metrics."""
    keys = varying(pts)
    rows = []
    for p in pts:
        for prec in p.params.get("precisions") or ["-"]:
            base = {"experiment": p.name, "state": p.state, "label": p.label, **{k: p.flat.get(k) for k in keys}}
            rows.append({**base, "precision": prec, **headline(p, prec)})
    return rows


def figure_rows(pts: list[Point]) -> list[dict[str, Any]]:
    """Every headline benchmark figure of every point, with the GPU it ran on."""
    rows = []
    for p in pts:
        for prec in p.params.get("precisions") or []:
            for backend, rec in p.bench(prec).items():
                if not (isinstance(rec, dict) and rec.get("status") == "ok"):
                    continue
                for fig in FIGURES:
                    if rec.get(fig) is not None:
                        rows.append(
                            {"experiment": p.name, "label": p.label, "precision": prec, "backend": backend}
                            | {"figure": fig, "value": rec[fig], **columns(rec.get("gpu"))}
                        )
    return rows


def plot(rows: list[dict[str, Any]], dest: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    many = len({r["precision"] for r in rows}) > 1
    for r in (r for r in rows if r.get("throughput_ips") is not None):
        x, y = float(r["top1"]), float(r["throughput_ips"])
        ax.scatter([x], [y], s=40)
        text = f"{r['label']} {r['precision'].upper()}" if many else r["label"]
        ax.annotate(f"{text}\n({r['backend']})", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.margins(0.2)  # room for the labels
    ax.set_xlabel("top-1 % (test split)")
    ax.set_ylabel("images / s (best compute throughput)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    def cell(v: Any) -> str:
        if v is None or v == "":
            return "-"
        return f"{v:,.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")

    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows
    ]


def _where(manifest: dict[str, Any]) -> str:
    gpus = manifest.get("gpus") or []
    if not gpus:
        return "no GPU (the CPU)"
    return ", ".join(f"GPU {g['index']} {g['name']}" for g in gpus)


def summary(manifest: dict[str, Any], rows: list[dict[str, Any]], keys: list[str]) -> str:
    states = manifest.get("states") or {}
    counts = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
    wall = manifest.get("wall_s")
    lines = [
        f"# {manifest['name']}: {len(manifest['points'])} experiments",
        "",
        "- Grid: " + " ".join(f"`{g}`" for g in manifest["grid"]) + f" (baseline `{manifest['baseline'][:7]}`)",
        f"- Ran {manifest['jobs']} at a time (`dvc queue start -j {manifest['jobs']}`) on {_where(manifest)}; "
        f"at most {manifest.get('max_running', '?')} seen running at once",
        f"- Wall time: {wall} s from the queue's start to the last experiment's end" if wall else "- Wall time: -",
        "- States: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "not waited for"),
        "",
        "## Experiments (the params that vary, headline metrics)",
        "",
        "img/s: TensorRT's best compute throughput where TensorRT ran, else the fastest backend that "
        "has a top-1; GPU: where that benchmark ran.",
        "",
    ]
    cols = ["experiment", "state", *keys, "precision", "backend", "top1", "throughput_ips", "throughput_batch", "gpu"]
    lines += _table(rows, cols)
    lines += ["", f"![throughput vs top-1]({PLOT})", "", "Every benchmark figure, with its GPU: `figures.csv`."]
    return "\n".join(lines) + "\n"


def write_report(manifest: dict[str, Any], found: dict[str, dict[str, Any]], out_dir: Path) -> None:
    pts = points(manifest, found)
    rows = point_rows(pts)
    write_csv(out_dir / "points.csv", rows)
    write_csv(out_dir / "figures.csv", figure_rows(pts) or [{"experiment": None}])
    when = datetime.fromtimestamp(manifest.get("started_at") or 0).strftime("%Y-%m-%d %H:%M")
    plot(rows, out_dir / PLOT, f"{manifest['name']} ({when}): throughput vs top-1, {_where(manifest)}")
    write_text(out_dir / "summary.md", summary(manifest, rows, varying(pts)))


KEYS = ["label", "precision", "backend", "figure"]  # what matches a figure across two runs


def _gpu_text(row: dict[str, str]) -> str:
    """The GPU as "NVIDIA H200 #1" (nvidia-smi's index), or "cpu"."""
    return f"{row['gpu']} #{row['gpu_index']}" if row.get("gpu_index") not in (None, "") else str(row.get("gpu"))


def _figures(path: Path) -> pd.DataFrame:
    """A figures.csv as (KEYS, value, gpu) rows; a report without figures has none."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "figure" not in df.columns:
        return pd.DataFrame(columns=[*KEYS, "value", "gpu"])
    df = df[df["figure"] != ""]
    df = df.assign(value=df["value"].astype(float), gpu=[_gpu_text(r) for r in df.to_dict("records")])
    return df.drop_duplicates(KEYS, keep="last")[[*KEYS, "value", "gpu"]]


def compare(a: Path, b: Path, tolerance: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Figure by figure, run ``b`` against run ``a`` (matched by point label, precision,
    backend and figure), and the two wall times."""
    for folder in (a, b):
        if not (folder / "sweep.json").is_file() or not (folder / "figures.csv").is_file():
            raise InputFileError(f"{folder} lacks sweep.json or figures.csv: give two `stages.sweep report` folders")
    runs = {"a": read_json(a / "sweep.json"), "b": read_json(b / "sweep.json")}
    both = _figures(a / "figures.csv").merge(
        _figures(b / "figures.csv"), on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True
    )
    m = both[both["_merge"] == "both"].sort_values(KEYS)
    diff = ((m["value_b"] - m["value_a"]) / m["value_a"]).where(m["value_a"] != 0)
    table = m[KEYS].assign(a=m["value_a"], gpu_a=m["gpu_a"], b=m["value_b"], gpu_b=m["gpu_b"])
    table = table.assign(diff_pct=(100 * diff).round(2), within=diff.abs() <= tolerance)
    rows: list[dict[str, Any]] = table.to_dict("records")
    diffs = [abs(r["diff_pct"]) for r in rows]
    wall_a, wall_b = runs["a"].get("wall_s"), runs["b"].get("wall_s")
    facts = {
        "runs": runs,
        "speedup": round(wall_a / wall_b, 2) if wall_a and wall_b else None,
        "compared": len(rows),
        "unmatched": int((both["_merge"] != "both").sum()),
        "within": sum(bool(r["within"]) for r in rows),
        "median_abs_diff_pct": round(statistics.median(diffs), 2) if diffs else None,
        "max_abs_diff_pct": max(diffs) if diffs else None,
    }
    return rows, facts


def write_comparison(a: Path, b: Path, out: Path, tolerance: float) -> None:
    rows, f = compare(a, b, tolerance)
    ra, rb = f["runs"]["a"], f["runs"]["b"]
    lines = [
        f"# {rb['name']} against {ra['name']}",
        "",
        "| run | folder | experiments | at a time | GPUs | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for tag, run, folder in (("A", ra, a), ("B", rb, b)):
        lines.append(
            f"| {tag} | `{folder}` | {len(run['points'])} | {run['jobs']} | {_where(run)} | {run.get('wall_s', '-')} |"
        )
    lines += [
        "",
        f"- Speed-up of B over A (wall time A / B): **{f['speedup']}**, for {rb['jobs']} vs {ra['jobs']} at a time",
        f"- Benchmark figures compared: {f['compared']} ({f['unmatched']} in one run only); "
        f"{f['within']} within ±{100 * tolerance:g}%; median |B - A| {f['median_abs_diff_pct']}%, "
        f"max {f['max_abs_diff_pct']}%",
        "",
    ]
    lines += _table(rows, ["label", "precision", "backend", "figure", "a", "gpu_a", "b", "gpu_b", "diff_pct", "within"])
    write_csv(out / "compare.csv", rows or [{"label": None}])
    write_text(out / "compare.md", "\n".join(lines) + "\n")
