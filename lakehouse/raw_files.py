"""Raw files bronze must refuse before its streams take them, and why.

Spark's file source fails a whole stream on a damaged gzip file (hundreds of lines of executor
stack traces ending in FAILED_READ_FILE), and its driver dies of OutOfMemoryError on a line
bigger than the heap (a gzip bomb, or a plain export without line breaks). Worse, a stream
that planned a file records it in its checkpoint: the file is never read again under that
name, even once repaired. So each file a stream has not yet taken is inspected first, and the
first bad one is named in one line before any source lands.

On a local data root the files are read here, on the driver: every new gzip file is inflated
whole (its CRC and length checked, every member of it counted), and a new plain file is
scanned when it is big enough to hold an over-long line. Object-store folders get the check
that needs no download: the gzip size trailer, read through Spark.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.config import file_uri_path, is_local_location, local_path
from lakehouse.errors import InputDataError
from lakehouse.sources import SourceSpec

# A gzip file whose content would expand more than this many times, to more than the floor,
# is refused before anything is read: a line in it can be bigger than the JVM's heap (a 1 MiB
# file of zeros that inflates to one 1 GiB line killed the driver). Real exports of JSON and
# CSV compress 3-20x.
GZIP_MAX_RATIO = 100
GZIP_RATIO_FLOOR_BYTES = 64 * 1024 * 1024

# ISIZE holds at most 2^32 - 1 bytes, so a file larger than this cannot be over the ratio: only
# files up to this size need their trailer read.
GZIP_CHECKED_MAX_BYTES = 2**32 // GZIP_MAX_RATIO

_CHUNK_BYTES = 4 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
_LINE_BREAK = re.compile(rb"[\r\n]")  # Spark's text source ends a line at \n, \r or \r\n


def gzip_expansion_problem(name: str, compressed: int, isize: int) -> str | None:
    """Why a gzip file must not be read, from its size and its trailer's ISIZE, or None.

    ISIZE (RFC 1952: the last 4 bytes, little-endian) is the uncompressed size modulo 2^32 of
    the last member: exact for the single-member files exporters write up to 4 GiB.
    """
    if compressed <= 0 or isize <= GZIP_RATIO_FLOOR_BYTES:
        return None
    ratio = isize / compressed
    if ratio <= GZIP_MAX_RATIO:
        return None
    return _bomb_message(name, f"{isize / 2**20:,.0f} MiB", compressed, f"{ratio:,.0f}:1")


def _bomb_message(name: str, inflated: str, compressed: int, ratio: str) -> str:
    return (
        f"raw file {name} would decompress to {inflated} from {compressed / 2**20:,.1f} MiB "
        f"({ratio}, more than {GZIP_MAX_RATIO}:1): a gzip bomb or a damaged export; nothing was "
        f"ingested. Move it out of the raw folder, then run bronze again"
    )


def spark_gzip_trailers(spark: SparkSession, raw_path: str) -> list[tuple[str, int, int]]:
    """(file, compressed size, ISIZE) of each .gz file of a raw folder that could be a bomb,
    sorted by file, through Spark's binaryFile source: the DataFrame API, so it works on any
    file system Spark reaches and over Spark Connect. It has no ranged read, so each file up to
    GZIP_CHECKED_MAX_BYTES is read whole, on the executors; the size filter is applied to the
    listing, so larger files are not opened."""
    try:
        files = (
            spark.read.format("binaryFile").option("pathGlobFilter", "*.gz").load(raw_path)
            .where(F.col("length").between(18, GZIP_CHECKED_MAX_BYTES))
            .select("path", "length", F.substring("content", -4, 4).alias("trailer"))
            .collect()  # one small row per file of the folder
        )
    except AnalysisException:  # no such folder (yet): nothing to check
        return []
    return sorted(
        (row["path"], row["length"], int.from_bytes(bytes(row["trailer"]), "little"))
        for row in files
        if not row["path"].rsplit("/", 1)[-1].startswith((".", "_"))
    )


def taken_file_names(checkpoint_dir: str) -> frozenset[str]:
    """Names of the raw files a bronze stream's committed batches took (its checkpoint's file
    log, read as Spark writes it: a 'v1' line, then one JSON entry per file with its batch id).
    A batch planned but not committed (a run that failed on the file) does not count: its
    files are read again when the stream resumes, so they are inspected again."""
    checkpoint = file_uri_path(checkpoint_dir)
    if checkpoint is None:
        return frozenset()
    commits = [int(p.name) for p in _listing(checkpoint / "commits") if p.name.isdigit()]
    if not commits:
        return frozenset()
    last_committed = max(commits)
    taken = set()
    # Every log file left is read: a compacted file and the batches after it (a superset).
    for log_file in _listing(checkpoint / "sources" / "0"):
        if not re.fullmatch(r"\d+(\.compact)?", log_file.name):
            continue
        with log_file.open(encoding="utf-8", errors="replace") as entries:
            for line in entries:
                try:
                    entry = json.loads(line)
                    if entry["batchId"] <= last_committed:
                        taken.add(Path(file_uri_path(entry["path"]) or entry["path"]).name)
                except (ValueError, KeyError, TypeError):
                    continue  # the format version line
    return frozenset(taken)


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _gzip_chunks(path: Path) -> Iterator[bytes]:
    """The inflated content of a gzip file, read as Spark's (Hadoop's) gzip reader reads it:
    members one after another to the end of the file, each one's CRC and length checked, and
    nothing after the last. Python's gzip module skips zero padding after a member, which
    Hadoop refuses ("not a gzip file"), so zlib is driven here instead. An empty file has no
    member (Spark reads it as no line)."""
    with path.open("rb") as raw:
        inflater = None  # None: between members
        pending = b""
        members = 0
        read_to_end = False
        while True:
            if inflater is None:
                pending += raw.read(max(0, 2 - len(pending)))
                if not pending:
                    return
                if not pending.startswith(GZIP_MAGIC):
                    raise OSError(
                        "not a gzip file" if not members else
                        f"bytes after gzip member {members} that start no other member (zero "
                        f"padding or other data), which Spark's gzip reader refuses"
                    )
                inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
            if not pending:
                pending = raw.read(_CHUNK_BYTES)
                read_to_end = not pending
            # Bounded output: a bomb is counted chunk by chunk, never inflated in one go.
            chunk = inflater.decompress(pending, _CHUNK_BYTES)
            pending = inflater.unconsumed_tail
            if chunk:
                yield chunk
            if inflater.eof:
                # What follows the member (zlib also leaves it in unconsumed_tail then).
                pending, inflater, members = inflater.unused_data, None, members + 1
            elif read_to_end and not chunk:
                raise EOFError("the file ends inside a gzip member (truncated)")


def _plain_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            yield chunk


def longest_line_over(chunks: Iterable[bytes], limit: int) -> int | None:
    """Bytes read when a line longer than ``limit`` was found in the concatenated ``chunks``,
    else None (read to the end). A line ends at \\n, \\r or \\r\\n, as Spark's text source
    reads it."""
    run = 0  # length of the line still open at the end of the chunks read so far
    read = 0
    for chunk in chunks:
        read += len(chunk)
        parts = _LINE_BREAK.split(chunk)
        if len(parts) == 1:
            run += len(chunk)
        else:
            run += len(parts[0])
            if run > limit or max(map(len, parts[1:-1]), default=0) > limit:
                return read
            run = len(parts[-1])
        if run > limit:
            return read
    return None


def local_file_problem(path: Path, max_line_bytes: int) -> str | None:
    """Why bronze must not read a local raw file, or None: a gzip file that does not inflate
    whole, that inflates more than GZIP_MAX_RATIO times (above the floor), or a line longer
    than ``max_line_bytes``."""
    if not os.access(path, os.R_OK):
        return (f"raw file {path} cannot be read (no read permission); nothing was ingested. "
                f"Make it readable or move it out of the raw folder, then run bronze again")
    size = path.stat().st_size
    if not path.name.endswith(".gz"):
        if size <= max_line_bytes:
            return None  # no line of it can be longer than the file
        over = longest_line_over(_plain_chunks(path), max_line_bytes)
        return None if over is None else _long_line_message(path, max_line_bytes)
    inflated = 0
    limit = max(GZIP_RATIO_FLOOR_BYTES, GZIP_MAX_RATIO * size)

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal inflated
        for chunk in chunks:
            inflated += len(chunk)
            if inflated > limit:
                return  # stop inflating: the ratio is exceeded
            yield chunk

    try:
        over = longest_line_over(counted(_gzip_chunks(path)), max_line_bytes)
    except (OSError, EOFError, zlib.error) as damaged:
        return (
            f"raw file {path} does not decompress ({damaged}): a damaged or unfinished gzip "
            f"export; nothing was ingested. Replace it with an intact copy under the same name "
            f"or move it out of the raw folder, then run bronze again"
        )
    if inflated > limit:
        return _bomb_message(str(path), f"more than {limit / 2**20:,.0f} MiB", size,
                             f"over {limit / max(size, 1):,.0f}:1")
    return None if over is None else _long_line_message(path, max_line_bytes)


def byte_size(count: int) -> str:
    """A byte count as people read it: '64 MiB', '512 KiB', '1,000 bytes'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size and count % size == 0:
            return f"{count // size:,} {unit}"
    return f"{count:,} bytes"


def _long_line_message(path: Path, max_line_bytes: int) -> str:
    return (
        f"raw file {path} has a line longer than {byte_size(max_line_bytes)} "
        f"(bronze.max_line_bytes): not a line-delimited export, or a damaged one; nothing was "
        f"ingested. Move it out of the raw folder (or raise bronze.max_line_bytes if such lines "
        f"are expected), then run bronze again"
    )


def check_raw_files(
    spark: SparkSession, raw_path: str, checkpoint_dir: str, source: SourceSpec,
    max_line_bytes: int,
) -> None:
    """Raises InputDataError naming the first file of ``raw_path`` that ``source``'s stream
    has not taken yet and must not read (files in name order)."""
    if not is_local_location(raw_path):
        for name, compressed, isize in spark_gzip_trailers(spark, raw_path):
            if problem := gzip_expansion_problem(name, compressed, isize):
                raise InputDataError(problem)
        return
    folder = local_path(raw_path)
    if not folder.is_dir():
        return
    taken = taken_file_names(checkpoint_dir)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in taken or not source.takes_file(entry.name) or not entry.is_file():
            continue
        if problem := local_file_problem(Path(entry.path), max_line_bytes):
            raise InputDataError(problem)
