"""sweep: a grid of experiments on DVC's own queue, one GPU each, and one report comparing them.

    python -m stages.sweep queue "calibrate.method=minmax,entropy" "precision=int8,fp16" --jobs 2
    python -m stages.sweep wait              # until every point has finished
    python -m stages.sweep report            # reports/sweep/: summary.md, points.csv, figures.csv, a PNG
    python -m stages.sweep run GRID...       # the three in a row (`make sweep GRID=... JOBS=N`)
    python -m stages.sweep compare A B --out C   # two runs of one grid: wall times, figures

Each grid argument is a Hydra override whose value may be a comma list (Hydra's multirun
syntax; commas inside [...], {...} or quotes stay); the sweep is the cartesian product. Each
point is queued with `dvc exp run --queue -S ...`, then `dvc queue start -j N` runs N at a
time, each in its own copy of the workspace (git's files, DVC's outputs, and the raw dataset,
which git ignores: --copy-path adds other such paths). N defaults to the GPUs `nvidia-smi -L` lists (1
without a GPU): every GPU stage holds a GPU of its own (stages.lib.core.gpus), so N experiments on
N GPUs never share one. A command that drives DVC, not a DVC stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.errors import SweepError
from .lib.core.gpus import VISIBLE_ENV, host_gpus, visible_gpus
from .lib.core.io import read_json, write_json
from .lib.sweep import compare as sweeps
from .lib.sweep.grid import grid_points, parse_grid

log = logging.getLogger(__name__)

OUT_DIR = Path("reports/sweep")
MANIFEST = "sweep.json"
FINAL = {"success", "failed", "missing"}
LOOKS = 5  # looks at the queue before a failing `dvc exp show` or a vanished experiment counts


def default_jobs() -> int:
    """One experiment per GPU this process may use (CUDA_VISIBLE_DEVICES honoured), else 1."""
    return len(visible_gpus(host_gpus(), os.environ.get(VISIBLE_ENV)) or []) or 1


def dvc(*args: str) -> str:
    """Run a DVC command with this interpreter's DVC; its output, or SweepError on failure.

    Output goes through files, not pipes: the queue workers `dvc queue start` leaves behind
    inherit them, and a pipe would stay open (and this call blocked) until they exit."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.call([sys.executable, "-m", "dvc", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if rc != 0:
        tail = (stdout + stderr).strip()[-2000:]
        raise SweepError(f"`dvc {' '.join(args)}` failed (exit {rc}): {tail}")
    return stdout


def _baseline() -> str:
    from scmrepo.git import Git  # DVC's own git layer: no git executable needed

    return str(Git(".").get_rev())


def copy_paths(extra: list[str], params: Path = Path("params.yaml")) -> list[str]:
    """What each experiment's copy of the workspace needs beyond git and the DVC cache: the raw
    dataset (``data.raw_dir``, a dependency of prepare that git ignores) and ``extra``; of
    each, what git does not track (DVC refuses to copy over a tracked file or folder)."""
    import yaml
    from scmrepo.git import Git

    raw = ((yaml.safe_load(params.read_text()) or {}).get("data") or {}).get("raw_dir") if params.is_file() else None
    wanted = [Path(p) for p in dict.fromkeys([*([raw] if raw else []), *extra]) if Path(p).exists()]
    scm = Git(".")
    return [p for path in wanted for p in untracked(path, scm.is_tracked)]


def untracked(path: Path, is_tracked: Callable[[str], bool]) -> list[str]:
    """``path`` when git tracks nothing in it, else the untracked entries below it."""
    if not is_tracked(str(path)):
        return [str(path)]
    if not path.is_dir():
        return []
    return [p for child in sorted(path.iterdir()) for p in untracked(child, is_tracked)]


