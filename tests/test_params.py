"""params.yaml: the committed file matches conf/, every conf option composes and validates, and
the typed loader (stages.lib.core.params) rejects bad input with messages that say what to fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.lib.core.config import load_params, params_from_dict
from stages.lib.core.errors import ParamsError
from stages.lib.core.params import ARCHS, BACKENDS, PRECISIONS, Params
from tests.conftest import ROOT, TINY, compose

GROUP_OPTIONS = {
    "model": ["resnet18_cifar", "resnet50"],
    "experiment": ["resnet50_224"],
    "targets": ["resnet18_cifar", "resnet50_224"],
    "precision": ["fp32", "fp16", "int8", "all"],
    "profile": ["gpu", "cpu"],
    "data": ["cifar10", "synthetic"],
}


def _base() -> dict[str, Any]:
    """A valid params dict (the tiny synthetic CPU setup) to break one thing at a time."""
    return compose(TINY)


def _problems(raw: Any) -> tuple[ParamsError, str]:
    with pytest.raises(ParamsError) as info:
        params_from_dict(raw)
    return info.value, str(info.value)


def _problems_with(section: str, key: str, value: Any) -> list[str]:
    """The problems reported for the valid base params with ``section.key`` set to ``value``."""
    raw = _base()
    raw[section][key] = value
    return _problems(raw)[0].problems


# -- the committed params.yaml -----------------------------------------------------------


def test_committed_params_yaml_matches_conf_defaults() -> None:
    """The drift test: params.yaml is exactly what DVC's Hydra integration composes from conf/."""
    from omegaconf import OmegaConf

    committed_text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    composed = compose([])
    hint = (
        "params.yaml is out of date with conf/: run `make params` (it recomposes params.yaml "
        "from the conf/ defaults, as `dvc exp run` does) and commit the result"
    )
    assert yaml.safe_load(committed_text) == composed, hint
    # Same text as `make params` writes (dvc.utils.hydra.compose_and_dump -> OmegaConf.to_yaml).
    assert committed_text == OmegaConf.to_yaml(OmegaConf.create(composed)), hint


def test_committed_params_yaml_loads_through_the_typed_loader() -> None:
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.model.name == "resnet18_cifar"
    assert p.precisions == ["fp32", "fp16", "int8"]
    assert p.backends == list(BACKENDS)
    assert (p.profile, p.device) == ("gpu", "cuda")
    assert p.data.name == "cifar10" and p.data.source == "auto"


# -- every conf group option composes and validates ---------------------------------------


_CASES = [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts]


@pytest.mark.parametrize(("group", "option"), [pytest.param(g, o, id=f"{g}={o}") for g, o in _CASES])
def test_each_group_option_composes_and_validates(group: str, option: str) -> None:
    raw = compose([f"{group}={option}"])
    p = params_from_dict(raw)
    assert isinstance(p, Params)


@pytest.mark.parametrize("option", GROUP_OPTIONS["data"])
def test_each_data_option_validates_with_the_cpu_profile(option: str) -> None:
    p = params_from_dict(compose([f"data={option}", "profile=cpu"]))
    assert p.data.name == ("cifar10" if option == "cifar10" else "synthetic")
    assert p.data.source == ("auto" if option == "cifar10" else "synthetic")


@pytest.mark.parametrize("model", GROUP_OPTIONS["model"])
@pytest.mark.parametrize("precision", GROUP_OPTIONS["precision"])
@pytest.mark.parametrize("profile", GROUP_OPTIONS["profile"])
def test_every_model_precision_profile_combination_validates(model: str, precision: str, profile: str) -> None:
    p = params_from_dict(compose([f"model={model}", f"precision={precision}", f"profile={profile}"]))
    assert p.model.name == model
    assert p.profile == profile


@pytest.mark.parametrize(
    ("option", "expected"),
    [("fp32", ["fp32"]), ("fp16", ["fp16"]), ("int8", ["int8"]), ("all", ["fp32", "fp16", "int8"])],
)
def test_precision_option_sets_precisions(option: str, expected: list[str]) -> None:
    assert params_from_dict(compose([f"precision={option}"])).precisions == expected


