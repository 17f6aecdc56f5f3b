"""The serving interpreter ($SERVE_PYTHON) and the Triton server process that runs in it
(stages.lib.serving.server); perf_analyzer, its load generator, is stages.lib.serving.perf.

PyTriton needs numpy < 2 (with numpy 2 its Python backend returns empty outputs), its
interpreter's ``bin`` first on PATH and that interpreter's ``libpython3.X.so.1.0`` on
LD_LIBRARY_PATH (the Triton backend stub loads it), so serving gets its own interpreter, as
TensorRT does with $TRT_PYTHON. A server is started in its own process group and always
stopped: TERM, a wait, then KILL for the whole group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import BackendUnavailable, ServingError

log = logging.getLogger(__name__)

SERVE_PYTHON = "SERVE_PYTHON"
TOKEN_ENV = "SERVE_ACCESS_TOKEN"  # the statistics API's access token, shared by server and client
STOP_WAIT_S = 30.0
PROJECT_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the stages package

_PROBE = r"""
import json, os, sys, sysconfig
info = {"executable": sys.executable, "version": "%d.%d" % sys.version_info[:2]}
name = sysconfig.get_config_var("INSTSONAME") or "libpython%s.so.1.0" % info["version"]
dirs = [os.path.join(sys.base_prefix, "lib"), sysconfig.get_config_var("LIBDIR") or ""]
info["libpython"] = next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)
info["libpython_name"] = name
from importlib.metadata import version
for mod, dist in (("numpy", "numpy"), ("pytriton", "nvidia-pytriton"), ("tritonclient", "tritonclient")):
    try:
        __import__(mod)
        info[mod] = version(dist)
    except Exception as exc:
        info[mod] = None
        info[mod + "_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(info))
"""


@dataclass(frozen=True)
class ServingPython:
    """An interpreter that can run a PyTriton server, and what it needs around it."""

    python: str  # as given in $SERVE_PYTHON (may be a wrapper script)
    executable: str  # the interpreter itself (sys.executable there)
    libpython: str
    versions: dict[str, str]

    def env(self, **extra: str) -> dict[str, str]:
        """This environment with the interpreter's bin first on PATH, its libpython's folder
        first on LD_LIBRARY_PATH, and PYTHONPATH only this project (another interpreter's
        packages there would shadow the serving interpreter's own)."""
        env = clean_env(**extra)
        for var, first in (
            ("PATH", os.path.dirname(self.executable)),
            ("LD_LIBRARY_PATH", os.path.dirname(self.libpython)),
        ):
            env[var] = os.pathsep.join(p for p in (first, env.get(var, "")) if p)
        return env


def clean_env(**extra: str) -> dict[str, str]:
    """This environment with PYTHONPATH set to this project's root alone."""
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), **extra)


def serving_python(environ: dict[str, str] | None = None) -> ServingPython:
    """The interpreter named by $SERVE_PYTHON, checked; BackendUnavailable says what is missing."""
    path = (environ if environ is not None else os.environ).get(SERVE_PYTHON)
    if not path:
        raise BackendUnavailable(
            f"no serving interpreter: set {SERVE_PYTHON} to a Python with nvidia-pytriton and numpy<2 "
            "(`make serve-venv` builds one in .venv-serve)"
        )
    try:
        proc = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=clean_env())
        info = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise BackendUnavailable(f"{SERVE_PYTHON}={path} cannot run ({exc})") from exc
    if info is None:
        raise BackendUnavailable(f"{SERVE_PYTHON}={path} failed: {proc.stderr.strip()[-300:]}")
    return _checked(path, info)


def _checked(path: str, info: dict[str, Any]) -> ServingPython:
    problems = [
        f"{m} is not importable ({info.get(m + '_error')})"
        for m in ("numpy", "pytriton", "tritonclient")
        if not info[m]
    ]
    if info["numpy"] and int(str(info["numpy"]).split(".")[0]) >= 2:
        problems.append(f"numpy {info['numpy']} (PyTriton needs numpy<2: with 2.x its backend returns empty outputs)")
    if not info["libpython"]:
        problems.append(
            f"no {info['libpython_name']} (the Triton backend stub needs a Python built with --enable-shared)"
        )
    if problems:
        raise BackendUnavailable(f"{SERVE_PYTHON}={path} cannot serve: {'; '.join(problems)}")
    versions = {k: str(info[k]) for k in ("version", "numpy", "pytriton", "tritonclient")}
    return ServingPython(path, info["executable"], info["libpython"], versions)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A Triton server process (stages.lib.serving.server) on 127.0.0.1; a context manager
    that waits until the model is loaded and always stops the process group on exit."""

    def __init__(
        self,
        sp: ServingPython,
        args: list[str],
        workdir: Path,
        token: str,
        timeout_s: float,
        env: dict[str, str] | None = None,
    ) -> None:
        self.sp, self.args, self.workdir, self.token, self.timeout_s = sp, args, workdir, token, timeout_s
        self.extra_env = dict(env or {})  # e.g. PYTRITON_NO_TENSORSTORE
        self.grpc_port, self.http_port = free_port(), free_port()
        self.status_file = workdir / "server-status.json"
        self.log_file = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}

    def __enter__(self) -> Server:
        ports = ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        cmd = [self.sp.python, "-m", "stages.lib.serving.server", *self.args, *ports, "--status", str(self.status_file)]
        with open(self.log_file, "wb") as logf:
            self.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self.sp.env(**self.extra_env, **{TOKEN_ENV: self.token}),
                start_new_session=True,
            )
        try:
            self.status = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _wait_ready(self) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.status_file.is_file():
                status: dict[str, Any] = json.loads(self.status_file.read_text())
                if status["status"] != "starting":
                    return status
            if self.proc.poll() is not None:
                raise ServingError(f"the server exited ({self.proc.returncode}) before it was ready: {self.log_tail()}")
            time.sleep(0.2)
        raise ServingError(
            f"the server was not ready after {self.timeout_s:.0f} s (serve.startup_timeout_s): {self.log_tail()}"
        )

    def log_tail(self, chars: int = 1500) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""
        return " ".join(text[-chars:].split())

    def stop(self) -> None:
        """TERM the server and wait; KILL its whole process group if it does not stop."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("the server did not stop within %.0f s of TERM: killing its process group", STOP_WAIT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it left behind in its group
        self.proc.wait()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="serve.") as tmp:
        yield Path(tmp)
