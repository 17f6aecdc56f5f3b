"""Atomic file output and small JSON/YAML helpers.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a killed stage never leaves a half-written file that DVC would cache.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import FS_FAULTS, OutputWriteError

FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    ``need_bytes``: the output's expected size, when known; a file system with less free space
    is refused before anything is written. A file-system fault (full, read-only, permission,
    quota) becomes an :class:`~stages.lib.core.errors.OutputWriteError` naming ``dest``; the
    temporary file is removed and ``dest`` keeps its earlier content.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if need_bytes is not None and need_bytes > free_bytes(dest.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
        sweep_stale(dest.parent)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as exc:
        raise _fault(exc, dest, need_bytes, None) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files
        commit(tmp_path, dest)
    except OSError as exc:
        raise _fault(exc, dest, need_bytes, tmp_path) from exc
    except Exception as exc:
        # torch.save and torch.onnx.export report a full disk as a RuntimeError
        if "write" in str(exc).lower() and free_bytes(dest.parent) < _FULL_BELOW:
            full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path))
            raise _fault(full, dest, need_bytes, tmp_path) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def temp_prefix(dest: Path, tag: str = "") -> str:
    """The name prefix of ``dest``'s temporary files: hidden, and tagged with this process's
    id so that :func:`sweep_stale` can tell a killed writer's leftovers (``.dvcignore``
    hides them from DVC meanwhile)."""
    return f".{dest.name}.pid{os.getpid()}.{tag + '.' if tag else ''}"


_STALE = re.compile(r"^\..+\.pid(\d+)\.")


def sweep_stale(folder: Path) -> None:
    """Remove temporary files and folders in ``folder`` whose writing process is gone (a
    stage killed before its rename)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = _STALE.match(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def commit(tmp: Path, dest: Path) -> None:
    """The rename that publishes an output: every atomic write ends here (fault-injection
    tests patch it)."""
    os.replace(tmp, dest)


_FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged user may still write on ``folder``'s file system."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _fault(exc: OSError, dest: Path, need_bytes: int | None, tmp: Path | None) -> OSError:
    """``exc`` as an OutputWriteError about ``dest`` when it is a file-system fault of this
    write (not of some other file the body read); otherwise ``exc`` itself."""
    if isinstance(exc, OutputWriteError) or exc.errno not in FS_FAULTS:
        return exc
    if exc.filename not in (None, str(dest), str(tmp), str(dest.parent)) and not str(exc.filename).startswith(
        str(dest.parent / f".{dest.name}.")
    ):
        return exc
    written = tmp.stat().st_size if tmp is not None and tmp.exists() else 0
    old = dest.stat().st_size if dest.is_file() else 0
    need, at_least = (need_bytes, False) if need_bytes is not None else (max(written, old) or None, True)
    try:
        free = free_bytes(dest.parent if dest.parent.exists() else _existing(dest.parent))
    except OSError:
        free = None
    return OutputWriteError(exc.errno or errno.EIO, str(dest), need if exc.errno in FULL else None, free, at_least)


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest, need_bytes=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(dest, need_bytes=len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a missing or malformed one is an InputFileError naming it."""
    from .errors import InputFileError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise InputFileError(f"{path} is missing: run `dvc repro` (or the stage that writes it)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise InputFileError(
            f"{path} is not a readable JSON file ({exc}): run `dvc repro -f` for the stage that writes it"
        ) from exc


def write_csv(dest: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write records with the union of their keys as header (stable order of first sight)."""
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(k)) for k in header))
    write_text(dest, "\n".join(lines) + "\n")


def write_records(dest: str | os.PathLike[str], rows: list[dict[str, Any]], empty_header: str = "backend") -> None:
    """:func:`write_csv`, or only ``empty_header`` when there are no rows: a stage whose every
    backend was skipped still writes the file DVC declares."""
    if rows:
        write_csv(dest, rows)
    else:
        write_text(dest, empty_header + "\n")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics; convert without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``dest`` as a whole on success.

    A file-system fault names the path under ``dest`` (not under the temporary folder), and
    ``dest`` keeps its earlier content."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(dest.parent)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), dir=dest.parent))
    except OSError as exc:
        raise _fault(exc, dest, None, None) from exc
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            try:
                commit(tmp, dest)
            except OSError:
                os.replace(old, dest)  # the earlier output comes back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            commit(tmp, dest)
    except OutputWriteError as exc:
        raise _moved(exc, tmp, dest) from exc
    except OSError as exc:
        raise _fault(exc, dest, None, None) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _moved(exc: OutputWriteError, tmp: Path, dest: Path) -> OutputWriteError:
    """``exc`` naming the file under ``dest`` that it named under the temporary folder ``tmp``."""
    name = str(exc.filename)
    if not name.startswith(str(tmp)):
        return exc
    path = str(dest) + name[len(str(tmp)) :]
    return OutputWriteError(exc.errno or errno.EIO, path, exc.need_bytes, exc.free_bytes, exc.at_least)