def _leaves(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _leaves(v, key + ".")
        else:
            out.append((key, v))
    return out


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _leaf_or_none(d: dict[str, Any], dotted: str) -> Any:
    """Like _get, but None where the path is not there (a mapping key only one config sets)."""
    try:
        return _get(d, dotted)
    except KeyError:
        return None


def _conf(rel: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "conf" / rel).read_text(encoding="utf-8"))


def test_model_files_describe_only_the_model() -> None:
    for name in GROUP_OPTIONS["model"]:
        conf = _conf(f"model/{name}.yaml")
        assert set(conf) == {
            *("name", "arch", "cifar_stem", "image_size", "num_classes", "pretrained"),
            *("weights", "checkpoint", "onnx", "mean", "std"),
        }, name
        assert params_from_dict(compose([f"model={name}"])).model.name == name


def test_resnet50_experiment_has_its_own_model_schedule_and_targets() -> None:
    raw = compose(["experiment=resnet50_224"])
    p = params_from_dict(raw)
    assert p.model.name == "resnet50" and p.model.arch == "resnet50"
    assert p.model.image_size == 224 and p.model.cifar_stem is False
    # every setting the experiment makes (a global package) lands in params
    own = [(k, v) for k, v in _leaves(_conf("experiment/resnet50_224.yaml")) if not k.startswith("defaults")]
    assert {k.split(".")[0] for k, _ in own} >= {"train", "calibrate", "build", "bench"}
    for key, value in own:
        assert _get(raw, key) == value, key
    # ... they are not the default recipe's, and the model and targets groups follow it
    default = compose([])
    changed = {k.split(".")[0] for k, v in own if _leaf_or_none(default, k) != v}
    assert {"train", "calibrate", "build", "bench"} <= changed
    assert raw["model"] == _conf("model/resnet50.yaml")
    assert raw["targets"] == _conf("targets/resnet50_224.yaml")
    # its own profile and batch sizes up to MLPerf's offline batch
    assert raw["build"]["profiles"][-1] == {"min": 2, "opt": 1024, "max": 2048}
    assert raw["build"]["profiles"] != default["build"]["profiles"]
    assert max(raw["bench"]["batch_sizes"]) == 2048 and 1 in raw["bench"]["batch_sizes"]


@pytest.mark.parametrize(("profile", "device"), [("cpu", "cpu"), ("gpu", "cuda")])
def test_profile_sets_device_and_profile_name(profile: str, device: str) -> None:
    p = params_from_dict(compose([f"profile={profile}"]))
    assert p.profile == profile
    assert p.device == device


def test_cpu_profile_sizes_the_run_for_a_cpu() -> None:
    raw = compose(["profile=cpu"])
    own = _leaves(_conf("profile/cpu.yaml"))
    assert ("device", "cpu") in own and ("profile", "cpu") in own
    for key, value in own:
        assert _get(raw, key) == value, key
    p = params_from_dict(raw)
    assert p.train.amp is False


def test_profile_overrides_the_experiment_settings() -> None:
    """The profile comes after the experiment in the defaults list, so it wins where both set a key."""
    raw = compose(["experiment=resnet50_224", "profile=cpu"])
    p = params_from_dict(raw)
    assert p.model.image_size == 224
    cpu = dict(_leaves(_conf("profile/cpu.yaml")))
    both = [k for k, _ in _leaves(_conf("experiment/resnet50_224.yaml")) if k in cpu]
    assert both, "expected the CPU profile to resize some of the experiment's settings"
    for key in both:
        assert _get(raw, key) == cpu[key], key


def test_batch_sizes_override() -> None:
    p = params_from_dict(compose(["bench.batch_sizes=[1,8,64]"]))
    assert p.bench.batch_sizes == [1, 8, 64]


