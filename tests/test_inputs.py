"""stages/lib/data/inputs.py: the one path from uint8 images to any model's input, and InputSpec."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib.core.errors import DatasetError
from stages.lib.data import inputs
from stages.lib.data.inputs import InputSpec
from stages.lib.runners.base import Runner, bench_input

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]


def _images(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "dtype,dims,want",
    [
        (np.float32, (3, 224, 224), InputSpec("float32", "NCHW", 224)),
        (np.float16, [3, 32, 32], InputSpec("float16", "NCHW", 32)),
        (np.uint8, (224, 224, 3), InputSpec("uint8", "NHWC", 224)),
    ],
)
def test_spec_from_dims_reads_layout_and_size(dtype, dims, want: InputSpec) -> None:
    spec = InputSpec.from_dims(dtype, dims)
    assert spec == want
    assert spec.shape == tuple(dims)
    assert spec.raw == (want.dtype == "uint8")


@pytest.mark.parametrize("dims", [(3, 32, 16), (32, 32), (4, 32, 32), ("h", "w", 3)])
def test_spec_from_dims_rejects_other_shapes(dims) -> None:
    with pytest.raises(DatasetError, match=r"model\.onnx: input of shape .* neither \(3, H, W\) nor \(H, W, 3\)"):
        InputSpec.from_dims(np.float32, dims, where="model.onnx")


def test_spec_rejects_unknown_types() -> None:
    with pytest.raises(DatasetError, match="unsupported model input int32 NCHW 32x32"):
        InputSpec.from_dims(np.int32, (3, 32, 32))


def test_float_input_is_exactly_preprocess() -> None:
    imgs = _images()
    x = inputs.to_model_input(imgs, inputs.float_input(64), MEAN, STD)
    np.testing.assert_array_equal(x, inputs.preprocess(imgs, MEAN, STD, 64))
    assert x.dtype == np.float32 and x.shape == (3, 3, 64, 64)


def test_fp16_input_is_preprocess_rounded_to_fp16() -> None:
    imgs = _images()
    x = inputs.to_model_input(imgs, InputSpec("float16", "NCHW", 32), MEAN, STD)
    assert x.dtype == np.float16
    np.testing.assert_array_equal(x, inputs.preprocess(imgs, MEAN, STD, 32).astype(np.float16))


def test_raw_input_is_the_pixels_upsampled_by_nearest_repeat() -> None:
    imgs = _images(2)
    x = inputs.to_model_input(imgs, InputSpec("uint8", "NHWC", 224), MEAN, STD)
    assert x.dtype == np.uint8 and x.shape == (2, 224, 224, 3) and x.flags["C_CONTIGUOUS"]
    for dy, dx in ((0, 0), (6, 6), (3, 5)):
        np.testing.assert_array_equal(x[:, dy::7, dx::7], imgs)
    # normalising the raw input afterwards gives the float input: one arithmetic, two places
    want = inputs.to_model_input(imgs, inputs.float_input(224), MEAN, STD)
    norm = ((x.astype(np.float32) * np.float32(1 / 255)) - np.float32(MEAN)) / np.float32(STD)
    np.testing.assert_array_equal(norm.transpose(0, 3, 1, 2), want)
    same = inputs.to_model_input(imgs, InputSpec("uint8", "NHWC", 32), MEAN, STD)
    np.testing.assert_array_equal(same, imgs)


def test_model_input_wants_uint8_images_at_a_divisor_of_the_model_size() -> None:
    with pytest.raises(DatasetError, match="expected uint8 NHWC RGB images, got float32"):
        inputs.to_model_input(_images().astype(np.float32), inputs.float_input(32), MEAN, STD)
    with pytest.raises(DatasetError, match="model input 48 is not a multiple of the image size 32"):
        inputs.to_model_input(_images(), InputSpec("uint8", "NHWC", 48), MEAN, STD)


class _Recording(Runner):
    """A runner that records what it is given and returns the per-image sum as one logit."""

    backend = "fake"

    def __init__(self, spec: InputSpec) -> None:
        super().__init__("fp32", "cpu")
        self.spec, self.seen = spec, []

    def open(self) -> None: ...

    def close(self) -> None: ...

    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    def input_spec(self) -> InputSpec:
        return self.spec

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x)
        return x.reshape(len(x), -1).sum(1, dtype=np.float64)[:, None].astype(np.float32)

    def compute_op(self, batch_size: int, cuda_graph: bool):  # noqa: ANN201
        raise NotImplementedError


@pytest.mark.parametrize("spec", [inputs.float_input(32), InputSpec("uint8", "NHWC", 64)])
def test_infer_all_feeds_the_runner_its_own_format_in_order(spec: InputSpec) -> None:
    imgs = _images(5)
    runner = _Recording(spec)
    out = inputs.infer_all(runner, imgs, MEAN, STD, batch_size=2)
    assert [len(x) for x in runner.seen] == [2, 2, 1]
    assert {x.dtype.name for x in runner.seen} == {spec.dtype}
    assert all(x.shape[1:] == spec.shape for x in runner.seen)
    want = np.concatenate(list(inputs.model_batches(imgs, spec, MEAN, STD, 5)))
    np.testing.assert_allclose(out[:, 0], want.reshape(5, -1).sum(1), rtol=1e-5)


def test_bench_input_follows_the_runner_input_type() -> None:
    raw = _Recording(InputSpec("uint8", "NHWC", 32)).bench_batch(4)
    assert raw.dtype == np.uint8 and raw.shape == (4, 32, 32, 3)
    assert raw.min() < 20 and raw.max() > 235 and len(np.unique(raw)) > 200  # uniform pixels, not zeros
    half = _Recording(InputSpec("float16", "NCHW", 8)).bench_batch(3)
    assert half.dtype == np.float16 and half.shape == (3, 3, 8, 8) and np.abs(half).mean() > 0.5
    np.testing.assert_array_equal(bench_input(4, (32, 32, 3), np.uint8), raw)  # seeded by the batch size
