"""package: a Triton model repository of the built engines and the ONNX models.

Per precision, ``<model>_<precision>/`` holds ``config.pbtxt`` and ``1/model.plan`` (the
TensorRT engine, ``platform: "tensorrt_plan"``) and ``<model>_<precision>_onnx/`` holds
``config.pbtxt`` and ``1/model.onnx`` (``platform: "onnxruntime_onnx"``). Each configuration
carries the real I/O (read from the ONNX graph, or from the I/O tensors the build recorded),
the batch bounds and the dynamic batcher from the build profiles, an instance group, and
for a plan the GPU and TensorRT it was built for. Engines that were not built are left out,
and so is what ONNX Runtime cannot run on the params' device; the report says why. Each model
gets ``labels.txt``, the dataset's class names (from the prepared data's meta.json) one a line,
named by the output's ``label_filename`` so Triton's classification extension returns names.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable
from .lib.core.io import atomic_dir, read_json, write_json, write_text
from .lib.core.params import Params
from .lib.serving.spec import ModelSpec, served_name, served_spec, to_pbtxt
from .lib.trt.engine import BUILD_FILE, ENGINE_FILE

log = logging.getLogger(__name__)


def link_or_copy(src: Path, dest: Path) -> None:
    """A hard link where ``src`` and ``dest`` share a filesystem, else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


LABELS = "labels.txt"


def with_label_file(pbtxt: str) -> str:
    """``pbtxt`` with ``label_filename`` on its (one) output."""
    head, sep, outputs = pbtxt.partition("output [")
    if not sep:
        return pbtxt
    outputs = outputs.replace("    dims: [", f'    label_filename: "{LABELS}"\n    dims: [', 1)
    return head + sep + outputs


def add_model(
    repo: Path, spec: ModelSpec, artifact: Path, filename: str, source: str, classes: list[str] | None = None
) -> dict[str, Any]:
    """Write ``<repo>/<name>/config.pbtxt`` and ``1/<filename>``; the entry for the report."""
    header = [
        f"Triton model configuration written by `python -m stages.package` from {source}.",
    ]
    if spec.platform == "tensorrt_plan":
        fp = spec.parameters
        header.append(
            f"The plan runs only on the GPU and TensorRT it was built for: {fp['built_for_gpu']} (compute "
            f"capability {fp['built_for_compute_capability']}), TensorRT {fp['built_for_tensorrt']}; serve it "
            "with a Triton release built on that TensorRT."
        )
    config = to_pbtxt(spec, header)
    if classes:
        write_text(repo / spec.name / LABELS, "".join(f"{c}\n" for c in classes))
        config = with_label_file(config)
    write_text(repo / spec.name / "config.pbtxt", config)
    link_or_copy(artifact, repo / spec.name / "1" / filename)
    return {"name": spec.name, "platform": spec.platform, "source": source, "status": "packaged"}


def engine_entry(repo: Path, p: Params, precision: str, engines: Path, classes: list[str] | None) -> dict[str, Any]:
    folder = engines / precision
    name = served_name(p.model.name, precision, "tensorrt")
    try:
        spec = served_spec(p, precision, "tensorrt", folder / BUILD_FILE)
    except BackendUnavailable as exc:
        log.warning("%s left out: %s", name, exc)
        return {"name": name, "platform": "tensorrt_plan", "status": "skipped", "reason": str(exc)}
    return add_model(repo, spec, folder / ENGINE_FILE, "model.plan", str(folder / ENGINE_FILE), classes)


def onnx_entry(repo: Path, p: Params, precision: str, onnx_dir: Path, classes: list[str] | None) -> dict[str, Any]:
    name = served_name(p.model.name, precision, "onnxruntime")
    if precision == "fp16" and p.device != "cuda":  # as the ONNX Runtime runner decides
        reason = "ONNX Runtime runs FP16 convolutions on the CUDA provider only (device: cpu)"
        log.warning("%s left out: %s", name, reason)
        return {"name": name, "platform": "onnxruntime_onnx", "status": "skipped", "reason": reason}
    path = onnx_dir / f"{precision}.onnx"
    spec = served_spec(p, precision, "onnxruntime", path)
    return add_model(repo, spec, path, "model.onnx", str(path), classes)


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    entries: list[dict[str, Any]] = []
    classes = read_json(args.meta).get("classes") if args.meta and args.meta.is_file() else None
    with atomic_dir(args.out) as repo:
        for precision in p.precisions:
            entries.append(engine_entry(repo, p, precision, args.engines_dir, classes))
            entries.append(onnx_entry(repo, p, precision, args.onnx_dir, classes))
    packaged = [e["name"] for e in entries if e["status"] == "packaged"]
    write_json(args.report, {"repository": str(args.out), "packaged": len(packaged), "models": entries})
    log.info("model repository %s: %s", args.out, ", ".join(packaged) or "empty")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--onnx-dir", type=Path, required=True, help="folder with <precision>.onnx")
    ap.add_argument("--engines-dir", type=Path, required=True, help="folder with <precision>/build.json")
    ap.add_argument("--out", type=Path, required=True, help="the model repository (replaced as a whole)")
    ap.add_argument("--report", type=Path, required=True, help="what was packaged or left out, and why")
    ap.add_argument("--meta", type=Path, help="the prepared data's meta.json: class names for labels.txt")
    args = ap.parse_args(argv)
    return run_main("package", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