def test_tiny_test_setup_validates() -> None:
    p = params_from_dict(compose(TINY))
    assert p.data.source == "synthetic" and p.device == "cpu"
    assert p.bench.batch_sizes == [1, 4]


# -- Hydra rejects what is not in conf/ ----------------------------------------------------


@pytest.mark.parametrize(
    ("override", "group", "available"),
    [
        ("model=nope", "model", GROUP_OPTIONS["model"]),
        ("precision=fp8", "precision", GROUP_OPTIONS["precision"]),
        ("profile=tpu", "profile", GROUP_OPTIONS["profile"]),
    ],
)
def test_hydra_rejects_an_unknown_group_option(override: str, group: str, available: list[str]) -> None:
    from hydra.errors import HydraException

    with pytest.raises(HydraException) as info:
        compose([override])
    msg = str(info.value)
    assert f"Could not find '{group}/{override.split('=')[1]}'" in msg
    assert f"Available options in '{group}'" in msg
    for name in available:
        assert name in msg


def test_hydra_rejects_overriding_a_key_that_does_not_exist() -> None:
    from hydra.errors import HydraException

    with pytest.raises(HydraException, match="train.nokey"):
        compose(["train.nokey=3"])


def test_appended_unknown_key_is_rejected_by_the_typed_loader() -> None:
    """`+train.nokey=3` gets past Hydra; the typed loader must still refuse it."""
    raw = compose(["+train.nokey=3"])
    _, msg = _problems(raw)
    assert "train.nokey: unknown key" in msg


# -- the typed loader rejects bad input ----------------------------------------------------


def test_unknown_key_is_named_with_the_valid_keys() -> None:
    raw = _base()
    raw["model"]["depth"] = 18
    err, msg = _problems(raw)
    assert err.problems == [
        "model.depth: unknown key (valid: name, arch, cifar_stem, image_size, num_classes, pretrained, "
        "weights, checkpoint, onnx, mean, std)"
    ]
    assert msg.startswith("invalid parameters in params.yaml: model.depth: unknown key")


def test_unknown_top_level_key() -> None:
    raw = _base()
    raw["epochs"] = 3
    err, _ = _problems(raw)
    assert len(err.problems) == 1
    assert err.problems[0].startswith("epochs: unknown key (valid: seed, profile, device, backends, precisions,")


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("train", "lr"), "train.lr"),
        (("seed",), "seed"),
        (("bench",), "bench"),
        (("build", "profiles"), "build.profiles"),
    ],
)
def test_missing_key(path: tuple[str, ...], where: str) -> None:
    raw = _base()
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    err, _ = _problems(raw)
    assert err.problems == [f"{where}: missing"]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "epochs", "3", "train.epochs: expected an integer, got '3'"),
        ("train", "epochs", True, "train.epochs: expected an integer, got True"),
        ("train", "epochs", 2.5, "train.epochs: expected an integer, got 2.5"),
        ("model", "pretrained", "yes", "model.pretrained: expected true/false, got 'yes'"),
        ("model", "pretrained", 1, "model.pretrained: expected true/false, got 1"),
        ("train", "lr", "fast", "train.lr: expected a number, got 'fast'"),
        ("train", "lr", False, "train.lr: expected a number, got False"),
        ("model", "name", 18, "model.name: expected a string, got 18"),
        ("bench", "batch_sizes", 4, "bench.batch_sizes: expected a list, got 4"),
        ("bench", "batch_sizes", [1, "a"], "bench.batch_sizes[1]: expected an integer, got 'a'"),
        ("bench", "batch_sizes", [True], "bench.batch_sizes[0]: expected an integer, got True"),
    ],
)
def test_wrong_type(section: str, key: str, value: Any, expected: str) -> None:
    assert _problems_with(section, key, value) == [expected]


def test_a_section_that_is_not_a_mapping() -> None:
    raw = _base()
    raw["model"] = "resnet18"
    err, _ = _problems(raw)
    assert err.problems == ["model: expected a mapping, got str"]


