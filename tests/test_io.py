"""Atomic writes: a failed write keeps the previous file and leaves no temp file; results get open()'s mode."""

import os

import pytest

from gradual_lightning.io import atomic_write_bytes, atomic_write_text, read_jsonl, write_jsonl


def test_a_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "old\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write, after the temp file exists
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_have_the_mode_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "sub" / "report.md", "x")
    assert os.stat(written).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_jsonl_round_trip_and_bad_line_named(tmp_path):
    rows = [{"id": "q1", "answers": ["Zürich"]}, {"id": "q2", "p": None}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert read_jsonl(path) == rows
    path.write_text('{"id": "q1"}\n{broken\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_read_jsonl_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "q1"}\r\n{"id": "q\xff"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not valid UTF-8: byte 0xff at byte offset 23"):
        read_jsonl(path)
    path.write_bytes(b'{"id": "q1"}\r\n\r{"id": "q2"}\r')  # newlines as open() reads them: \r\n, \r
    assert read_jsonl(path) == [{"id": "q1"}, {"id": "q2"}]
