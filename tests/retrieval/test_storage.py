import numpy as np
import pytest

from cascade.retrieval.errors import IndexMismatch
from cascade.retrieval.storage import atomic_dir, read_index, write_index


def test_write_read_verify(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {"p": 1}, 3, {"a": np.arange(3)}, {"meta": {"x": 1}})
    m, arrays, jsons = read_index(tmp_path / "i", "toy", (1,), verify=True)
    assert m.params == {"p": 1} and arrays["a"].tolist() == [0, 1, 2] and jsons["meta"] == {"x": 1}
    np.save(tmp_path / "i" / "a.npy", np.arange(4))
    with pytest.raises(IndexMismatch, match="checksum"):
        read_index(tmp_path / "i", "toy", (1,), verify=True)


def test_exception_inside_atomic_dir_keeps_old_content(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.zeros(1)})
    with pytest.raises(ValueError), atomic_dir(tmp_path / "i") as tmp:
        (tmp / "junk").write_text("half written")
        raise ValueError("boom")
    assert read_index(tmp_path / "i", "toy", (1,))[1]["a"].tolist() == [0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]


def test_replace_killed_between_renames_is_recovered(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.ones(1)})
    (tmp_path / "i").rename(tmp_path / "i.old")  # as if killed right after the first rename
    assert read_index(tmp_path / "i", "toy", (1,))[1]["a"].tolist() == [1.0]