def test_int_is_accepted_for_a_float() -> None:
    raw = _base()
    raw["train"]["lr"] = 1
    p = params_from_dict(raw)
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["model"].__setitem__("arch", "vgg17"),
            "model.arch: unknown value 'vgg17'; closest valid names: vgg19, vgg16, vgg13, vgg11, vgg19_bn",
        ),
        (
            lambda r: r.__setitem__("precisions", ["fp32", "fp8"]),
            f"precisions[1]: unknown value 'fp8'; valid: {', '.join(PRECISIONS)}",
        ),
        (
            lambda r: r.__setitem__("backends", ["pytorch", "tvm"]),
            f"backends[1]: unknown value 'tvm'; valid: {', '.join(BACKENDS)}",
        ),
        (lambda r: r.__setitem__("device", "tpu"), "device: unknown value 'tpu'; valid: cuda, cpu"),
        (
            lambda r: r["calibrate"].__setitem__("method", "mse"),
            "calibrate.method: unknown value 'mse'; valid: entropy, minmax, percentile",
        ),
        (
            lambda r: r["calibrate"].__setitem__("fallback_methods", ["percentile", "foo"]),
            "calibrate.fallback_methods[1]: unknown value 'foo'; valid: entropy, minmax, percentile",
        ),
        (
            lambda r: r["calibrate"].__setitem__("high_precision", "bf16"),
            "calibrate.high_precision: unknown value 'bf16'; valid: fp32, fp16",
        ),
        (
            lambda r: r["data"].__setitem__("source", "s3"),
            "data.source: unknown value 's3'; valid: auto, pickle, folder, synthetic",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(mutate: Any, expected: str) -> None:
    raw = _base()
    mutate(raw)
    err, msg = _problems(raw)
    assert err.problems == [expected]
    assert expected in msg


def test_names_lists_are_the_ones_the_pipeline_implements() -> None:
    assert PRECISIONS == ("fp32", "fp16", "int8")
    assert BACKENDS == ("pytorch", "torch_compile", "onnxruntime", "tensorrt")
    assert {"resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"} <= set(ARCHS)


def test_empty_and_duplicate_precisions() -> None:
    raw = _base()
    raw["precisions"] = []
    err, _ = _problems(raw)
    assert err.problems == ["precisions: must name at least one of fp32, fp16, int8"]
    raw["precisions"] = ["int8", "int8"]
    err, _ = _problems(raw)
    assert err.problems == ["precisions: duplicates in ['int8', 'int8']"]


@pytest.mark.parametrize(
    ("key", "sizes", "expected"),
    [
        ("batch_sizes", [0], ["bench.batch_sizes[0]: must be > 0, got 0"]),
        ("batch_sizes", [1, -4], ["bench.batch_sizes[1]: must be > 0, got -4"]),
        ("batch_sizes", [], ["bench.batch_sizes: must list at least one batch size"]),
        ("compile_batch_sizes", [0, 8], ["bench.compile_batch_sizes[0]: must be > 0, got 0"]),
    ],
)
def test_non_positive_batch_sizes(key: str, sizes: list[int], expected: list[str]) -> None:
    raw = _base()
    raw["bench"][key] = sizes
    err, _ = _problems(raw)
    assert err.problems == expected


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ({"min": 8, "opt": 4, "max": 16}, "min=8 opt=4 max=16"),
        ({"min": 2, "opt": 512, "max": 256}, "min=2 opt=512 max=256"),
        ({"min": 0, "opt": 1, "max": 1}, "min=0 opt=1 max=1"),
    ],
)
def test_inverted_build_profile(shape: dict[str, int], text: str) -> None:
    raw = _base()
    raw["build"]["profiles"][1] = shape
    err, _ = _problems(raw)
    assert err.problems == [f"build.profiles[1]: need 1 <= min <= opt <= max, got {text}"]


