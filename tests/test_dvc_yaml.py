"""dvc.yaml is consistent with params.yaml and the stages package, and DVC accepts it.

Stages are expanded the way DVC does: ``foreach: ${precisions}`` over params.yaml's precisions
with ``${item}`` substituted, and ``${a.b}`` resolved from params.yaml.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

PARAMS: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
DVC_YAML: dict[str, Any] = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
_VAR = re.compile(r"\$\{([^}]+)\}")
PATH_PREFIXES = ("data/", "artifacts/", "reports/")


def _lookup(dotted: str, params: dict[str, Any]) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _resolve(obj: Any, params: dict[str, Any], item: str | None = None) -> Any:
    """Substitute ${item} and ${a.b} in every string (dict keys included)."""
    if isinstance(obj, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1).strip()
            if name == "item":
                assert item is not None, f"${{item}} outside a foreach: {obj!r}"
                return item
            value = _lookup(name, params)
            assert not isinstance(value, (dict, list)), f"${{{name}}} is not a scalar in params.yaml"
            return str(value)

        return _VAR.sub(sub, obj)
    if isinstance(obj, list):
        return [_resolve(x, params, item) for x in obj]
    if isinstance(obj, dict):
        return {_resolve(k, params, item): _resolve(v, params, item) for k, v in obj.items()}
    return obj


def expand_stages(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, stage in dvc_yaml["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):
                m = _VAR.fullmatch(items.strip())
                assert m, f"{name}: foreach must be a ${{...}} reference, got {items!r}"
                items = _lookup(m.group(1), params)
            for item in items:
                out[f"{name}@{item}"] = _resolve(stage["do"], params, str(item))
        else:
            out[name] = _resolve(stage, params)
    return out


STAGES = expand_stages(DVC_YAML, PARAMS)


def _paths(entries: list[Any] | None) -> list[str]:
    """Paths of a deps/outs/metrics/plots list (entries are strings or {path: options})."""
    paths: list[str] = []
    for e in entries or []:
        if isinstance(e, str):
            paths.append(e)
        else:
            assert isinstance(e, dict) and len(e) == 1, e
            paths.append(next(iter(e)))
    return paths


def _declared(stage: dict[str, Any]) -> list[str]:
    return [p.rstrip("/") for key in ("deps", "outs", "metrics", "plots") for p in _paths(stage.get(key))]


def _modules(cmd: str) -> list[str]:
    return re.findall(r"python -m (stages(?:\.\w+)+)", cmd)


def _flag_paths(cmd: str) -> list[tuple[str, str]]:
    """(--flag, value) pairs whose value is a project path (data/, artifacts/, reports/)."""
    tokens = shlex.split(cmd)
    pairs = []
    for flag, value in zip(tokens, tokens[1:], strict=False):
        if flag.startswith("--") and value.startswith(PATH_PREFIXES):
            pairs.append((flag, value))
    return pairs


STAGE_IDS = sorted(STAGES)


def test_expansion_covers_every_precision() -> None:
    precisions = PARAMS["precisions"]
    assert precisions, "params.yaml lists no precisions"
    for base in ("build", "evaluate", "benchmark"):
        assert [n for n in STAGES if n.startswith(base + "@")] == [f"{base}@{p}" for p in precisions]
    assert {"prepare", "train", "export", "calibrate", "probe", "report", "gate"} <= set(STAGES)
    for name, stage in STAGES.items():
        assert "${" not in yaml.safe_dump(stage), f"{name}: unresolved interpolation left"


@pytest.mark.parametrize("name", sorted(DVC_YAML["stages"]))
def test_foreach_stages_iterate_precisions(name: str) -> None:
    stage = DVC_YAML["stages"][name]
    if "foreach" in stage:
        assert stage["foreach"] == "${precisions}"
        assert "${item}" in stage["do"]["cmd"], f"{name}: the command ignores ${{item}}"
        assert "--precision ${item}" in " ".join(stage["do"]["cmd"].split())
    else:
        assert "${item}" not in yaml.safe_dump(stage), f"{name}: ${{item}} outside a foreach"


@pytest.mark.parametrize("name", STAGE_IDS)
def test_params_entries_exist_in_params_yaml(name: str) -> None:
    stage = STAGES[name]
    for entry in stage.get("params", []):
        if isinstance(entry, dict):  # {file: [keys]}, or {file: None} for every key in it
            ((file, keys),) = entry.items()
            assert file == "params.yaml", f"{name}: params from {file}"
            keys = keys or []
        else:
            keys = [entry]
        for key in keys:
            try:
                _lookup(key, PARAMS)
            except KeyError:
                pytest.fail(f"{name}: params entry {key!r} is not in params.yaml")


@pytest.mark.parametrize("name", STAGE_IDS)
def test_cmd_modules_are_importable_and_have_main(name: str) -> None:
    modules = _modules(STAGES[name]["cmd"])
    assert modules, f"{name}: cmd does not run `python -m stages.<module>`"
    for mod_name in modules:
        module = importlib.import_module(mod_name)
        main = getattr(module, "main", None)
        assert callable(main), f"{mod_name} has no main()"
        assert "argv" in inspect.signature(main).parameters, f"{mod_name}.main takes no argv"


@pytest.mark.parametrize("name", STAGE_IDS)
def test_code_deps_exist(name: str) -> None:
    code = [d for d in _paths(STAGES[name].get("deps")) if d.startswith("stages/")]
    for mod_name in _modules(STAGES[name]["cmd"]):
        own = mod_name.replace(".", "/") + ".py"
        assert own in code, f"{name}: its own module {own} is not a dep"
    for dep in code:
        assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"


def test_every_stage_module_has_main() -> None:
    modules = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    used = {m for s in STAGES.values() for m in _modules(s["cmd"])}
    assert used <= {f"stages.{m}" for m in modules}
    for m in modules:
        module = importlib.import_module(f"stages.{m}")
        assert callable(getattr(module, "main", None)), f"stages/{m}.py has no main()"


# Scratch state a stage keeps across interrupted runs: not an out, since DVC deletes outs
# before running a stage and would then cache it (train deletes it once it has finished).
SCRATCH_FLAGS = {"--resume-state"}


def test_scratch_state_lives_with_the_model_artifacts() -> None:
    model = PARAMS["model"]["name"]
    scratch = [(n, v) for n, s in STAGES.items() for f, v in _flag_paths(s["cmd"]) if f in SCRATCH_FLAGS]
    assert scratch == [("train", f"artifacts/{model}/train-resume.pt")]


@pytest.mark.parametrize("name", STAGE_IDS)
def test_cmd_paths_are_declared(name: str) -> None:
    """Every path a command is given is a dep/out/metric/plot of that stage, a file inside a
    declared folder, or a folder that holds only what the stage declares under it."""
    stage = STAGES[name]
    declared = _declared(stage)
    for flag, value in _flag_paths(stage["cmd"]):
        if flag in SCRATCH_FLAGS:
            continue
        path = value.rstrip("/")
        listed = path in declared
        inside = any(path.startswith(d + "/") for d in declared)
        holds = any(d.startswith(path + "/") for d in declared)
        assert listed or inside or holds, f"{name}: {flag} {value} is not among its deps/outs/metrics/plots"


def test_flag_path_parser_sees_every_path() -> None:
    """Guard for the check above: it parses the paths it is meant to check."""
    pairs = dict(_flag_paths(STAGES["export"]["cmd"]))
    model = PARAMS["model"]["name"]
    assert pairs == {
        "--checkpoint": f"artifacts/{model}/checkpoint.pt",
        "--test": "data/prepared/test.npz",
        "--out-dir": f"artifacts/{model}/onnx",
        "--reference": f"artifacts/{model}/reference_logits.npy",
        "--report": f"reports/{model}/export.json",
    }


# Outputs that describe the machine or the params file, the same for every model.
MODEL_INDEPENDENT = {"artifacts/fingerprint.json", "artifacts/params-valid.json"}


def test_validate_runs_first_and_tracks_all_of_params_yaml() -> None:
    """Every other stage but probe (which reads no params) depends on validate's output, and
    validate on params.yaml as a file: any change reruns it, and no stage declares the whole
    file as params, so `dvc exp show --param-deps` lists only the params stages use."""
    out = "artifacts/params-valid.json"
    assert _paths(STAGES["validate"]["outs"]) == [out]
    assert "params.yaml" in _paths(STAGES["validate"]["deps"])
    assert "params" not in STAGES["validate"]
    for name, stage in STAGES.items():
        assert {"params.yaml": None} not in stage.get("params", []), f"{name} takes all of params.yaml"
    for name, stage in STAGES.items():
        if name not in ("validate", "probe"):
            assert out in _paths(stage.get("deps")), f"{name} does not wait for validate"


@pytest.mark.parametrize("name", STAGE_IDS)
def test_outputs_are_written_under_the_model_name(name: str) -> None:
    """Two models never write the same artifact or report."""
    model = PARAMS["model"]["name"]
    for key in ("outs", "metrics", "plots"):
        for path in _paths(STAGES[name].get(key)):
            if path.startswith(("artifacts/", "reports/")) and path not in MODEL_INDEPENDENT:
                assert f"/{model}/" in path + "/", f"{name}: {path} is not under {model}"


def test_no_two_stages_write_the_same_output() -> None:
    seen: dict[str, str] = {}
    for name, stage in STAGES.items():
        for key in ("outs", "metrics", "plots"):
            for path in _paths(stage.get(key)):
                assert path not in seen, f"{path} is written by {seen.get(path)} and {name}"
                seen[path] = name


def test_every_dep_is_produced_by_a_stage_or_exists() -> None:
    outputs = {p for s in STAGES.values() for k in ("outs", "metrics", "plots") for p in _paths(s.get(k))}
    for name, stage in STAGES.items():
        for dep in _paths(stage.get("deps")):
            made = dep in outputs or any(dep.startswith(o + "/") or o.startswith(dep + "/") for o in outputs)
            assert made or (ROOT / dep).exists(), f"{name}: dep {dep} is neither produced nor present"


def test_top_level_plots_resolve() -> None:
    plots = _resolve(DVC_YAML.get("plots", []), PARAMS)
    outputs = {p for s in STAGES.values() for k in ("outs", "metrics", "plots") for p in _paths(s.get(k))}
    for entry in plots:
        if isinstance(entry, str):
            assert entry in outputs, entry
        else:
            ((_, spec),) = entry.items()
            for path in spec["y"]:
                made = path in outputs or any(path.startswith(o + "/") for o in outputs)
                assert made, path


def test_only_the_curated_metrics_file_is_a_metric() -> None:
    """Per-stage records are untracked outputs (cache: false), not metrics: `dvc exp show`
    and `dvc metrics diff` see reports/<model>/metrics.json alone."""
    model = PARAMS["model"]["name"]
    declared = [(name, p) for name, stage in STAGES.items() for p in _paths(stage.get("metrics"))]
    assert declared == [("report", f"reports/{model}/metrics.json")]
    assert "metrics" not in DVC_YAML  # no top-level metrics either


def test_data_plots_use_dvc_templates() -> None:
    """The throughput and top-1 plots are data plots (overlaid across revisions by
    `dvc plots diff`), their custom template exists, and the PNG folder stays."""
    plots = {next(iter(e)) if isinstance(e, dict) else e: e for e in DVC_YAML["plots"]}
    throughput = plots["throughput_by_batch"]["throughput_by_batch"]
    assert (throughput["x"], list(throughput["y"].values())) == ("batch_size", ["throughput_ips"])
    template = json.loads((ROOT / ".dvc" / "plots" / f"{throughput['template']}.json").read_text())
    assert template["encoding"]["color"]["field"] == "series"
    top1 = plots["top1"]["top1"]
    assert (top1["template"], top1["x"], list(top1["y"].values())) == ("bar_horizontal", "top1", ["series"])
    assert "reports/${model.name}/plots" in plots


# -- dvc itself ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def dvc_project(project: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=_env())
    _dvc(["init", "-q"], project)
    _dvc(["config", "hydra.enabled", "True"], project)
    return project


def test_dvc_lists_every_stage(dvc_project: Path) -> None:
    project_params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    expected = expand_stages(DVC_YAML, project_params)
    out = _dvc(["stage", "list", "--name-only"], dvc_project).stdout.split()
    assert sorted(out) == sorted(expected)
    for name in (
        "prepare",
        "train",
        "export",
        "calibrate",
        "probe",
        "build@fp32",
        "build@fp16",
        "build@int8",
        "evaluate@fp32",
        "evaluate@int8",
        "benchmark@fp16",
        "report",
        "gate",
    ):
        assert name in out


def test_dvc_dag_has_the_expected_edges(dvc_project: Path) -> None:
    md = _dvc(["dag", "--md"], dvc_project).stdout
    names = dict(re.findall(r'(node\d+)\["([^"]+)"\]', md))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", md)}
    for edge in [
        ("prepare", "train"),
        ("train", "export"),
        ("export", "calibrate"),
        ("prepare", "calibrate"),
        ("calibrate", "rank"),
        ("rank", "choose"),
        ("calibrate", "choose"),
        ("choose", "build@int8"),
        ("choose", "report"),
        ("choose", "gate"),
        ("export", "build@fp32"),
        ("export", "build@fp16"),
        ("probe", "build@fp32"),
        ("build@fp32", "evaluate@fp32"),
        ("build@int8", "benchmark@int8"),
        ("evaluate@fp16", "report"),
        ("benchmark@int8", "report"),
        ("report", "gate"),
        ("evaluate@int8", "gate"),
    ]:
        assert edge in edges, f"missing edge {edge[0]} -> {edge[1]}"
    assert ("gate", "report") not in edges


# -- what a stage really reads ------------------------------------------------------------

# Runs ``python -m <module> args`` with an audit hook that records every file opened for
# reading, and the files the process wrote or removed itself (its own temporary files); the
# lists go to argv[1] as JSON. Only this process is seen: not its per-backend children, nor
# files that C++ libraries (ONNX Runtime, onnx shape inference) open themselves.
_TRACER = r"""
import json, os, runpy, sys
reads, made = [], []
def hook(event, args):
    if not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if event in ("os.remove", "os.rename"):  # temporary files the process made and removed
        made.append(os.fsdecode(args[0]))
        return
    if event != "open":
        return
    mode, flags = args[1], args[2]
    if mode is None:
        writes = flags & (os.O_WRONLY | os.O_RDWR)
    else:
        writes = any(c in mode for c in "wax+")
    (made if writes else reads).append(os.fsdecode(args[0]))
