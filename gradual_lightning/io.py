"""Atomic file writes: a crash mid-write leaves the previous file (or none), never a truncated one. Text reads
that name the file, line and byte offset of a byte that is not UTF-8."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradual_lightning.records import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp makes 0600 files, results are for sharing


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file with newlines as open() gives them. A byte that is not UTF-8 is a DataError naming
    the file, line and byte offset; the decoder's own error would print kilobytes of the file's bytes."""
    data = Path(path).read_bytes()
    try:
        return _universal_newlines(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = _universal_newlines(data[:e.start].decode("utf-8")).count("\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} "
                        f"({e.reason}); save the file as UTF-8") from None


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for n, line in enumerate(read_utf8(path).split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
    return rows


def user_cache_dir(env_var: str, name: str, root: str | Path | None = None) -> Path:
    """`$env_var` when set, else `<root>/<name>` (train.py passes `paths.cache_dir`), else
    `<$XDG_CACHE_HOME or ~/.cache>/gradual_lightning/<name>`."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    if root:
        return Path(root).expanduser() / name
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gradual_lightning" / name
