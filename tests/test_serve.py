"""The served benchmark: a real Triton server (PyTriton in $SERVE_PYTHON) serving ONNX Runtime
on the CPU and a pass-through model beside it, loaded by perf_analyzer; its answers equal the
runner's own; every server a test starts is stopped, even when the test fails; without a
serving interpreter or perf_analyzer the stage records "skipped" and why. The tests that
start a server skip (with the reason) where $SERVE_PYTHON or perf_analyzer is not usable;
`make test` and CI install both (.venv-serve)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stages.lib.core.config import load_params
from stages.lib.core.errors import BackendUnavailable, ServingError
from stages.lib.core.io import write_json
from stages.lib.data import inputs
from stages.lib.data import prepared as data
from stages.lib.runners.ort_runner import OrtRunner
from stages.lib.serving import perf
from stages.lib.serving.process import Server, ServingPython, serving_python
from stages.lib.serving.server import passthrough_name
from stages.lib.serving.spec import ModelSpec, onnx_spec
from tests.conftest import run_stage

MODEL = "resnet18_cifar"
ONNX = f"artifacts/{MODEL}/onnx/fp32.onnx"


def _missing(what: str) -> None:
    """Skip where a serving piece is missing; CI (CI=true) installs them all, so there it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the served benchmark: {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def sp() -> ServingPython:
    try:
        return serving_python()
    except BackendUnavailable as exc:
        _missing(f"no usable serving interpreter: {exc}")
        raise


@pytest.fixture(scope="module")
def pa(sp: ServingPython) -> str:
    try:
        return perf.find_perf_analyzer(sp.python)
    except BackendUnavailable as exc:
        _missing(f"no perf_analyzer: {exc}")
        raise


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    """No live process left in the process group. Zombies count as gone: they are dead, only
    not yet reaped by whichever init inherited them (a container's PID 1 may never reap)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        live = [pid for pid, state, group in _processes() if group == pgid and state != "Z"]
        if not live or time.monotonic() > deadline:
            return not live
        time.sleep(0.1)


def _processes() -> list[tuple[int, str, int]]:
    """(pid, state, process group) of every process, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        out.append((int(stat.parent.name), fields[0], int(fields[2])))
    return out


def _engine_dir(tmp: Path) -> Path:
    """What the build stage leaves where there is no TensorRT."""
    folder = tmp / "engines" / "fp32"
    folder.mkdir(parents=True)
    write_json(folder / "build.json", {"status": "skipped", "precision": "fp32", "reason": "TensorRT not importable"})
    return folder


def _stage_args(root: Path, tmp: Path, params: Path) -> list[str]:
    args = ["--params", str(params), "--precision", "fp32", "--onnx", ONNX, "--engine-dir", str(_engine_dir(tmp))]
    return args + ["--out", str(tmp / "serve.json"), "--records", str(tmp / "serve.csv")]


def _params(root: Path, tmp: Path, **serve: Any) -> Path:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["serve"].update(serve)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _spec_file(root: Path, tmp: Path) -> tuple[ModelSpec, Path]:
    profiles = [{"min": 1, "opt": 1, "max": 1}, {"min": 2, "opt": 8, "max": 64}]
    spec = onnx_spec(f"{MODEL}_fp32_onnx", root / ONNX, profiles, "cpu", "fp32", 500)
    write_json(tmp / "spec.json", spec.to_json())
    return spec, tmp / "spec.json"


def _server(sp: ServingPython, root: Path, tmp: Path, timeout_s: float = 300.0) -> Server:
    _, spec_file = _spec_file(root, tmp)
    args = ["--spec", str(spec_file), "--params", str(root / "params.yaml"), "--backend", "onnxruntime"]
    args += ["--precision", "fp32", "--onnx", str(root / ONNX), "--engine-dir", str(tmp / "none")]
    return Server(sp, args, tmp, "test-token", timeout_s)


# -- without a serving interpreter ---------------------------------------------------------


def test_without_a_serving_interpreter_the_stage_records_skipped(prepared_tiny: Path, tmp_path: Path) -> None:
    args = _stage_args(prepared_tiny, tmp_path, prepared_tiny / "params.yaml")
    proc = run_stage("serve", args, prepared_tiny, env={"SERVE_PYTHON": ""})
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "serve.json").read_text())
    for backend in ("tensorrt", "onnxruntime"):
        assert summary[backend]["status"] == "skipped"
        assert "SERVE_PYTHON" in summary[backend]["reason"] and "make serve-venv" in summary[backend]["reason"]
    assert (tmp_path / "serve.csv").read_text() == "backend\n"


