"""Bounded-memory building blocks of a snapshot: entity-hash partitions and a key-ordered Parquet merge.

Peak memory depends on the chunk size, not on the window:

1. ``partition_by_entity`` streams Parquet sources record batch by record batch into ``n`` local part
   files by a hash of an entity column, so every event of an entity lands in one part, in the order the
   sources were given (point-in-time history features need an entity's events together and ordered);
2. each part is processed on its own by the caller and written back sorted by the output key;
3. ``merge_sorted_parts`` merges the key-sorted parts into one Parquet file in key order, one key range
   at a time, with row groups of a fixed size, so the bytes are those one ``write_table`` of the whole
   sorted table would give.

Part files are Arrow IPC (no encoding cost; ``read_part`` gives the frame ``pd.read_parquet`` would).

Light to import: pyarrow loads when a function is first used.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)
SORTED_PART_ROW_GROUP = 16_384  # rows per row group of a sorted part: the merge reads parts in these steps
KEY_SAMPLE_STRIDE = 1024  # every this-many-th key of a sorted part is kept to cut the key ranges


def peak_rss_gb() -> float:
    """Return this process's peak resident set size in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


@dataclass
class Progress:
    """Logs rows done, rate and peak memory after each chunk of a long step."""

    step: str
    total_rows: int
    done_rows: int = 0
    started: float = field(default_factory=time.perf_counter)

    def advance(self, rows: int, what: str) -> None:
        """Count ``rows`` more as done and log the step's progress."""
        self.done_rows += rows
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        log.info(
            "%s: %s; %d/%d rows (%.0f%%) in %.1fs, %.0f rows/s, peak RSS %.2f GB",
            self.step,
            what,
            self.done_rows,
            self.total_rows,
            100.0 * self.done_rows / max(self.total_rows, 1),
            elapsed,
            self.done_rows / elapsed,
            peak_rss_gb(),
        )


@dataclass(frozen=True)
class EntityParts:
    """The part files of an entity-hash partitioning, their row counts and rows from the leading sources."""

    paths: list[Path]
    leading_rows: list[int]
    rows: list[int]


