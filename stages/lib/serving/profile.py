"""Where a PyTriton request's time goes: the pass-through model under perf_analyzer load, with
the CPU time of every process of the serving path and a py-spy profile of its Python.

    SERVE_PYTHON=... python -m stages.lib.serving.profile --concurrency 64 --seconds 8 \\
        --out reports/serving-cpu/profile.md

The server (this project's server module, with PyTriton's inference handler), Triton
(``tritonserver``) and the Python backend's stub processes are sampled while perf_analyzer
keeps ``--concurrency`` requests in flight: CPU seconds per process from /proc, and with
py-spy (``pip install py-spy`` in the serving interpreter; skipped without it) the Python
functions on CPU in the server and in the stubs. Linux only.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..core.cli import run_main
from ..core.io import write_json, write_text
from . import perf
from .options import BASE
from .process import Server, serving_python, workdir
from .server import passthrough_name

log = logging.getLogger(__name__)
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children[int(fields[1])].append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


ROLES = (  # a command line's mark -> what the process is
    ("triton_python_backend_stub", "Python backend stub (Triton side of the proxy)"),
    ("tritonserver", "tritonserver (C++)"),
    ("stages.lib.serving.server", "server: PyTriton's inference handler + the bound function"),
    ("multiprocessing", "multiprocessing child: PyTriton's TensorStore shared-memory manager"),
)


def role_of(cmdline: str) -> str:
    return next((name for key, name in ROLES if key in cmdline), cmdline[:80])


def role(pid: int) -> str:
    """What a process of the serving path is, from its command line."""
    try:
        return role_of(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        return "gone"


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far, by role, summed over ``pids``."""
    out: dict[str, float] = collections.defaultdict(float)
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        out[role(pid)] += (int(fields[11]) + int(fields[12])) / TICK
    return dict(out)


def top_functions(collapsed: str, limit: int) -> list[tuple[str, str, int]]:
    """(process, innermost Python function, samples) with the most samples, from py-spy's raw
    output (one "frame;frame;... count" line per stack, the process first)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not n.isdigit():
            continue
        python = [f for f in frames if "(" in f and ".py:" in f]  # py-spy's "function (file.py:line)"
        leaf = python[-1].strip() if python else "(native code holding the GIL, no Python frame)"
        # with --subprocesses each process below the root adds a "process PID:cmdline" frame
        process = [f for f in frames if f.startswith("process ")][-1:] or frames[:1]
        counts[(role_of(process[0]).split(" (")[0].split(":")[0], leaf)] += int(n)
    return [(p, f, n) for (p, f), n in counts.most_common(limit)]


def run(args: argparse.Namespace) -> None:
    sp = serving_python()
    pa = perf.find_perf_analyzer(sp.python)
    spy = shutil.which("py-spy", path=str(Path(sp.executable).parent))
    load = perf.Load(batch_size=8, window_ms=round(args.seconds * 1000 / perf.WINDOWS))
    with workdir() as tmp:
        write_json(tmp / "spec.json", BASE.to_json())
        server_args = ["--spec", str(tmp / "spec.json"), "--backend", "none", "--precision", "fp32"]
        with Server(sp, server_args, tmp, secrets.token_urlsafe(16), 300.0) as server:
            assert server.proc is not None
            pids = tree(server.proc.pid)
            spy_proc = None
            if spy:
                # --gil: only threads holding the GIL, i.e. Python running, not Python waiting
                cmd = [spy, "record", "-p", str(server.proc.pid), "--subprocesses", "--gil", "-r", "200", "-f", "raw"]
                spy_proc = subprocess.Popen([*cmd, "-o", str(tmp / "spy.txt"), "-d", str(int(args.seconds * 2))])
            before, children0, t0 = cpu_seconds(pids), _children_cpu(), time.perf_counter()
            record = perf.run_level(
                pa, passthrough_name(BASE.name), server.grpc_url, load, args.concurrency, server.token, tmp
            )
            wall = time.perf_counter() - t0
            used = {k: v - before.get(k, 0.0) for k, v in cpu_seconds(pids).items()}
            used["perf_analyzer (the load)"] = _children_cpu() - children0
            if spy_proc:
                spy_proc.wait(timeout=args.seconds * 2 + 60)
            collapsed = (tmp / "spy.txt").read_text() if (tmp / "spy.txt").is_file() else ""
    write_text(args.out, "\n".join(report(record, used, wall, collapsed, args)) + "\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(
    record: dict[str, Any], used: dict[str, float], wall: float, collapsed: str, args: argparse.Namespace
) -> list[str]:
    """The profile as markdown: the load's figures, CPU per process, Python functions on CPU."""
    requests = record["throughput_ips"] / 8 * wall  # perf_analyzer's warm-up runs at the same rate
    lines = [
        f"# Pass-through model, {args.concurrency} requests of 8 images in flight",
        "",
        f"Command: `python -m stages.lib.serving.profile {' '.join(sys.argv[1:])}` on {os.cpu_count()} "
        f"{platform.machine()} cores (load average {os.getloadavg()[0]:.1f} when it ended: other work shares "
        "the cores).",
        "",
        f"perf_analyzer: {record['throughput_ips']:,.0f} img/s, p50 {record['latency_ms_p50']} ms; per request "
        f"server queue {record['server_queue_ms_mean']} ms and compute {record['server_compute_ms_mean']} ms; "
        f"executed batch {record.get('server_batch_mean')}. CPU over {wall:.1f} s of load (about "
        f"{requests:,.0f} requests):",
        "",
        "| process | CPU s | cores busy | CPU us per request |",
        "|---|---|---|---|",
    ]
    rows = sorted(used.items(), key=lambda kv: -kv[1])
    lines += [f"| {n} | {s:.2f} | {s / wall:.2f} | {1e6 * s / requests:,.0f} |" for n, s in rows if s > 0]
    total = sum(used.values())
    lines.append(f"| all | {total:.2f} | {total / wall:.2f} | {1e6 * total / requests:,.0f} |")
    if collapsed:
        every = top_functions(collapsed, 10**6)
        total = sum(n for _, _, n in every) or 1
        by_process: collections.Counter[str] = collections.Counter()
        for proc, _, n in every:
            by_process[proc] += n
        lines += ["", "| process | share of py-spy samples holding the GIL |", "|---|---|"]
        lines += [f"| {proc} | {100 * n / total:.1f}% |" for proc, n in by_process.most_common()]
        lines += ["", "| process | Python function holding the GIL (py-spy --gil, leaf) | share of samples |"]
        lines.append("|---|---|---|")
        lines += [f"| {p} | `{f}` | {100 * n / total:.1f}% |" for p, f, n in top_functions(collapsed, args.top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=6.0, help="perf_analyzer's three windows together")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("profile", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