def test_no_build_profiles() -> None:
    raw = _base()
    raw["build"]["profiles"] = []
    err, _ = _problems(raw)
    assert err.problems == ["build.profiles: need at least one {min, opt, max} profile"]


def test_calibration_images_must_fit_the_calibration_subset() -> None:
    raw = _base()
    raw["data"]["calib_size"] = 100
    raw["calibrate"]["num_images"] = 128
    err, _ = _problems(raw)
    assert err.problems == [
        "calibrate.num_images (128) exceeds data.calib_size (100): raise data.calib_size or lower calibrate.num_images"
    ]


def test_int8_budget_sizes_and_cap() -> None:
    raw = _base()
    raw["calibrate"].update(heldout_images=100, rank_images=200, search_max_s=0)
    err, _ = _problems(raw)
    assert err.problems == [
        "calibrate.search_max_s: must be > 0, got 0.0",
        "calibrate.rank_images (200) exceeds calibrate.heldout_images (100): the groups are ranked on held-out images",
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("model", "image_size", 40, "model.image_size: must be a multiple of 32, got 40"),
        ("export", "opset", 13, "export.opset: must be >= 17, got 13"),
        ("build", "opt_level", 6, "build.opt_level: must be 0..5, got 6"),
        ("bench", "contexts", 0, "bench.contexts: must be 1..8, got 0"),
        ("bench", "contexts", 9, "bench.contexts: must be 1..8, got 9"),
        ("quality", "min_fp32_agreement", 1.5, "quality.min_fp32_agreement: must be in [0, 1], got 1.5"),
        ("quality", "max_top1_drop", -1, "quality.max_top1_drop: must be >= 0, got -1.0"),
        ("train", "epochs", -1, "train.epochs: must be >= 0, got -1"),
        ("train", "batch_size", 0, "train.batch_size: must be > 0, got 0"),
        ("train", "cutmix", 1.5, "train.cutmix: must be a probability in [0, 1], got 1.5"),
        ("train", "sam_rho", -0.1, "train.sam_rho: must be >= 0 (0 turns SAM off), got -0.1"),
        ("calibrate", "percentile", 0, "calibrate.percentile: must be in (0, 100], got 0.0"),
        ("calibrate", "min_agreement", 1.5, "calibrate.min_agreement: must be in [0, 1], got 1.5"),
        (
            "calibrate",
            "float_nodes",
            ["^/layer4/", "(unclosed"],
            "calibrate.float_nodes[1]: not a regular expression (missing ), unterminated subpattern at "
            "position 0): '(unclosed'",
        ),
    ],
)
def test_out_of_range_values(section: str, key: str, value: Any, expected: str) -> None:
    assert _problems_with(section, key, value) == [expected]


def test_fallback_methods_default_and_empty() -> None:
    p = params_from_dict(_base())
    assert (p.calibrate.method, p.calibrate.fallback_methods) == ("minmax", ["percentile", "entropy"])
    raw = _base()
    raw["calibrate"]["fallback_methods"] = []
    assert params_from_dict(raw).calibrate.fallback_methods == []


def test_a_fallback_equal_to_the_method_is_allowed() -> None:
    """`-S calibrate.method=percentile` with the default fallbacks [percentile, entropy]."""
    p = params_from_dict(compose(["calibrate.method=percentile"]))
    assert (p.calibrate.method, p.calibrate.fallback_methods) == ("percentile", ["percentile", "entropy"])


@pytest.mark.parametrize(
    ("method", "fallbacks", "expected"),
    [
        ("minmax", ["entropy", "entropy"], ["calibrate.fallback_methods: duplicates in ['entropy', 'entropy']"]),
        (
            "minmax",
            ["mse", "entropy", "entropy"],
            [
                "calibrate.fallback_methods[0]: unknown value 'mse'; valid: entropy, minmax, percentile",
                "calibrate.fallback_methods: duplicates in ['mse', 'entropy', 'entropy']",
            ],
        ),
        ("minmax", "percentile", ["calibrate.fallback_methods: expected a list, got 'percentile'"]),
        ("minmax", ["entropy", 3], ["calibrate.fallback_methods[1]: expected a string, got 3"]),
    ],
)
def test_bad_fallback_methods(method: str, fallbacks: Any, expected: list[str]) -> None:
    raw = _base()
    raw["calibrate"].update(method=method, fallback_methods=fallbacks)
    assert _problems(raw)[0].problems == expected