def partition_by_entity(
    sources: Sequence[Any],
    entity_column: str,
    n_parts: int,
    folder: Path,
    *,
    leading_sources: int,
    total_rows: int = 0,
    batch_rows: int = 1 << 20,
) -> EntityParts:
    """Split Parquet ``sources`` into ``n_parts`` local files by a hash of ``entity_column``.

    Args:
        sources: Parquet files (paths or file-like objects), read one record batch at a time.
        entity_column: the column whose equal values must share a part (null values may go anywhere).
        n_parts: how many parts.
        folder: where the part files are written.
        leading_sources: the first sources whose rows the caller needs to tell apart (counted per part:
            a part's first ``leading_rows`` rows come from them, as rows keep the sources' order).
        total_rows: the sources' rows, for the progress log.
        batch_rows: rows read per record batch.

    Returns:
        The part files (one per part, possibly empty), with their leading and total row counts.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [folder / f"entity-part-{i:05d}.arrow" for i in range(n_parts)]
    writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * n_parts
    leading, rows = [0] * n_parts, [0] * n_parts
    schema: pa.Schema | None = None
    progress = Progress("Entity partitioning", total_rows)
    try:
        for number, source in enumerate(sources):
            reader = pq.ParquetFile(source)
            schema = schema or reader.schema_arrow
            for batch in reader.iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                if not table.schema.equals(schema):
                    table = table.cast(schema)
                part_of = _entity_parts(table.column(entity_column), n_parts)
                order = np.argsort(part_of, kind="stable")
                bounds = np.searchsorted(part_of[order], np.arange(n_parts + 1, dtype=np.uint64))
                ordered = table.take(pa.array(order))
                for part in range(n_parts):
                    start, stop = int(bounds[part]), int(bounds[part + 1])
                    if stop == start:
                        continue
                    if writers[part] is None:
                        writers[part] = pa.ipc.new_file(paths[part], schema)
                    writers[part].write_table(ordered.slice(start, stop - start))  # type: ignore[union-attr]
                    rows[part] += stop - start
                    if number < leading_sources:
                        leading[part] += stop - start
                progress.advance(table.num_rows, f"source {number + 1}")
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    for part, path in enumerate(paths):
        if writers[part] is None and schema is not None:
            with pa.ipc.new_file(path, schema) as empty:
                empty.write_table(schema.empty_table())
    return EntityParts(paths=paths, leading_rows=leading, rows=rows)


def _entity_parts(entities: pa.ChunkedArray, n_parts: int) -> Any:
    """Return each row's part: a hash of its entity modulo ``n_parts`` (nulls go to part 0).

    Each distinct entity of the batch is hashed once (pandas' stable ``hash_array``), then spread to its
    rows through the dictionary indices: far fewer Python objects than hashing every row.
    """
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(entities.combine_chunks())
    distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    parts_of_distinct = pd.util.hash_array(distinct) % np.uint64(n_parts)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    if encoded.indices.null_count:
        indices = np.nan_to_num(indices, nan=-1).astype(np.int64)
        return np.where(indices >= 0, parts_of_distinct[np.maximum(indices, 0)], np.uint64(0))
    return parts_of_distinct[indices]


def read_part(path: Path) -> pd.DataFrame:
    """Read a part file into the frame ``pd.read_parquet`` gives for the same rows (pandas metadata kept)."""
    import pyarrow as pa

    with pa.ipc.open_file(path) as reader:
        return reader.read_all().to_pandas()


def _part_rows(path: Path) -> int:
    """Return the rows of a part file."""
    import pyarrow as pa

    with pa.ipc.open_file(path) as reader:
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def write_sorted_part(table: pa.Table, key: str, path: Path) -> list[Any]:
    """Write ``table`` sorted by ``key`` to ``path`` and return a sample of its keys (for cutting ranges)."""

    import pyarrow as pa

    ordered = table.sort_by(key)
    with pa.ipc.new_file(path, ordered.schema) as writer:
        writer.write_table(ordered, max_chunksize=SORTED_PART_ROW_GROUP)
    return ordered.column(key).take(list(range(0, ordered.num_rows, KEY_SAMPLE_STRIDE))).to_pylist()


def key_range_bounds(samples: Iterable[Any], range_rows: int) -> list[Any]:
    """Return the sorted keys that cut the key space into ranges of about ``range_rows`` rows each."""
    ordered = sorted(samples)
    step = max(range_rows // KEY_SAMPLE_STRIDE, 1)
    return sorted(set(ordered[step::step]))


class _PartCursor:
    """Reads one key-sorted part file forward, row group by row group, handing out rows below a key."""

    def __init__(self, path: Path, key: str, schema: pa.Schema) -> None:
        import pyarrow as pa

        self._file = pa.ipc.open_file(path)
        self._groups: Iterator[int] = iter(range(self._file.num_record_batches))
        self._key, self._schema = key, schema
        self._pending = schema.empty_table()

    def take_below(self, bound: Any | None) -> pa.Table:
        """Return the part's next rows whose key is below ``bound`` (all remaining rows when None)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        while bound is None or self._pending.num_rows == 0 or self._last_key() < bound:
            group = next(self._groups, None)
            if group is None:
                break
            read = pa.Table.from_batches([self._file.get_batch(group)])
            self._pending = pa.concat_tables([self._pending, read.cast(self._schema)])
        if bound is None:
            cut = self._pending.num_rows
        else:
            cut = int(pc.sum(pc.less(self._pending.column(self._key), pa.scalar(bound))).as_py() or 0)
        taken, self._pending = self._pending.slice(0, cut), self._pending.slice(cut)
        return taken

    def _last_key(self) -> Any:
        """Return the largest key read so far."""
        return self._pending.column(self._key)[-1].as_py()


def merge_sorted_parts(
    parts: Sequence[Path],
    key: str,
    bounds: Sequence[Any],
    out: Path,
    *,
    schema: pa.Schema,
    row_group_rows: int,
    compression: str,
    check_range: Any = None,
) -> int:
    """Merge key-sorted ``parts`` into ``out`` in key order, one key range (cut at ``bounds``) at a time.

    Row groups hold exactly ``row_group_rows`` rows (the last one the rest) and each is written from one
    contiguous table, as ``pq.write_table(whole_sorted_table, row_group_size=row_group_rows)`` would.
    ``check_range`` (optional) is called with each sorted range before it is written (e.g. to refuse
    duplicate keys). Returns the number of rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cursors = [_PartCursor(path, key, schema) for path in parts]
    progress = Progress("Snapshot merge", sum(_part_rows(path) for path in parts))
    buffered: list[pa.Table] = []
    buffered_rows = written = 0
    with pq.ParquetWriter(out, schema, compression=compression, store_schema=False) as writer:
        for bound in [*bounds, None]:
            ranged = pa.concat_tables([cursor.take_below(bound) for cursor in cursors]).sort_by(key)
            if check_range is not None:
                check_range(ranged)
            buffered.append(ranged)
            buffered_rows += ranged.num_rows
            while buffered_rows >= row_group_rows or (bound is None and buffered_rows):
                whole = pa.concat_tables(buffered)
                size = min(row_group_rows, whole.num_rows)
                writer.write_table(whole.slice(0, size).combine_chunks(), row_group_size=row_group_rows)
                rest = whole.slice(size)
                buffered, buffered_rows, written = [rest], rest.num_rows, written + size
                progress.advance(size, f"row group of {size} rows written")
    return written
