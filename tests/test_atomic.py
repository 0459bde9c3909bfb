"""atomic.atomic_path: the one helper every writer uses; nothing half-written, no leftovers."""

import os
import subprocess

import pytest

from tlcourse import atomic


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_file_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "out" / "model.txt"
    with atomic.atomic_path(target) as temporary:
        temporary.write_text("first")
        assert temporary.parent == target.parent and not target.exists()
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.txt"]  # the temporary went too


def test_a_folder_replaces_the_old_one_and_a_failed_one_leaves_it(tmp_path):
    target = tmp_path / "saved"
    for content in ("old", "new"):
        with atomic.atomic_path(target) as folder:
            folder.mkdir()
            (folder / "file").write_text(content)
    assert (target / "file").read_text() == "new"
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as folder:
        folder.mkdir()
        raise RuntimeError
    assert (target / "file").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["saved"]


def test_a_folder_set_aside_by_a_killed_writer_is_put_back(tmp_path):
    pid = dead_pid()
    aside = tmp_path / f".data.old-{pid}-0123abcd"  # killed after renaming the old folder aside
    aside.mkdir()
    (aside / "COMPLETE").write_text("")
    (tmp_path / f".data.tmp-{pid}-89abcdef").mkdir()  # ... and before renaming the new one in
    atomic.recover(tmp_path / "data")
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and (tmp_path / "data" / "COMPLETE").is_file()


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path):
    mine = tmp_path / f".x.bin.tmp-{os.getpid()}-0123abcd"  # a writer still running (this process)
    stale = tmp_path / f".x.bin.tmp-{dead_pid()}-0123abcd.bin"
    other = tmp_path / ".x.bin.notes"
    for path in (mine, stale, other):
        path.write_text("")
    with atomic.atomic_path(tmp_path / "x.bin") as temporary:
        temporary.write_bytes(b"1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, "x.bin"])