def test_serve_disabled_starts_nothing(prepared_tiny: Path, tmp_path: Path) -> None:
    params = _params(prepared_tiny, tmp_path, enabled=False)
    run_stage(
        "serve", _stage_args(prepared_tiny, tmp_path, params), prepared_tiny, env={"SERVE_PYTHON": sys.executable}
    )
    summary = json.loads((tmp_path / "serve.json").read_text())
    assert {summary[b]["reason"] for b in ("tensorrt", "onnxruntime")} == {"serve.enabled is false"}


def test_an_interpreter_without_pytriton_is_rejected_with_what_it_lacks() -> None:
    """This interpreter (the project's: numpy 2, no PyTriton) cannot serve, and says why."""
    with pytest.raises(BackendUnavailable) as info:
        serving_python({"SERVE_PYTHON": sys.executable})
    message = str(info.value)
    assert "pytriton is not importable" in message
    if int(np.__version__.split(".")[0]) >= 2:
        assert "PyTriton needs numpy<2" in message


# -- a real server -------------------------------------------------------------------------


def test_a_serving_interpreter_without_perf_analyzer_records_skipped(
    sp: ServingPython, prepared_tiny: Path, tmp_path: Path
) -> None:
    wrapper = tmp_path / "bin" / "python"  # a serving interpreter with no perf_analyzer beside it
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {sp.executable} "$@"\n')
    wrapper.chmod(0o755)
    env = {"SERVE_PYTHON": str(wrapper), "PATH": "/usr/bin:/bin", "PERF_ANALYZER": ""}
    run_stage("serve", _stage_args(prepared_tiny, tmp_path, prepared_tiny / "params.yaml"), prepared_tiny, env=env)
    summary = json.loads((tmp_path / "serve.json").read_text())
    for backend in ("tensorrt", "onnxruntime"):
        assert summary[backend]["status"] == "skipped"
        assert "no perf_analyzer" in summary[backend]["reason"] and "make serve-venv" in summary[backend]["reason"]


