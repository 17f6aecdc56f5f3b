"""The README's results tables against the reports they cite: every figure in a table under
"### ... on an NVIDIA <GPU>" must be the one the linked reference run's summary.md reports
(the report stage's own output), so an edited report or a hand-typed figure fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BACKENDS = {"PyTorch eager": "pytorch", "torch.compile": "torch_compile", "ONNX Runtime CUDA": "onnxruntime"}
BACKENDS["TensorRT"] = "tensorrt"


def _rows(md: str, header: str) -> list[list[str]]:
    """The cells of the table whose header row starts with ``header``, without ** marks."""
    lines = md[md.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("**", "") for c in line.strip("|").split("|")])
    return rows


def _sections() -> list[tuple[str, str, Path]]:
    """(title, body, reference folder) of each results section of the README."""
    found = []
    for m in re.finditer(r"^### (.+ on an NVIDIA .+)$", README, re.M):
        body = README[m.end() :].split("\n### ", 1)[0].split("\n## ", 1)[0]
        link = re.search(r"\((reports/reference/[^)]+)/RUN\.md\)", body)
        assert link, f"README section {m.group(1)!r} links no reference run"
        found.append((m.group(1), body, ROOT / link.group(1)))
    return found


SECTIONS = _sections()


def test_the_readme_has_a_results_section_per_model() -> None:
    assert [title for title, _, _ in SECTIONS] == [
        "ResNet-50 at 224 on an NVIDIA H200",
        "ResNet-18 (CIFAR stem) on an NVIDIA H200",
    ]


@pytest.mark.parametrize(("title", "body", "run"), SECTIONS, ids=[t for t, _, _ in SECTIONS])
def test_every_figure_is_the_reference_reports(title: str, body: str, run: Path) -> None:
    summary = (run / "summary.md").read_text(encoding="utf-8")
    speed = {(r[0], r[1]): r for r in _rows(summary, "| backend | precision | batch-1 p50 ms (compute) |")}
    top1 = {(r[0], r[1]): r[2] for r in _rows(summary, "| backend | precision | top-1 % |")}
    table = _rows(body, "| backend | precision | top-1 % | batch-1 p50")
    assert len(table) == 9, title
    for backend, precision, acc, b1, compute, e2e, pipelined in table:
        key = (BACKENDS[backend], precision.split()[0])
        _, _, b1_ref, compute_ref, e2e_ref, pipelined_ref, *_ = speed[key]
        assert acc == top1.get(key, "= eager"), (title, key)  # torch.compile: not evaluated, same weights
        # README: ms to 3 decimals; summary.md: to 4 (the report's values have more)
        assert abs(float(b1.removesuffix(" ms")) - float(b1_ref)) <= 0.00051, (title, key)
        assert (compute, e2e, pipelined) == (compute_ref, e2e_ref.split(" (")[0], pipelined_ref), (title, key)
