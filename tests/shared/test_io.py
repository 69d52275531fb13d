"""shared.io.atomic_write_many: files that belong together appear together or not at all."""
import pytest

from shared.io import atomic_write_many


def test_atomic_write_many_writes_every_file_in_order(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    atomic_write_many({a: lambda f: f.write(b"one"), b: lambda f: f.write(b"two")})
    assert a.read_bytes() == b"one" and b.read_bytes() == b"two"
    assert a.stat().st_mtime_ns <= b.stat().st_mtime_ns  # moved into place in the mapping's order


def test_a_failure_while_staging_leaves_every_file_as_it_was(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"old a")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_many({a: lambda f: f.write(b"new a"), b: fail})
    assert a.read_bytes() == b"old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temp file left behind
