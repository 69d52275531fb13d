"""Archive integrity (issue "Reliability", item 3): a flipped byte inside a JPEG decodes without error,
so archives are hashed before they are read: the offline copies against their known SHA-256, a
user's own archive against the hash recorded in the prepared output's meta.json."""
import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from shared import prepare as prepare_cli
from shared.data import (CIFAR10_CLASSES, KNOWN_SHA256, ArchiveHashError, load_prepared, load_split, prepare,
                         sha256_file)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _jpeg_tar(tmp_path: Path, name: str) -> Path:
    """An uncompressed tar of a CIFAR-10-shaped JPEG tree, one image per class and split."""
    rng = np.random.default_rng(0)
    tar = tmp_path / name
    with tarfile.open(tar, "w") as tf:
        for split in ("train", "test"):
            for c in CIFAR10_CLASSES:
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
                info = tarfile.TarInfo(f"{split}/{c}/000.jpg")
                info.size = len(buf.getvalue())
                tf.addfile(info, io.BytesIO(buf.getvalue()))
    return tar


def _scan_byte(tar: Path, member: str) -> int:
    """The file offset of a byte in the middle of ``member``'s JPEG entropy-coded data (not a marker)."""
    with tarfile.open(tar) as tf:
        m = tf.getmember(member)
        payload = tf.extractfile(m).read()
    start = payload.index(b"\xff\xda")  # start of scan
    i = (start + len(payload)) // 2
    while payload[i] in (0xFF, 0xEF) or payload[i - 1] == 0xFF:  # neither make nor break a marker
        i += 1
    return m.offset_data + i


def test_known_hashes_are_the_data_readmes(data_root):
    """KNOWN_SHA256 is a transcription: it must say what ../shared/data says."""
    listed = dict(re.findall(r"^- `([^`]+)`: ([0-9a-f]{64})\s*$", (data_root / "README.md").read_text(), re.M))
    for f in sorted((data_root / "omniglot").glob("*.sha256")):
        digest, name = f.read_text().split()
        listed[f"omniglot/{name}"] = digest
    assert listed == KNOWN_SHA256


def test_sha256_file_streams_in_chunks(tmp_path):
    payload = np.random.default_rng(0).bytes(3 * 1000 + 7)
    f = tmp_path / "blob.bin"
    f.write_bytes(payload)
    assert sha256_file(f, chunk=1000) == sha256_file(f) == hashlib.sha256(payload).hexdigest()


def test_a_flipped_byte_in_a_known_archive_is_refused_naming_the_file(data_root, tmp_path, capsys):
    copy = tmp_path / "mnist-png.tar.gz"
    shutil.copyfile(data_root / "mnist-png.tar.gz", copy)
    _flip(copy, copy.stat().st_size // 2)
    out = tmp_path / "prepared"
    with pytest.raises(ArchiveHashError) as info:
        prepare("mnist", out, path=copy, progress=False)
    message = str(info.value)
    assert message.startswith(f"{copy}: SHA-256 mismatch")
    assert KNOWN_SHA256["mnist-png.tar.gz"] in message and sha256_file(copy) in message
    assert "fresh copy of mnist-png.tar.gz" in message
    assert not out.exists()
    with pytest.raises(ArchiveHashError, match=re.escape(str(copy))):
        load_split("mnist", "test", path=copy, progress=False)

    # the stage command: one line naming the file, exit 2, nothing written
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"scale": "smoke", "tracking": {"backend": "none"},
                                      "data": {"paths": {"mnist": str(copy)}}}))
    assert prepare_cli.main(["dataset", "mnist", "--params", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {copy}: SHA-256 mismatch") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_unmodified_known_archives_pass_and_are_recorded_as_known(data_root, tmp_path):
    meta = prepare("mnist", tmp_path / "mnist", path=data_root / "mnist-png.tar.gz", limit_per_class=1,
                   progress=False)
    assert meta["source"]["archives"] == [{"path": str((data_root / "mnist-png.tar.gz").resolve()),
                                           "sha256": KNOWN_SHA256["mnist-png.tar.gz"], "check": "known"}]
    meta = prepare("omniglot", tmp_path / "omniglot", path=data_root, limit_per_class=1, progress=False)
    assert [(Path(a["path"]).name, a["check"]) for a in meta["source"]["archives"]] == [
        ("images_background.npz", "known"), ("images_evaluation.npz", "known")]


def test_a_users_archive_is_recorded_and_a_changed_file_is_refused(tmp_path, capsys):
    tar = _jpeg_tar(tmp_path, "my-cifar.tar")
    original = sha256_file(tar)
    out = tmp_path / "prepared"
    meta = prepare("cifar10", out, path=tar, progress=False)
    assert meta["source"]["archives"] == [{"path": str(tar.resolve()), "sha256": original, "check": "recorded"}]
    assert json.loads((out / "meta.json").read_text())["source"]["archives"] == meta["source"]["archives"]
    prepare("cifar10", out, path=tar, progress=False)  # the same file again: fine
    x_before, _ = load_prepared(out, "train")
    written = {p.name: p.read_bytes() for p in out.iterdir()}

    # one byte flipped inside a JPEG: it still decodes, to other pixels (the silent corruption) ...
    _flip(tar, _scan_byte(tar, "train/bird/000.jpg"))
    x_flipped, _ = load_split("cifar10", "train", path=tar, progress=False)
    assert x_flipped.shape == x_before.shape and not np.array_equal(x_flipped, x_before)
    # ... which preparing the same output again refuses, naming the file, both hashes and what to do
    with pytest.raises(ArchiveHashError) as info:
        prepare("cifar10", out, path=tar, progress=False)
    message = str(info.value)
    assert message.startswith(f"{tar}: SHA-256 is {sha256_file(tar)}, but {original} was recorded in "
                              f"{out / 'meta.json'}")
    assert f"delete {out} and prepare again" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written

    # another file than the recorded one: prepared, with a warning naming both
    other = tmp_path / "other.tar"
    shutil.copyfile(tar, other)
    capsys.readouterr()
    meta = prepare("cifar10", out, path=other, progress=False)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {out} was prepared from {tar.resolve()} (sha256 {original})")
    assert str(other.resolve()) in err
    assert meta["source"]["archives"][0]["path"] == str(other.resolve())