out, module, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [module, *rest]
sys.addaudithook(hook)
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open(out, "w") as f:
    json.dump({"reads": reads, "made": made}, f)
sys.exit(code)
"""


def _traced_reads(stage: dict[str, Any], cwd: Path, trace: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    tokens = shlex.split(stage["cmd"])
    assert tokens[:2] == ["python", "-m"], tokens
    env = dict(_env(), PYTHONPATH=str(cwd))
    proc = subprocess.run(
        [sys.executable, "-c", _TRACER, str(trace), *tokens[2:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seen = yaml.safe_load(trace.read_text()) if trace.is_file() else {"reads": [], "made": []}

    def rel(raw: str) -> str:
        path = Path(raw)
        return os.path.relpath(path if path.is_absolute() else cwd / path, cwd)

    made = {rel(r) for r in seen["made"]}
    reads = {rel(r) for r in seen["reads"]} - made
    return proc, {r for r in reads if r.startswith(PATH_PREFIXES) and (cwd / r).exists()}


def _stage_inputs_from(source: Path, dest: Path, stages: dict[str, dict[str, Any]], name: str) -> None:
    """Put the outputs that ``name`` depends on into ``dest``, whole, as DVC checks them out."""
    import shutil

    outputs = [p for s in stages.values() for k in ("outs", "metrics", "plots") for p in _paths(s.get(k))]
    for dep in _paths(stages[name].get("deps")):
        if not dep.startswith(PATH_PREFIXES):
            continue
        owner = next((o for o in outputs if dep == o or dep.startswith(o + "/")), dep)
        src, dst = source / owner, dest / owner
        if dst.exists() or not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


@pytest.mark.parametrize(
    "name",
    [
        "calibrate",
        "evaluate@fp32",
    ],
)
def test_stage_reads_only_declared_inputs(name: str, project: Path, prepared_tiny: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["backends"] = ["onnxruntime"]  # the parent process is what is traced; keep it quick
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = expand_stages(DVC_YAML, params)
    _stage_inputs_from(prepared_tiny, project, stages, name)
    proc, reads = _traced_reads(stages[name], project, tmp_path / "reads.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reads, "the tracer saw no reads at all"
    stage = stages[name]
    allowed = [p.rstrip("/") for key in ("deps", "outs") for p in _paths(stage.get(key))]
    undeclared = sorted(r for r in reads if not any(r == a or r.startswith(a + "/") for a in allowed))
    assert not undeclared, f"{name} reads files that are not among its deps: {undeclared}"
