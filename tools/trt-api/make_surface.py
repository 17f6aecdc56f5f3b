#!/usr/bin/env python3
"""Dump the Python API surface of a TensorRT version as JSON, without TensorRT or a GPU.

    tools/trt-api/make_surface.py REQUIREMENT --python-version X.Y [--interpreter PATH] --out FILE

REQUIREMENT names a wheel on PyPI that carries TensorRT's Python bindings, e.g.
``tensorrt-cu13-bindings==11.4.0.106``, ``tensorrt-cu12-bindings==10.16.1.11`` or (8.6, whose
bindings exist for CPython <= 3.10 only) ``tensorrt==8.6.0``. The script downloads that wheel
(``pip download --no-deps``), unpacks only its Python files and the bindings extension
(``tensorrt.so``), builds stub libraries for the TensorRT libraries that extension links (each
defines every TensorRT symbol it imports, as a function returning 0), imports the package with
``LD_LIBRARY_PATH`` on the stubs and writes every public name of the module: a class maps to
the sorted list of its attributes (dunder names left out, ``__init__`` kept), an enum also gets
``"<Name>.__members__"`` (its members in declaration order), anything else maps to its type name.
Nothing of TensorRT runs this way: the file says which names exist, not what they do.

Needs: pip, gcc, nm and readelf (binutils), and a CPython of the wheel's version (found in
pyenv, on PATH as pythonX.Y, or given with --interpreter).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Run by the target interpreter with the unpacked package on sys.path (Python >= 3.6 syntax).
DUMP = r"""
import importlib, json, sys
m = importlib.import_module(sys.argv[1])
out = {}
for name in sorted(dir(m)):
    obj = getattr(m, name)
    if isinstance(obj, type):
        out[name] = sorted(a for a in dir(obj) if not a.startswith("__") or a == "__init__")
        members = getattr(obj, "__members__", None)
        if isinstance(members, dict):
            out[name + ".__members__"] = list(members)
    else:
        out[name] = type(obj).__name__
json.dump(out, sys.stdout)
"""

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def find_interpreter(version: str) -> str:
    """A CPython ``version`` (X.Y): pyenv's newest build of it, else pythonX.Y on PATH."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = ""
    if root:
        builds = sorted(
            Path(root, "versions").glob(f"{version}.*"),
            key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)],
        )
        for build in reversed(builds):
            exe = build / "bin" / f"python{version}"
            if exe.is_file():
                return str(exe)
    exe = shutil.which(f"python{version}")
    if exe:
        return exe
    raise SystemExit(f"no CPython {version} found (pyenv or PATH): pass --interpreter")


def download(requirement: str, python_version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, requirement], check=True)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel for {requirement}, got {[w.name for w in wheels]}")
    return wheels[0]


def unpack_bindings(wheel: Path, dest: Path) -> tuple[str, Path]:
    """Extract the package holding ``tensorrt*.so`` (its .py files and that extension only)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        ext = [n for n in names if re.fullmatch(r"[^/]+/tensorrt[^/]*\.so", n)]
        if len(ext) != 1:
            raise SystemExit(f"{wheel.name}: expected one bindings extension, found {ext}")
        package = ext[0].split("/")[0]
        for name in names:
            if name.startswith(package + "/") and (name.endswith(".py") or name == ext[0]):
                zf.extract(name, dest)
    return package, dest / ext[0]


def _system_libraries() -> set[str]:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def missing_libraries(extension: Path) -> list[str]:
    """The shared libraries ``extension`` needs that this machine does not have (TensorRT's)."""
    dynamic = subprocess.run(["readelf", "-d", str(extension)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    have = _system_libraries()
    return [lib for lib in needed if lib not in have]


def imported_symbols(extension: Path) -> list[str]:
    """Strong, unversioned undefined symbols that neither Python nor libc provides."""
    listing = subprocess.run(
        ["nm", "-D", "--undefined-only", str(extension)], capture_output=True, text=True, check=True
    ).stdout
    process = ctypes.CDLL(None)
    symbols = []
    for line in listing.splitlines():
        kind, _, name = line.strip().partition(" ")
        if kind != "U" or "@" in name or re.match(r"_?Py", name) or hasattr(process, name):
            continue
        symbols.append(name)
    return sorted(set(symbols))


def build_stubs(libraries: list[str], symbols: list[str], dest: Path) -> None:
    """One stub per missing library, each defining every imported symbol (returning 0)."""
    dest.mkdir(parents=True, exist_ok=True)
    source = dest / "stub.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in libraries:
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(dest / lib), str(source), f"-Wl,-soname,{lib}"], check=True
        )


def dump_surface(interpreter: str, package: str, root: Path, stubs: Path) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(root), LD_LIBRARY_PATH=str(stubs), PYTHONNOUSERSITE="1")
    proc = subprocess.run(
        [interpreter, "-c", DUMP, package], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"importing {package} on the stubs failed:\n{proc.stderr[-3000:]}")
    surface: dict[str, object] = json.loads(proc.stdout)
    return surface


def write_surface(surface: dict[str, object], out: Path) -> None:
    """One name per line: compact, and a diff between versions reads name by name."""
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(surface.items())]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("requirement", help="e.g. tensorrt-cu13-bindings==11.4.0.106")
    ap.add_argument("--python-version", required=True, help="CPython X.Y the wheel is built for")
    ap.add_argument("--interpreter", help="that CPython (default: pyenv's or pythonX.Y on PATH)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    interpreter = args.interpreter or find_interpreter(args.python_version)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel = download(args.requirement, args.python_version, work / "wheel")
        package, extension = unpack_bindings(wheel, work / "pkg")
        libraries = missing_libraries(extension)
        symbols = imported_symbols(extension)
        build_stubs(libraries, symbols, work / "stubs")
        surface = dump_surface(interpreter, package, work / "pkg", work / "stubs")
    write_surface(surface, args.out)
    print(f"{args.out}: {len(surface)} names from {wheel.name} ({len(symbols)} stubbed symbols in {libraries})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
