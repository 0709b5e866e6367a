import pytest

from edgeopt.core.cache import Cache, stable_hash


def test_key_ignores_dict_order_and_changes_with_content():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_build_is_atomic_and_reused(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def builder(d):
        calls.append(d)
        (d / "x.txt").write_text("done")

    p1 = cache.build("stage", "k1", builder)
    p2 = cache.build("stage", "k1", builder)
    assert p1 == p2 and len(calls) == 1 and (p1 / "x.txt").read_text() == "done"
    assert cache.hits == ["stage/k1"] and cache.misses == ["stage/k1"]


def test_failed_builder_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)

    def boom(d):
        (d / "half.bin").write_bytes(b"xx")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.build("stage", "k", boom)
    assert cache.lookup("stage", "k") is None
    assert list((tmp_path / "stage").iterdir()) == []


def test_clean_partial_removes_leftovers_of_a_killed_process(tmp_path):
    leftover = tmp_path / "export" / ".abc.tmp-12345"
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_bytes(b"partial")
    assert Cache(tmp_path).clean_partial() == 1
    assert not leftover.exists()


def test_disabled_cache_rebuilds(tmp_path):
    Cache(tmp_path).build("s", "k", lambda d: (d / "a").write_text("1"))
    p = Cache(tmp_path, enabled=False).build("s", "k", lambda d: (d / "a").write_text("2"))
    assert (p / "a").read_text() == "2"