def queue(
    groups: list[tuple[str, list[str]]], jobs: int, out_dir: Path, copy: list[str], start: bool = True
) -> dict[str, Any]:
    """Queue every point of the grid (and start the workers); write and return the manifest.
    ``copy``: ignored paths each experiment's workspace copy gets (see copy_paths)."""
    name = "sweep-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    varying = [k for k, v in groups if len(v) > 1]
    copied = [a for p in copy for a in ("--copy-paths", p)]
    points = []
    for i, overrides in enumerate(grid_points(groups), 1):
        exp = f"{name}-{i}"
        dvc("exp", "run", "--queue", "--name", exp, *copied, *[a for o in overrides for a in ("-S", o)])
        label = " ".join(o for o in overrides if o.split("=", 1)[0] in varying) or "(the baseline)"
        points.append({"name": exp, "overrides": overrides, "label": label})
        log.info("queued %s: %s", exp, " ".join(overrides))
    gpus = visible_gpus(host_gpus(), os.environ.get(VISIBLE_ENV)) or []
    manifest: dict[str, Any] = {
        "name": name,
        "baseline": _baseline(),
        "grid": [f"{k}={','.join(v)}" for k, v in groups],
        "jobs": jobs,
        "gpus": [g.record() for g in gpus],
        "copied": copy,
        "points": points,
    }
    if start:
        manifest["started_at"] = time.time()
        dvc("queue", "start", "--jobs", str(jobs))
        where = f"{len(gpus)} GPU(s)" if gpus else "the CPU"
        log.info("%s: %d experiments, %d at a time on %s", name, len(points), jobs, where)
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def states(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each point's experiment as `dvc exp show` sees it ("missing" once it has gone)."""
    found = sweeps.experiments(json.loads(dvc("exp", "show", "--json", "--rev", manifest["baseline"])))
    return {p["name"]: found.get(p["name"], {"state": "missing"}) for p in manifest["points"]}


def _finished_at(seen: dict[str, dict[str, Any]], polled: float) -> float:
    """When the last experiment ended: its commit time (1 s resolution) when every one
    succeeded, else the poll that saw the end."""
    stamps = [s.get("timestamp") for s in seen.values()]
    if all(s["state"] == "success" for s in seen.values()) and all(stamps):
        try:
            return max(datetime.fromisoformat(str(t)).timestamp() for t in stamps)
        except ValueError:
            pass
    return polled


def _look(manifest: dict[str, Any], gone: dict[str, int]) -> dict[str, dict[str, Any]] | None:
    """states(), or None while `dvc exp show` fails (it does while a worker sets up a workspace
    copy). An experiment counts as "missing" only once LOOKS looks in a row did not find it."""
    try:
        seen = states(manifest)
    except SweepError:
        return None
    for name, exp in seen.items():
        gone[name] = gone.get(name, 0) + 1 if exp["state"] == "missing" else 0
        if 0 < gone[name] < LOOKS:
            seen[name] = {"state": "unseen"}
    return seen


def _queue_status() -> str:
    try:
        return " ".join(dvc("queue", "status").split())[-1500:]
    except SweepError as exc:
        return str(exc)


def _check_started(name: str, seen: dict[str, dict[str, Any]], waited: float, start_timeout: float) -> None:
    """SweepError when no experiment has left the queue within ``start_timeout`` seconds: no
    worker picked one up (a worker that runs one shows it as running, even while its stage
    waits for a GPU)."""
    if start_timeout and waited > start_timeout and all(v["state"] in ("queued", "unseen") for v in seen.values()):
        raise SweepError(
            f"{name}: no experiment has started {start_timeout:.0f} s after `dvc queue start`, so no queue "
            f"worker is running (`dvc queue status`: {_queue_status()}); start one with `dvc queue start`, "
            "or see `dvc queue logs NAME`"
        )


def wait(manifest_path: Path, timeout: float, poll: float, start_timeout: float = 0) -> dict[str, Any]:
    """Poll until every point has finished; record wall time, states and peak concurrency.
    With ``start_timeout``, give up when nothing has started that long."""
    manifest = read_json(manifest_path)
    t0, last, peak = time.monotonic(), "", int(manifest.get("max_running") or 0)
    gone: dict[str, int] = {}
    failures = 0
    while True:
        seen = _look(manifest, gone)
        failures = failures + 1 if seen is None else 0
        if failures > LOOKS:
            states(manifest)  # raises the error `dvc exp show` keeps giving
        if seen is not None:
            _check_started(manifest["name"], seen, time.monotonic() - t0, start_timeout)
            found = [v["state"] for v in seen.values()]
            counts = {s: found.count(s) for s in sorted(set(found))}
            peak = max(peak, counts.get("running", 0))
            line = ", ".join(f"{n} {s}" for s, n in counts.items())
            if line != last:
                log.info("%s: %s", manifest["name"], line)
                last = line
            if all(v["state"] in FINAL for v in seen.values()):
                break
        if timeout and time.monotonic() - t0 > timeout:
            raise SweepError(
                f"{manifest['name']} is still running after {timeout:.0f} s ({last}): wait again, or stop it "
                "with `dvc queue stop --kill`"
            )
        time.sleep(poll)
    manifest.update(max_running=peak, states={k: v["state"] for k, v in seen.items()})
    if "started_at" in manifest:
        manifest["wall_s"] = round(_finished_at(seen, time.time()) - manifest["started_at"], 1)
    write_json(manifest_path, manifest)
    return manifest


def report(manifest_path: Path, out_dir: Path) -> None:
    manifest = read_json(manifest_path)
    found = sweeps.experiments(json.loads(dvc("exp", "show", "--json", "--rev", manifest["baseline"])))
    sweeps.write_report(manifest, found, out_dir)
    log.info("wrote %s", out_dir / "summary.md")


def _failed(manifest: dict[str, Any]) -> None:
    bad = [name for name, state in manifest.get("states", {}).items() if state != "success"]
    if bad:
        raise SweepError(f"{len(bad)} of {len(manifest['points'])} experiments did not succeed: " + ", ".join(bad))


def run(args: argparse.Namespace) -> None:
    manifest_path = args.out / MANIFEST
    if args.command in ("queue", "run"):
        copy = copy_paths(args.copy_path)
        queue(parse_grid(args.grid), args.jobs or default_jobs(), args.out, copy, start=not args.no_start)
    if args.command in ("wait", "run"):
        done = wait(manifest_path, args.timeout, args.poll, args.start_timeout if args.command == "run" else 0)
        if args.command == "wait":
            _failed(done)
    if args.command in ("report", "run"):
        report(manifest_path, args.out)
        if args.command == "run":
            _failed(read_json(manifest_path))
    if args.command == "compare":
        sweeps.write_comparison(args.runs[0], args.runs[1], args.out, args.tolerance)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("queue", "run", "wait", "report", "compare"):
        p = sub.add_parser(name)
        if name in ("queue", "run"):
            p.add_argument("grid", nargs="+", help="Hydra overrides, comma lists sweep: precision=int8,fp16")
            p.add_argument("--jobs", type=int, default=0, help="experiments at a time (default: one per GPU, or 1)")
            p.add_argument("--no-start", action="store_true", help="queue only (start later: dvc queue start -j N)")
            p.add_argument(
                "--copy-path",
                action="append",
                default=[],
                help="an ignored path each experiment needs (data.raw_dir is always copied)",
            )
        if name in ("wait", "run"):
            p.add_argument("--timeout", type=float, default=0, help="seconds (default: no limit)")
            p.add_argument("--poll", type=float, default=5.0, help="seconds between looks at the queue")
        if name == "run":
            p.add_argument(
                "--start-timeout",
                type=float,
                default=300.0,
                help="give up when no experiment has started this many seconds after the queue's start (0: wait)",
            )
        if name == "compare":
            p.add_argument("runs", nargs=2, type=Path, help="two report folders of one grid (e.g. 1 GPU, N GPUs)")
            p.add_argument("--tolerance", type=float, default=0.05, help="flag figures that differ by more")
        p.add_argument("--out", type=Path, default=OUT_DIR, help=f"the sweep's folder (default {OUT_DIR})")
        p.set_defaults(no_start=False, copy_path=[])
    args = ap.parse_args(argv)
    return run_main(f"sweep {args.command}", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
