"""The user's own model: ImageNet weights from a file or torch's hub cache (nothing is
downloaded), a trained PyTorch checkpoint that train copies, an ONNX classifier that export
adopts; bad files are one-line errors that name them, and nothing is half-written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from stages.lib.core.errors import CheckpointError, OnnxModelError, PretrainedWeightsError
from stages.lib.core.params import ModelParams
from stages.lib.model.networks import build_model
from stages.lib.model.usermodel import load_user_checkpoint
from stages.lib.model.useronnx import adopt_onnx
from tests.conftest import TINY, run_stage, write_params

# The tiny project's params with MobileNetV3-Large at 32x32 on 64 synthetic training images.
OVERRIDES = [*TINY, "model=mobilenet_v3_large", "model.image_size=32", "data.synthetic_train=64"]
OVERRIDES += ["data.calib_size=32", "calibrate.num_images=32"]
MOBILE = ModelParams(
    name="mobilenet_v3_small",
    arch="mobilenet_v3_small",
    cifar_stem=False,
    image_size=32,
    num_classes=10,
    pretrained=False,
)


def _imagenet_file(path: Path, arch: str = "mobilenet_v3_small") -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    torch.save(state, path)
    return state


def _body_equal(model: torch.nn.Module, state: dict[str, torch.Tensor], head: str) -> None:
    got = model.state_dict()
    body = [k for k in state if not k.startswith(head)]
    assert body and all(torch.equal(got[k], state[k]) for k in body)


def test_pretrained_from_a_weights_file_replaces_only_the_head(tmp_path: Path) -> None:
    state = _imagenet_file(tmp_path / "w.pth")
    model = build_model(dataclasses.replace(MOBILE, pretrained=True, weights=str(tmp_path / "w.pth")))
    _body_equal(model, state, "classifier.3.")
    assert model.classifier[3].out_features == 10


def test_pretrained_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _imagenet_file(cache / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    model = build_model(dataclasses.replace(MOBILE, pretrained=True))
    _body_equal(model, state, "classifier.3.")


def test_bad_weights_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    _imagenet_file(tmp_path / "resnet.pth", "resnet18")
    for name, needle in (
        ("missing.pth", "does not exist"),
        ("junk.pth", "is not a readable state_dict"),
        ("resnet.pth", "do not fit mobilenet_v3_small"),
    ):
        with pytest.raises(PretrainedWeightsError, match=needle) as err:
            build_model(dataclasses.replace(MOBILE, pretrained=True, weights=str(tmp_path / name)))
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("form", ["state_dict", "wrapped", "module"])
def test_a_user_checkpoint_in_any_common_form_loads(tmp_path: Path, form: str) -> None:
    torch.manual_seed(1)
    mine = build_model(MOBILE).eval()
    blob = {"state_dict": mine.state_dict(), "meta": {}} if form == "wrapped" else mine.state_dict()
    torch.save(mine if form == "module" else blob, tmp_path / "mine.pt")
    got = load_user_checkpoint(tmp_path / "mine.pt", MOBILE)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), mine(x))


def test_a_user_checkpoint_of_another_shape_names_the_file(tmp_path: Path) -> None:
    torch.save(build_model(dataclasses.replace(MOBILE, num_classes=4)).state_dict(), tmp_path / "four.pt")
    with pytest.raises(CheckpointError, match=r"four\.pt does not fit mobilenet_v3_small with 10 classes"):
        load_user_checkpoint(tmp_path / "four.pt", MOBILE)
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a readable PyTorch file"):
        load_user_checkpoint(tmp_path / "junk.pt", MOBILE)


def _export(model: torch.nn.Module, path: Path, batch_dynamic: bool = True, size: int = 32) -> None:
    axes = {"x": {0: "n"}, "y": {0: "n"}} if batch_dynamic else None
    torch.onnx.export(
        model.eval(),
        (torch.randn(1, 3, size, size),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def test_a_fixed_batch_onnx_model_is_adopted_with_a_dynamic_batch(tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(2)
    model = build_model(MOBILE).eval()
    _export(model, tmp_path / "user.onnx", batch_dynamic=False)
    info = adopt_onnx(tmp_path / "user.onnx", tmp_path / "fp32.onnx", 32, 10)
    assert info["input"] == "x" and info["opset"] == 17
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    (y,) = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)


def test_bad_onnx_models_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    _export(build_model(MOBILE), tmp_path / "at64.onnx", size=64)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    for name, needle in (
        ("at64.onnx", "has shape [None, 3, 64, 64], expected ['N', 3, 32, 32]"),
        ("junk.onnx", "not a valid ONNX model"),
        ("none.onnx", "does not exist"),
    ):
        with pytest.raises(OnnxModelError, match=r"model\.onnx: ") as err:
            adopt_onnx(tmp_path / name, tmp_path / "fp32.onnx", 32, 10)
        assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "fp32.onnx").exists()


@pytest.fixture(scope="module")
def tiny_mobile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import copy_project

    root = copy_project(tmp_path_factory.mktemp("user"))
    write_params(root, OVERRIDES)
    run_stage("prepare", ["--out", "data/prepared"], root)
    return root


def _train_args(m: str) -> list[str]:
    return [
        "--data",
        "data/prepared",
        "--checkpoint",
        f"{m}/checkpoint.pt",
        "--metrics",
        f"{m}/train.json",
        "--history",
        f"{m}/history.csv",
    ]


def test_train_copies_a_user_checkpoint_instead_of_training(tiny_mobile: Path) -> None:
    p = dataclasses.replace(MOBILE, name="mobilenet_v3_large", arch="mobilenet_v3_large")
    torch.manual_seed(3)
    mine = build_model(p)
    torch.save(mine, tiny_mobile / "mine.pt")
    overrides = OVERRIDES
    write_params(tiny_mobile, [*overrides, f"model.checkpoint={tiny_mobile / 'mine.pt'}"])
    run_stage("train", _train_args("out"), tiny_mobile)
    saved = torch.load(tiny_mobile / "out" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in mine.state_dict().items())
    assert json.loads((tiny_mobile / "out" / "train.json").read_text())["epochs"] == 0
    write_params(tiny_mobile, overrides)


def test_export_adopts_a_user_onnx_model_as_fp32(tiny_mobile: Path) -> None:
    p = dataclasses.replace(MOBILE, name="mobilenet_v3_large", arch="mobilenet_v3_large")
    _export(build_model(p), tiny_mobile / "mine.onnx", batch_dynamic=False)
    overrides = OVERRIDES
    write_params(
        tiny_mobile, [*overrides, f"model.onnx={tiny_mobile / 'mine.onnx'}", "backends=[onnxruntime,tensorrt]"]
    )
    run_stage("train", _train_args("onnx"), tiny_mobile)
    args = [
        "--checkpoint",
        "onnx/checkpoint.pt",
        "--test",
        "data/prepared/test.npz",
        "--out-dir",
        "onnx/m",
        "--reference",
        "onnx/ref.npy",
        "--report",
        "onnx/export.json",
    ]
    run_stage("export", args, tiny_mobile)
    report = json.loads((tiny_mobile / "onnx" / "export.json").read_text())
    assert report["user_onnx"]["source"] == str(tiny_mobile / "mine.onnx")
    assert report["fp32_parity"]["status"] == "skipped"
    assert np.load(tiny_mobile / "onnx" / "ref.npy").shape == (128, 10)
    assert (tiny_mobile / "onnx" / "m" / "fp16.onnx").is_file()
    write_params(tiny_mobile, [*overrides, f"model.onnx={tiny_mobile / 'mine.onnx'}"])
    proc = run_stage("export", args, tiny_mobile, check=False)
    assert (
        proc.returncode != 0 and "model.onnx: the pytorch, torch_compile backend(s) need a PyTorch model" in proc.stderr
    )
    write_params(tiny_mobile, overrides)
