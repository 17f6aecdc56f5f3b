"""data.download=auto: CIFAR-10's archive fetched (and md5-checked) when data/raw holds no
dataset, here from a server on 127.0.0.1 serving a small archive with the real layout; offline
or corrupt, one line that says where to put the file and nothing left behind."""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stages.lib.core.errors import DatasetError
from stages.lib.core.io import read_json
from stages.lib.data import prepared as data
from stages.lib.data import rawdata
from tests.conftest import write_params


def _archive(per_batch: int = 20) -> bytes:
    """cifar-10-python.tar.gz's layout: cifar-10-batches-py/data_batch_1..5 and test_batch."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            batch = {
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"labels": [int(x) for x in rng.integers(0, 10, per_batch)],
            }
            blob = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, bytes]]:
    body = _archive()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-python.tar.gz", body
    httpd.shutdown()


def test_auto_is_the_default() -> None:
    from tests.conftest import compose

    assert compose([])["data"]["download"] == "auto"


def test_prepare_downloads_checks_and_loads_the_archive(
    server: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stages import prepare

    url, body = server
    monkeypatch.setattr(rawdata, "CIFAR10_URL", url)
    monkeypatch.setattr(rawdata, "CIFAR10_MD5", hashlib.md5(body).hexdigest())  # noqa: S324
    raw = tmp_path / "raw"
    params = write_params(tmp_path, [f"data.raw_dir={raw}", "data.calib_size=8", "calibrate.num_images=8"])
    prepare.prepare(str(params), tmp_path / "prepared")
    assert (raw / "cifar-10-python.tar.gz").read_bytes() == body
    assert not list(raw.glob("*.part"))
    meta = read_json(tmp_path / "prepared" / "meta.json")
    assert meta["train_images"] == 100 and meta["test_images"] == 20 and meta["source"].startswith("pickle:")
    assert data.load_split(tmp_path / "prepared" / "train.npz").images.shape == (100, 32, 32, 3)


def test_a_corrupt_download_is_refused_and_removed(
    server: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rawdata, "CIFAR10_URL", server[0])  # the published md5 stays: a mismatch
    with pytest.raises(DatasetError, match="has md5 .* expected c58f30108f718f92721af3b95e74349a") as err:
        rawdata.locate(tmp_path, "auto", "auto")
    assert f"put a good cifar-10-python.tar.gz in {tmp_path}/" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_says_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(rawdata, "CIFAR10_URL", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    with pytest.raises(DatasetError) as err:
        rawdata.locate(tmp_path / "raw", "auto", "auto")
    msg = str(err.value)
    assert "\n" not in msg and "cannot be reached" in msg
    assert msg.endswith(
        f"put cifar-10-python.tar.gz (or cifar10-jpg.tar.gz, or an image-folder tree) in {tmp_path / 'raw'}/"
    )
    assert not list((tmp_path / "raw").iterdir())


def test_download_false_never_tries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rawdata, "CIFAR10_URL", "http://127.0.0.1:9/never")
    with pytest.raises(DatasetError, match="no CIFAR-10 found in .*set data.download=auto"):
        rawdata.locate(tmp_path, "auto", False)
