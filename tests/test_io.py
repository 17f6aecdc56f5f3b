"""stages/lib/core/io.py: atomic file and folder output, JSON/CSV helpers."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from stages.lib.core.io import atomic_dir, atomic_path, read_json, write_bytes, write_csv, write_json, write_text


class Boom(RuntimeError):
    pass


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- atomic_path -------------------------------------------------------------------------


def test_atomic_path_renames_onto_dest_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.bin"  # parent created on demand
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent
        assert tmp != dest
        tmp.write_bytes(b"payload")
        assert not dest.exists(), "dest must not appear before the body finished"
    assert dest.read_bytes() == b"payload"
    assert _names(dest.parent) == {"out.bin"}


def test_atomic_path_failure_leaves_no_dest_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_path(dest) as tmp:
        tmp.write_text("half of it")
        raise Boom("killed mid-write")
    assert not dest.exists()
    assert _names(tmp_path) == set()


def test_atomic_path_failure_keeps_old_content(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old content")
    with pytest.raises(Boom), atomic_path(dest) as tmp:
        tmp.write_text("new but incomplete")
        raise Boom()
    assert dest.read_text() == "old content"
    assert _names(tmp_path) == {"out.txt"}


def test_atomic_path_replaces_existing_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    write_text(dest, "new")
    assert dest.read_text() == "new"
    assert _names(tmp_path) == {"out.txt"}


@pytest.mark.parametrize(
    "writer, payload",
    [
        (write_text, "text ✓"),
        (write_bytes, b"\x00\x01bytes"),
        (write_json, {"a": 1}),
    ],
)
def test_written_files_get_normal_permissions(tmp_path: Path, writer, payload) -> None:
    old = os.umask(0o022)
    try:
        dest = tmp_path / "f"
        writer(dest, payload)
        mode = stat.S_IMODE(dest.stat().st_mode)
    finally:
        os.umask(old)
    assert mode & 0o044 != 0, f"mode {oct(mode)}: mkstemp's 0600 leaked through"
    assert mode == 0o644


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "f", "x")
        mode = stat.S_IMODE((tmp_path / "f").stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o640
    assert _current_umask() == old


def test_write_bytes_and_text_round_trip(tmp_path: Path) -> None:
    write_bytes(tmp_path / "b", bytes(range(256)))
    write_text(tmp_path / "t", "héllo\nwörld")
    assert (tmp_path / "b").read_bytes() == bytes(range(256))
    assert (tmp_path / "t").read_text(encoding="utf-8") == "héllo\nwörld"


def test_write_json_round_trip_with_numpy_and_paths(tmp_path: Path) -> None:
    obj = {"n": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3), "p": Path("a/b"), "nested": {"x": [1, 2]}}
    write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert text.endswith("\n")
    assert read_json(tmp_path / "o.json") == {"n": 3, "f": 0.5, "arr": [0, 1, 2], "p": "a/b", "nested": {"x": [1, 2]}}
    assert list(json.loads(text)) == ["n", "f", "arr", "p", "nested"]  # key order kept


def test_write_json_unserialisable_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "o.json"
    dest.write_text('{"old": true}')
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json(dest, {"bad": object()})
    assert read_json(dest) == {"old": True}
    assert _names(tmp_path) == {"o.json"}


# -- write_csv ---------------------------------------------------------------------------


def test_write_csv_header_is_union_of_keys_in_first_seen_order(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": 2}, {"b": 3, "c": 4}, {"d": None, "a": 5}]
    write_csv(tmp_path / "r.csv", rows)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "a,b,c,d"
    assert lines[1:] == ["1,2,,", ",3,4,", "5,,,"]


def test_write_csv_quotes_commas_quotes_and_newlines(tmp_path: Path) -> None:
    rows = [{"name": "a,b", "note": 'say "hi"', "multi": "x\ny", "plain": 1.5}]
    write_csv(tmp_path / "r.csv", rows)
    text = (tmp_path / "r.csv").read_text()
    assert '"a,b"' in text and '"say ""hi"""' in text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed == [{"name": "a,b", "note": 'say "hi"', "multi": "x\ny", "plain": "1.5"}]


# -- atomic_dir --------------------------------------------------------------------------


def test_atomic_dir_creates_folder(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        (tmp / "a.txt").write_text("a")
        assert not dest.exists()
    assert _names(dest) == {"a.txt"}
    assert _names(tmp_path) == {"out"}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~_current_umask()


def test_atomic_dir_replaces_folder_as_a_whole(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("stale")
    (dest / "keep.txt").write_text("old")
    with atomic_dir(dest) as tmp:
        (tmp / "keep.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
        assert (dest / "stale.txt").exists(), "old folder must stay until the body succeeds"
    assert _names(dest) == {"keep.txt", "sub"}  # nothing of the old folder is merged in
    assert (dest / "keep.txt").read_text() == "new"
    assert _names(tmp_path) == {"out"}  # no .out.old, no temp folder


def test_atomic_dir_failure_keeps_old_folder_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(dest) as tmp:
        (tmp / "partial.txt").write_text("partial")
        raise Boom()
    assert _names(dest) == {"old.txt"}
    assert (dest / "old.txt").read_text() == "old"
    assert _names(tmp_path) == {"out"}


def test_atomic_dir_failure_without_old_folder(tmp_path: Path) -> None:
    with pytest.raises(Boom), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "partial.txt").write_text("partial")
        raise Boom()
    assert _names(tmp_path) == set()
