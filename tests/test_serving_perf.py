"""perf_analyzer as the served benchmark's load generator, without a server: where it is
found, the command line it gets, and how its report is read (from a real perf_analyzer
2.51.0 run: tests/data/perf_analyzer/, 16 requests of 8 images in flight against the
pass-through model)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.lib.core.errors import BackendUnavailable, ServingError
from stages.lib.serving import perf

DATA = Path(__file__).parent / "data" / "perf_analyzer"


def _fixture() -> tuple[str, str]:
    return (DATA / "c16.csv").read_text(), (DATA / "c16.stdout.txt").read_text()


def test_a_level_is_read_from_the_csv_and_the_servers_counts() -> None:
    csv_text, stdout = _fixture()
    record = perf.parse(csv_text, stdout, perf.Load(batch_size=8, window_ms=1500))
    assert record == {
        "concurrency": 16,
        "batch_size": 8,
        "throughput_ips": 14017.0,
        "latency_ms_p50": 8.621,
        "latency_ms_p90": 11.047,
        "latency_ms_p99": 16.782,
        "latency_ms_mean": 9.114,
        "server_queue_ms_mean": 4.896,
        "server_compute_ms_mean": 3.267,  # input 97 + infer 2924 + output 246 us
        "server_infer_ms_mean": 2.924,
        "requests": 9554,
        "server_batch_mean": 45.58,  # 76,432 images in 1,677 executions
    }


def test_a_report_without_exactly_one_row_is_an_error() -> None:
    csv_text, stdout = _fixture()
    header = csv_text.splitlines()[0]
    with pytest.raises(ServingError, match="0 result rows"):
        perf.parse(header + "\n", stdout, perf.Load(8, 1000))


def test_without_the_servers_counts_there_is_no_executed_batch() -> None:
    csv_text, _ = _fixture()
    record = perf.parse(csv_text, "", perf.Load(8, 1000))
    assert "server_batch_mean" not in record and "requests" not in record


def test_the_command_bounds_the_level_and_carries_the_access_token(tmp_path: Path) -> None:
    cmd = perf.command("pa", "m", "127.0.0.1:9", perf.Load(8, 700), 64, "tok", tmp_path / "o.csv")
    assert cmd[:8] == ["pa", "-m", "m", "-u", "127.0.0.1:9", "-i", "grpc", "-b"] and cmd[8] == "8"
    joined = " ".join(cmd)
    assert "--concurrency-range 64:64" in joined and "-p 700" in joined and "--max-trials 3" in joined
    assert cmd[-2:] == ["-H", "triton-grpc-protocol-triton-access-token:tok"]
    assert "--streaming" not in cmd
    http = perf.command("pa", "m", "u", perf.Load(8, 700, "http", streaming=True), 1, "tok", tmp_path / "o.csv")
    assert "--streaming" in http and http[-1] == "triton-access-token:tok"


def test_perf_analyzer_is_found_next_to_the_serving_interpreter(tmp_path: Path) -> None:
    pa = tmp_path / "bin" / "perf_analyzer"
    pa.parent.mkdir()
    pa.write_text("#!/bin/sh\n")
    pa.chmod(0o755)
    assert perf.find_perf_analyzer(str(tmp_path / "bin" / "python"), {"PATH": ""}) == str(pa)
    other = tmp_path / "other"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    env = {"PATH": "", perf.PERF_ANALYZER: str(other)}
    assert perf.find_perf_analyzer(str(tmp_path / "bin" / "python"), env) == str(other)


def test_no_perf_analyzer_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="make serve-venv") as info:
        perf.find_perf_analyzer(str(tmp_path / "python"), {"PATH": str(tmp_path)})
    assert "libb64" in str(info.value) and os.linesep not in str(info.value)


# -- the serving-path measurements: options table and profile ------------------------------


def test_the_options_table_gives_the_median_and_every_round() -> None:
    from stages.lib.serving.options import table

    def rec(option: str, ips: float, batch: float) -> dict[str, object]:
        return {
            "option": option,
            "concurrency": 64,
            "throughput_ips": ips,
            "latency_ms_p50": ips / 1000,
            "latency_ms_p99": 2.0,
            "server_queue_ms_mean": 1.0,
            "server_compute_ms_mean": 3.0,
            "server_batch_mean": batch,
        }

    rows = table(
        [
            rec("baseline", 9000.0, 60.0),
            rec("http", 5.0, 8.0),
            rec("baseline", 12000.0, 64.0),
            rec("baseline", 10000.0, 62.0),
        ]
    )
    assert rows[2] == "| baseline | 64 | 10,000 | 9,000, 12,000, 10,000 | 10.00 | 2.00 | 1.00 | 3.00 | 62.00 |"
    assert rows[3].startswith("| http | 64 | 5 | 5 |") and len(rows) == 4


def test_the_profile_attributes_samples_to_the_innermost_process_and_python_frame() -> None:
    from stages.lib.serving.profile import role_of, top_functions

    server = 'process 10:"python -m stages.lib.serving.server --spec s.json"'
    stub = 'process 12:"/ws/backends/python/triton_python_backend_stub /tmp/f/1/model.py x"'
    collapsed = "\n".join(
        [
            f"{server};run (a.py:1);infer (b.py:2) 5",
            f'{server};process 11:"/ws/bin/tritonserver --model-store x";{stub};send (data.py:9) 7',
            f'{server};process 11:"/ws/bin/tritonserver --model-store x";{stub} 3',
            f"{server};run (a.py:1);infer (b.py:2) 1",
        ]
    )
    assert top_functions(collapsed, 10) == [
        ("Python backend stub", "send (data.py:9)", 7),
        ("server", "infer (b.py:2)", 6),
        ("Python backend stub", "(native code holding the GIL, no Python frame)", 3),
    ]
    assert role_of("python3 -c from multiprocessing.spawn import spawn_main").startswith("multiprocessing child")