def test_served_benchmark_on_the_cpu(sp: ServingPython, pa: str, prepared_tiny: Path, tmp_path: Path) -> None:
    params = _params(prepared_tiny, tmp_path, concurrencies=[1, 3], batch_size=2, max_seconds=1.5)
    run_stage("serve", _stage_args(prepared_tiny, tmp_path, params), prepared_tiny, env={"SERVE_PYTHON": sp.python})
    summary = json.loads((tmp_path / "serve.json").read_text())
    assert summary["tensorrt"]["status"] == "skipped" and "not built" in summary["tensorrt"]["reason"]
    ort = summary["onnxruntime"]
    assert ort["status"] == "ok", ort
    assert ort["model"] == f"{MODEL}_fp32_onnx"
    assert ort["server"]["triton"].startswith("2.") and ort["server"]["pytriton"] == sp.versions["pytriton"]
    assert ort["client"] == {"perf_analyzer": perf.version(pa), "protocol": "grpc"}
    assert ort["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert not _port_open(int(ort["server"]["url"].rsplit(":", 1)[1])), "the server still listens"

    with open(tmp_path / "serve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the model and its pass-through model back to back at each level
    assert [(int(r["concurrency"]), r["served"]) for r in rows] == [
        (1, "model"),
        (1, "passthrough"),
        (3, "model"),
        (3, "passthrough"),
    ]
    for r in rows:
        assert int(r["batch_size"]) == 2 and int(r["requests"]) >= 1 and float(r["throughput_ips"]) > 0
        assert 0 < float(r["latency_ms_p50"]) <= float(r["latency_ms_p90"]) <= float(r["latency_ms_p99"])
        assert float(r["server_batch_mean"]) >= 2.0  # one request is 2 images; the batcher may merge more
        assert float(r["server_queue_ms_mean"]) >= 0 and float(r["server_compute_ms_mean"]) > 0
        assert r["timed"].startswith("perf_analyzer ") and "127.0.0.1" in r["timed"]
    model = [float(r["throughput_ips"]) for r in rows if r["served"] == "model"]
    passthrough = [float(r["throughput_ips"]) for r in rows if r["served"] == "passthrough"]
    assert ort["served_throughput_ips_max"] == max(model)
    assert ort["passthrough_throughput_ips_max"] == max(passthrough)


@pytest.fixture(scope="module")
def onnx_server(sp: ServingPython, prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for the module's tests; stopped at teardown, whatever the tests did."""
    with _server(sp, prepared_tiny, tmp_path_factory.mktemp("server")) as server:
        yield server


def test_served_logits_equal_the_runners_own(onnx_server: Server, prepared_tiny: Path) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    p = load_params(prepared_tiny / "params.yaml")
    split = data.load_split(prepared_tiny / "data" / "prepared" / "test.npz")
    x = inputs.preprocess(split.images[:6], p.data.mean, p.data.std, p.model.image_size)
    client = grpcclient.InferenceServerClient(onnx_server.grpc_url)
    try:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer(f"{MODEL}_fp32_onnx", [inp]).as_numpy("logits")
        config = client.get_model_config(f"{MODEL}_fp32_onnx", as_json=True)["config"]
    finally:
        client.close()
    with OrtRunner("fp32", p, prepared_tiny / ONNX) as runner:
        expected = runner.infer(x)
    assert served.shape == (6, 10)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    assert int(config["max_batch_size"]) == 64 and config["dynamic_batching"]["preferred_batch_size"] == [8]


def test_the_passthrough_model_has_the_models_io_and_batcher_and_answers_zeros(onnx_server: Server) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    name = passthrough_name(f"{MODEL}_fp32_onnx")
    x = np.ones((5, 3, 32, 32), dtype=np.float32)
    client = grpcclient.InferenceServerClient(onnx_server.grpc_url)
    try:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer(name, [inp]).as_numpy("logits")
        configs = [client.get_model_config(m, as_json=True)["config"] for m in (f"{MODEL}_fp32_onnx", name)]
    finally:
        client.close()
    assert out.dtype == np.float32 and out.shape == (5, 10) and not out.any()
    same = [
        (
            {k: c[k] for k in ("max_batch_size", "dynamic_batching", "input", "output")},
            [(g["count"], g["kind"]) for g in c["instance_group"]],
        )
        for c in configs
    ]
    assert same[0] == same[1]
    assert onnx_server.status["models"] == sorted([f"{MODEL}_fp32_onnx", name])


def test_the_server_listens_on_loopback_only(onnx_server: Server) -> None:
    assert _port_open(onnx_server.grpc_port) and _port_open(onnx_server.http_port)
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in addresses:
        with socket.socket() as s:
            s.settimeout(1.0)
            assert s.connect_ex((address, onnx_server.grpc_port)) != 0, f"gRPC answers on {address}"


def test_a_server_is_stopped_when_the_test_fails_inside(sp: ServingPython, prepared_tiny: Path, tmp_path: Path) -> None:
    server = _server(sp, prepared_tiny, tmp_path)
    with pytest.raises(RuntimeError, match="boom"), server:
        assert server.status["status"] == "ready" and _port_open(server.grpc_port)
        raise RuntimeError("boom")
    assert server.proc is not None and server.proc.returncode is not None
    assert server.proc.returncode in (0, -signal.SIGKILL)
    assert _group_gone(server.proc.pid) and not _port_open(server.grpc_port)


def test_a_server_that_is_not_ready_in_time_is_stopped(sp: ServingPython, prepared_tiny: Path, tmp_path: Path) -> None:
    server = _server(sp, prepared_tiny, tmp_path, timeout_s=0.5)
    with pytest.raises(ServingError, match="not ready after"), server:
        pytest.fail("the server cannot be ready within 0.5 s")
    assert server.proc is not None and server.proc.returncode is not None
    assert _group_gone(server.proc.pid)


def _raw_pixel_model(dest: Path) -> Path:
    """A tiny raw-pixel model: uint8 NHWC 32x32 in (as export.raw_input writes), logits out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(30, dtype=np.float32).reshape(3, 10) / 30.0, "w")
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "raw",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, dest)
    return dest


def test_a_raw_pixel_model_is_served_with_uint8_input(
    sp: ServingPython, pa: str, prepared_tiny: Path, tmp_path: Path
) -> None:
    model = _raw_pixel_model(tmp_path / "raw.onnx")
    spec = onnx_spec("raw", model, [{"min": 1, "opt": 4, "max": 16}], "cpu", "fp32", 500)
    assert [(t.name, t.triton_dtype, t.dims) for t in spec.inputs] == [("images", "UINT8", (32, 32, 3))]
    params = _params(prepared_tiny, tmp_path, concurrencies=[2], batch_size=3, max_seconds=1.5)
    args = _stage_args(prepared_tiny, tmp_path, params)
    args[args.index("--onnx") + 1] = str(model)
    run_stage("serve", args, prepared_tiny, env={"SERVE_PYTHON": sp.python})
    summary = json.loads((tmp_path / "serve.json").read_text())
    assert summary["onnxruntime"]["status"] == "ok", summary["onnxruntime"]
    with open(tmp_path / "serve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["served"] for r in rows] == ["model", "passthrough"]
    assert all(int(r["requests"]) >= 1 and float(r["server_batch_mean"]) >= 3.0 for r in rows)
