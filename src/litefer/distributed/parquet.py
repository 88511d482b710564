"""The Parquet dataset ``--parquet DIR``: part files written atomically by the driver as results come,
the items each part holds in its metadata (so a rerun skips them, and nothing else marks them done),
the run's settings, and the ``skipped`` table.

    DIR/part-000001.parquet ...   rows: the CSV's columns and types (``frame``, ``time`` always there)
    DIR/_skipped.parquet          source, kind, reason, error: the inputs skipped, like predict's report
    DIR/_litefer.json             the settings the rows depend on; a rerun with others is refused

Readers of ``DIR`` (pyarrow, pandas, Ray) ignore names starting with ``_`` and ``.``.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from ..inference.inputs import kind_of
from ..inference.predict import reason_of
from ..inference.recognizer import column_types
from ..utils import atomic_open, atomic_write_json, remove_stale_temp_files

# per row: the item (image source or video range key) it belongs to; False for the placeholder of an
# item without rows (a range past a video's real end); a warning about the item (truncated video)
INTERNAL = ("_item", "_keep", "_note")
PART = re.compile(r"part-(\d{6,})\.parquet")
SKIPPED = "_skipped.parquet"
SETTINGS = "_litefer.json"
ITEMS_KEY, NOTES_KEY = b"litefer.items", b"litefer.notes"


def schema(class_names: list[str], internal: bool = True):
    """The Arrow schema of the rows, from the CSV's one column definition (:func:`column_types`)."""
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
    fields = [pa.field(c, types[t]) for c, t in column_types(class_names).items()]
    if internal:
        fields += [pa.field("_item", pa.string()), pa.field("_keep", pa.bool_()), pa.field("_note", pa.string())]
    return pa.schema(fields)


def public_rows(block):
    """An actor's block without the placeholders of items that have no rows, and without the internal columns."""
    return block.filter(block.column("_keep")).drop_columns(list(INTERNAL))


class PartsFolder:
    """``DIR`` for one run: locked against a second writer, stale temporary files removed, the items
    already written (and their notes) read from the parts' metadata."""

    def __init__(self, folder: str | os.PathLike, settings: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / "_litefer.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OSError(f"--parquet {self.folder}: another run is writing to this folder") from None
        remove_stale_temp_files(self.folder)
        self._check_settings(settings)
        self.done: set[str] = set()
        self.notes: dict[str, str] = {}
        self.next = 1
        for path in self.parts():
            meta = _metadata(path)
            self.done.update(json.loads(meta.get(ITEMS_KEY, b"[]")))
            self.notes.update(json.loads(meta.get(NOTES_KEY, b"{}")))
            self.next = max(self.next, int(PART.fullmatch(path.name)[1]) + 1)

    def _check_settings(self, settings: dict) -> None:
        path = self.folder / SETTINGS
        if path.is_file() and any(PART.fullmatch(p.name) for p in self.folder.iterdir()):
            old = json.loads(path.read_text())
            for key in sorted(set(old) | set(settings)):
                if old.get(key) != settings.get(key):
                    raise ValueError(f"--parquet {self.folder}: written with {key}={old.get(key)!r}, not "
                                     f"{settings.get(key)!r}; use the same options to resume, or another folder")
        atomic_write_json(path, settings)

    def parts(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if PART.fullmatch(p.name))

    def write(self, block) -> int:
        """One part from an actor's output block; returns its rows. Atomic: a part is all there or absent."""
        import pyarrow.parquet as pq

        fresh = [k not in self.done for k in block.column("_item").to_pylist()]
        block = block.filter(fresh)                  # a retried task's output delivered twice counts once
        items = list(dict.fromkeys(block.column("_item").to_pylist()))
        if not items:
            return 0
        notes = {k: n for k, n in zip(block.column("_item").to_pylist(), block.column("_note").to_pylist()) if n}
        rows = public_rows(block)
        meta = {ITEMS_KEY: json.dumps(items).encode(), NOTES_KEY: json.dumps(notes).encode()}
        rows = rows.replace_schema_metadata({**(rows.schema.metadata or {}), **meta})
        with atomic_open(self.folder / f"part-{self.next:06d}.parquet") as f:
            pq.write_table(rows, f)
        self.next += 1
        self.done.update(items)
        self.notes.update(notes)
        return rows.num_rows

    def write_skipped(self, problems: list[str]) -> list[dict]:
        """``_skipped.parquet`` from every part's error rows and notes and this run's input problems."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        entries = [_skip(m.partition(": ")[0], "input", m) for m in problems]
        for path in self.parts():
            t = pq.read_table(path, columns=["source", "error"])
            entries += [_skip(s, kind_of(s), e) for s, e in zip(t["source"].to_pylist(), t["error"].to_pylist()) if e]
        firsts = {}
        for item, note in self.notes.items():
            firsts.setdefault(item.rpartition("#")[0], note)     # one entry per video, however many ranges
        entries += [{"source": s, "kind": "video", "reason": "incomplete video", "error": n} for s, n in firsts.items()]
        table = pa.Table.from_pylist(entries, schema=skipped_schema())
        with atomic_open(self.folder / SKIPPED) as f:
            pq.write_table(table, f)
        return entries

    def close(self) -> None:
        self._lock.close()


def _skip(source: str, kind: str, message: str) -> dict:
    return {"source": source, "kind": kind, "reason": reason_of(message), "error": message}


def skipped_schema():
    import pyarrow as pa

    return pa.schema([pa.field(c, pa.string()) for c in ("source", "kind", "reason", "error")])


def _metadata(path: Path) -> dict:
    import pyarrow.parquet as pq

    return pq.read_schema(path).metadata or {}


def read_skipped(folder: str | os.PathLike):
    """The ``skipped`` table of a ``--parquet`` folder, as a pyarrow Table."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(folder) / SKIPPED)