def test_structural_problems_are_all_reported_at_once() -> None:
    raw = _base()
    raw["model"]["depth"] = 18  # unknown key
    del raw["train"]["lr"]  # missing key
    raw["bench"]["iterations"] = "many"  # wrong type
    raw["export"]["opset"] = True  # bool for int
    err, msg = _problems(raw)
    assert len(err.problems) == 4
    wheres = [p.split(":")[0] for p in err.problems]
    assert set(wheres) == {"model.depth", "train.lr", "bench.iterations", "export.opset"}
    assert msg == "invalid parameters in params.yaml: " + "; ".join(err.problems)


def test_value_problems_are_all_reported_at_once() -> None:
    raw = _base()
    raw["model"]["arch"] = "vgg99"
    raw["precisions"] = ["fp8"]
    raw["backends"] = ["tvm"]
    raw["bench"]["batch_sizes"] = [0]
    raw["build"]["profiles"][0] = {"min": 4, "opt": 2, "max": 8}
    calib = raw["data"]["calib_size"]
    raw["calibrate"]["num_images"] = calib + 1
    err, msg = _problems(raw)
    assert len(err.problems) == 6
    for needle in (
        "model.arch: unknown value 'vgg99'",
        "precisions[0]: unknown value 'fp8'",
        "backends[0]: unknown value 'tvm'",
        "bench.batch_sizes[0]: must be > 0",
        "build.profiles[0]: need 1 <= min <= opt <= max",
        f"calibrate.num_images ({calib + 1}) exceeds data.calib_size ({calib})",
    ):
        assert sum(needle in p for p in err.problems) == 1, needle
        assert needle in msg
    assert "\n" not in msg


def test_params_from_dict_does_not_modify_its_input() -> None:
    raw = _base()
    before = copy.deepcopy(raw)
    params_from_dict(raw)
    assert raw == before


def test_params_are_frozen() -> None:
    import dataclasses

    p = params_from_dict(_base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1  # type: ignore[misc]


# -- load_params: files -------------------------------------------------------------------


def test_load_params_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_base(), sort_keys=False))
    assert load_params(path) == params_from_dict(_base())


def test_load_params_names_the_file_in_value_errors(tmp_path: Path) -> None:
    raw = _base()
    raw["model"]["arch"] = "vgg99"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"invalid parameters in {path}: model.arch: unknown value 'vgg99'")


def test_load_params_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert info.value.problems == [f"file not found: {path} (run from the project root)"]


def test_load_params_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  name: [resnet18\n  arch: resnet18\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    msg = str(info.value)
    assert msg.startswith(f"invalid parameters in {path}: not valid YAML:")
    assert "\n" not in msg


@pytest.mark.parametrize(("text", "got"), [("", "NoneType"), ("- fp32\n- fp16\n", "list"), ("42\n", "int")])
def test_load_params_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.problems == [f"top level: expected a mapping, got {got}"]
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("backends", ["pytorch"], "serve.backends[0]: unknown value 'pytorch'; valid: tensorrt, onnxruntime"),
        ("concurrencies", [], "serve.concurrencies: must list at least one concurrency"),
        ("concurrencies", [1, 0], "serve.concurrencies[1]: must be > 0, got 0"),
        ("max_queue_delay_us", -1, "serve.max_queue_delay_us: must be >= 0, got -1"),
        ("batch_size", 4096, "serve.batch_size (4096) exceeds the largest build profile max (1024)"),
    ],
)
def test_bad_serve_values_are_named(key: str, value: Any, expected: str) -> None:
    problems = _problems_with("serve", key, value)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
