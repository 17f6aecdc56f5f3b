"""Measurements behind the README's "Bring your own model and data" figures.

memory: peak RSS of prepare, train (CPU) and evaluate (ONNX Runtime FP32) on a generated
    image folder of N images at 224x224 (JPEG; 80% train, 20% test, 10 classes).
prepare-speed: wall time of `prepare` on CIFAR-10 (an archive in a raw folder) for two
    checkouts of the project, alternated in one run, each run repeated.

    python tools/measure_byo.py memory --work /tmp/byo --images 20000
    python tools/measure_byo.py prepare-speed --raw DIR --before OLD_CHECKOUT --after . --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def compose(checkout: Path, dest: Path, overrides: list[str]) -> Path:
    """params.yaml for ``overrides`` from ``checkout``'s conf/, as `dvc exp run -S` composes it."""
    code = (
        "import sys; from dvc.utils.hydra import compose_and_dump as c; "
        "c(sys.argv[1], sys.argv[2], None, 'config', '', sys.argv[3:])"
    )
    subprocess.run([sys.executable, "-c", code, str(dest), str(checkout / "conf"), *overrides], check=True)
    return dest


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the largest process) of ``cmd``, in a fresh child."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); w = time.perf_counter() - t; "
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = dict(os.environ, PYTHONPATH=str(cwd))
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    wall, kib = out.stdout.split()[-2:]
    return float(wall), int(kib) / 1024


def make_folder(root: Path, n: int, size: int = 224, classes: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        split = "train" if (i // classes) % 5 else "test"
        cls = f"c{i % classes}"
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
        img.save(d / f"{i:06d}.jpg", quality=90)


def memory(args: argparse.Namespace) -> dict:
    work, here = args.work, Path.cwd()
    raw = work / "raw"
    if not raw.is_dir():
        make_folder(raw, args.images)
    overrides = [
        "profile=cpu", "data=folder", f"data.raw_dir={raw}", "model=mobilenet_v3_large",
        "model.arch=mobilenet_v3_small", "model.name=mobilenet_v3_small", "model.pretrained=false",
        f"train.subset={args.train_subset}", "train.batch_size=32", "backends=[onnxruntime]",
        "export.parity_images=64", "export.reference_images=256",
    ]  # fmt: skip
    params = compose(here, work / "params.yaml", overrides)
    m = work / "artifacts"
    steps = {
        "prepare": ["-m", "stages.prepare", "--params", str(params), "--out", str(work / "prepared")],
        "train": ["-m", "stages.train", "--params", str(params), "--data", str(work / "prepared"),
                  "--checkpoint", str(m / "checkpoint.pt"), "--metrics", str(m / "train.json"),
                  "--history", str(m / "history.csv")],
        "export": ["-m", "stages.export", "--params", str(params), "--checkpoint", str(m / "checkpoint.pt"),
                   "--test", str(work / "prepared" / "test.npz"), "--out-dir", str(m / "onnx"),
                   "--reference", str(m / "reference.npy"), "--report", str(m / "export.json")],
        "evaluate": ["-m", "stages.evaluate", "--params", str(params), "--precision", "fp32",
                     "--test", str(work / "prepared" / "test.npz"), "--reference", str(m / "reference.npy"),
                     "--checkpoint", str(m / "checkpoint.pt"), "--onnx", str(m / "onnx" / "fp32.onnx"),
                     "--engine-dir", str(m / "engines"), "--out", str(m / "eval.json"),
                     "--detail", str(m / "eval_detail.json")],
    }  # fmt: skip
    result: dict = {"images": args.images, "train_subset": args.train_subset, "steps": {}}
    for name, cmd in steps.items():
        if name not in args.steps:
            continue
        wall, rss = run_measured([sys.executable, *cmd], here)
        result["steps"][name] = {"wall_s": round(wall, 1), "peak_rss_mib": round(rss)}
        print(name, result["steps"][name], flush=True)
    result["prepared_bytes"] = sum(f.stat().st_size for f in (work / "prepared").glob("*.npz"))
    return result


def prepare_speed(args: argparse.Namespace) -> dict:
    runs: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.repeat):
        for label, checkout in (("before", args.before), ("after", args.after)):
            checkout = checkout.resolve()
            params = compose(checkout, args.work / f"params-{label}.yaml", [f"data.raw_dir={args.raw}"])
            out = args.work / f"prepared-{label}"
            wall, _ = run_measured(
                [sys.executable, "-m", "stages.prepare", "--params", str(params), "--out", str(out)], checkout
            )
            runs[label].append(round(wall, 2))
            print(label, wall, flush=True)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    return {"runs_s": runs, "median_s": med, "after_vs_before": round(med["after"] / med["before"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--work", type=Path, required=True)
    m.add_argument("--images", type=int, default=20000)
    m.add_argument("--train-subset", type=int, default=1024)
    m.add_argument("--steps", default="prepare,train,export,evaluate", help="comma-separated")
    s = sub.add_parser("prepare-speed")
    s.add_argument("--raw", type=Path, required=True)
    s.add_argument("--before", type=Path, required=True)
    s.add_argument("--after", type=Path, required=True)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--work", type=Path, default=Path("/tmp/prepare-speed"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = memory(args) if args.what == "memory" else prepare_speed(args)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    result["started"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
