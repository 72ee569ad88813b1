"""Reading ERP documents from files for ``fapiao submit``: JSON or JSON Lines, files or stdin.

| input | read as |
|---|---|
| ``-`` | standard input |
| a directory | every ``*.json``, ``*.jsonl``, ``*.ndjson`` inside, sorted by name |
| ``*.jsonl`` / ``*.ndjson`` | one JSON value per non-empty line |
| any other file | one JSON value; if that fails, JSON Lines |

A JSON value is a document (object), an array of documents, or ``{"documents": [...]}``.
Numbers are read exactly (``loads_exact``), never through a float. A source that cannot be
read becomes a ``SourceError`` (reported, counted as refused) instead of stopping the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from schemas.money import loads_exact

__all__ = ["Loaded", "SourceError", "load_documents"]

LINE_SUFFIXES: Final = (".jsonl", ".ndjson")
SUFFIXES: Final = (".json", *LINE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Loaded:
    """One document and where it came from (``file#index`` or ``file:line``)."""

    source: str
    document: Any


@dataclass(frozen=True, slots=True)
class SourceError:
    source: str
    message: str


def _values(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and isinstance(value.get("documents"), list):
        documents: list[Any] = value["documents"]
        return documents
    return [value]


def _parse(name: str, text: str, lines: bool) -> Iterator[Loaded | SourceError]:
    if not lines:
        try:
            value = loads_exact(text)
        except (ValueError, RecursionError):
            lines = True  # maybe JSON Lines after all
        else:
            for index, document in enumerate(_values(value)):
                yield Loaded(f"{name}#{index + 1}", document)
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = loads_exact(line)
        except (ValueError, RecursionError) as exc:
            yield SourceError(f"{name}:{number}", f"not JSON: {exc}")
            continue
        for index, document in enumerate(_values(value)):
            suffix = f"#{index + 1}" if isinstance(value, list) else ""
            yield Loaded(f"{name}:{number}{suffix}", document)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    return [path]


def load_documents(paths: list[str]) -> Iterator[Loaded | SourceError]:
    """Every document of ``paths`` (module table), in order."""
    for raw in paths:
        if raw == "-":
            yield from _parse("<stdin>", sys.stdin.read(), lines=False)
            continue
        path = Path(raw)
        if not path.exists():
            yield SourceError(raw, "no such file or directory")
            continue
        files = _files(path)
        if path.is_dir() and not files:
            yield SourceError(raw, "no *.json / *.jsonl files in this directory")
        for file in files:
            try:
                text = file.read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                yield SourceError(str(file), f"cannot read: {exc}")
                continue
            if not text.strip():
                yield SourceError(str(file), "empty file")
                continue
            yield from _parse(str(file), text, lines=file.suffix.lower() in LINE_SUFFIXES)
