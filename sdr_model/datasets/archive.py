"""Safe extraction of dataset archives (zip, tar, tar.gz / .tgz, tar.bz2, tar.xz) sent by strangers.

An uploaded archive is hostile until proven otherwise. Before a byte of a member is written we
refuse, naming the member: absolute names and names with `..` components (path traversal),
symbolic and hard links (zip and tar), device files, FIFOs and sparse files, duplicate names, and
nested archives (by name and by magic bytes; a dataset never needs one, and recursing into them is
how bombs hide). Tar members additionally pass `tarfile.data_filter`, the stdlib's `filter="data"`
policy, as a second opinion. Files are written with mode 0644 and directories 0755, whatever the
archive says, which is what the data filter's permission rules amount to for non-executables.

Bombs are stopped with bounded memory and disk: members are streamed in 1 MiB chunks, and three
caps (`ArchiveLimits`) are enforced on the bytes actually written, not only on the sizes an archive
declares (a zip's central directory can lie): the number of entries, the total uncompressed size,
and the ratio of that total to the archive's size on disk. The ratio check is monotone (bytes
written so far / whole archive size), so extraction stops as soon as the final ratio is certain to
exceed the cap. On any refusal the destination folder is removed: nothing half-extracted remains.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

__all__ = ["ArchiveError", "ArchiveLimits", "ExtractedArchive", "is_archive", "safe_extract"]

_CHUNK = 1 << 20
# Suffixes of formats we refuse inside an archive. Checked together with the magic bytes below,
# so neither a renamed archive nor an innocently named one slips through.
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tbz2", ".txz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
_ARCHIVE_MAGIC = (
    (0, b"PK\x03\x04"),  # zip
    (0, b"PK\x05\x06"),  # empty zip
    (0, b"\x1f\x8b"),  # gzip
    (0, b"BZh"),  # bzip2
    (0, b"\xfd7zXZ\x00"),  # xz
    (0, b"(\xb5/\xfd"),  # zstd
    (0, b"7z\xbc\xaf\x27\x1c"),  # 7-zip
    (0, b"Rar!\x1a\x07"),  # rar
    (257, b"ustar"),  # tar (POSIX and GNU)
)
_MAGIC_BYTES_NEEDED = 262
# Operating-system litter that archivers add; it is not data, and AppleDouble `._x.jpg` files would
# otherwise show up as "corrupt images" in every macOS upload.
_IGNORED_PARTS = ("__MACOSX", ".DS_Store")


class ArchiveError(ValueError):
    """An archive that is refused; the message names the offending member and the rule it broke."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps bounding the memory, disk and time an archive may cost (the service exposes them as settings)."""

    max_entries: int = 200_000  # members (files and directories) in one archive
    max_total_bytes: int = 16 * 2**30  # total uncompressed bytes written
    max_ratio: float = 100.0  # total uncompressed bytes / archive bytes; images barely compress

    def __post_init__(self) -> None:
        if self.max_entries < 1 or self.max_total_bytes < 1 or self.max_ratio <= 1.0:
            raise ValueError(f"archive limits must be positive (and max_ratio > 1), got {self}")


@dataclass(frozen=True)
class ExtractedArchive:
    """What `safe_extract` wrote."""

    root: Path  # the destination folder
    files: int  # regular files written
    total_bytes: int  # their total size


def is_archive(path: str | Path) -> bool:
    """Whether `path` is a file we would try to extract (zip by magic bytes, tar by `tarfile`)."""
    path = Path(path)
    if not path.is_file():
        return False
    return _is_zip(path) or tarfile.is_tarfile(path)


def safe_extract(archive: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> ExtractedArchive:
    """Extract a zip or (compressed) tar archive into `dest`, refusing anything unsafe.

    Args:
        archive: the archive file; its format is sniffed from its content, not its name.
        dest: a folder that does not exist yet or is empty; it is removed again if extraction fails.
        limits: entry count, total size and compression-ratio caps; defaults to `ArchiveLimits()`.

    Returns:
        The folder, the number of files and bytes written.

    Raises:
        ArchiveError: the archive is not a zip or tar, is corrupt, or breaks a rule; the message
            names the member.
    """
    archive, dest = Path(archive), Path(dest)
    limits = limits or ArchiveLimits()
    if dest.exists() and any(dest.iterdir()):
        raise ArchiveError(f"extraction folder {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(dest, limits, archive_bytes=max(archive.stat().st_size, 1))
    try:
        if _is_zip(archive):
            _extract_zip(archive, writer)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, writer)
        else:
            raise ArchiveError(f"{archive.name} is neither a zip nor a tar archive (tar.gz, tar.bz2, tar.xz)")
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"{archive.name} could not be extracted (corrupt or truncated?): {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return ExtractedArchive(root=dest, files=writer.files, total_bytes=writer.total_bytes)


def _is_zip(path: Path) -> bool:
    # zipfile.is_zipfile looks for an end-of-central-directory record anywhere near the end, which a
    # tar holding a zip as its last member also has; the local-header magic at offset 0 does not lie.
    with path.open("rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, None for OS litter; raises for unsafe names."""
    if not name or "\x00" in name:
        raise ArchiveError(f"member {name!r}: empty name or NUL byte")
    if "\\" in name:
        raise ArchiveError(f"member {name!r}: backslash in name (Windows separators are ambiguous; refused)")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"member {name!r}: absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise ArchiveError(f"member {name!r}: '..' in path (would write outside the extraction folder)")
    if not parts:
        return None
    if any(p in _IGNORED_PARTS or p.startswith("._") for p in parts):
        return None
    return PurePosixPath(*parts)


def _check_not_archive_name(name: str) -> None:
    if name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise ArchiveError(f"member {name!r}: nested archive (extract it and upload its contents instead)")


def _check_not_archive_bytes(name: str, head: bytes) -> None:
    for offset, magic in _ARCHIVE_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            raise ArchiveError(f"member {name!r}: nested archive (its content is an archive)")


class _Writer:
    """Writes vetted members under `dest`, enforcing the caps on bytes actually written."""

    def __init__(self, dest: Path, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.dest = dest.resolve()
        self.limits = limits
        self.archive_bytes = archive_bytes
        self.entries = 0
        self.files = 0
        self.total_bytes = 0
        self.seen: set[PurePosixPath] = set()
        self.folders: set[Path] = set()  # created by `_folder`, and checked to resolve below dest

    def count_entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(f"member {name!r}: more than {self.limits.max_entries} entries in the archive")

    def claim(self, name: str, rel: PurePosixPath) -> Path:
        if rel in self.seen:
            raise ArchiveError(f"member {name!r}: duplicate name (a later member would overwrite an earlier one)")
        self.seen.add(rel)
        return self.dest.joinpath(*rel.parts)

    def _folder(self, name: str, folder: Path) -> None:
        """Create `folder` and its parents under dest, once per folder (archives hold many files per folder).

        Belt and braces after the name checks: a folder created earlier cannot be a link (we never
        create links), so it must resolve below dest. Checking the folder, not each file, is enough:
        a file is created with O_EXCL, which never follows a link.
        """
        if folder in self.folders:
            return
        if os.path.commonpath([folder.resolve(), self.dest]) != str(self.dest):
            raise ArchiveError(f"member {name!r}: resolves outside the extraction folder")
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.folders.add(folder)

    def check_total(self, name: str, total: int) -> None:
        """Refuse if `total` uncompressed bytes would break the size or ratio cap."""
        if total > self.limits.max_total_bytes:
            raise ArchiveError(
                f"member {name!r}: archive expands beyond {self.limits.max_total_bytes} bytes (max_total_bytes)"
            )
        if total / self.archive_bytes > self.limits.max_ratio:
            raise ArchiveError(
                f"member {name!r}: archive expands more than {self.limits.max_ratio:g}x its size "
                f"({self.archive_bytes} bytes); refused as a likely compression bomb"
            )

    def add_bytes(self, name: str, n: int) -> None:
        self.check_total(name, self.total_bytes + n)
        self.total_bytes += n

    def make_dir(self, name: str, rel: PurePosixPath) -> None:
        self._folder(name, self.claim(name, rel))

    def write_file(self, name: str, rel: PurePosixPath, source: IO[bytes], declared_size: int) -> None:
        _check_not_archive_name(name)
        target = self.claim(name, rel)
        self._folder(name, target.parent)
        head = source.read(_MAGIC_BYTES_NEEDED)
        _check_not_archive_bytes(name, head)
        written = 0
        # O_EXCL: never follow or overwrite anything that is already there.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(head, source):
                written += len(chunk)
                if written > declared_size:
                    raise ArchiveError(f"member {name!r}: more data than its declared {declared_size} bytes")
                self.add_bytes(name, len(chunk))
                out.write(chunk)
        self.files += 1


def _chunks(head: bytes, source: IO[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := source.read(_CHUNK):
        yield chunk


def _extract_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        # Vet the whole central directory first: a refused archive writes nothing at all.
        declared_total = 0
        vetted = []
        for info in infos:
            writer.count_entry(info.filename)
            rel = _safe_member_path(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"member {info.filename!r}: symbolic link")
            if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"member {info.filename!r}: special file (device, FIFO or socket)")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {info.filename!r}: encrypted")
            if rel is None:
                continue
            if not info.is_dir():
                _check_not_archive_name(info.filename)
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > writer.limits.max_ratio:
                    raise ArchiveError(
                        f"member {info.filename!r}: compression ratio {ratio:.0f}x exceeds {writer.limits.max_ratio:g}x"
                    )
                # Declared sizes give an early refusal; the writer then counts what is really written.
                declared_total += info.file_size
                writer.check_total(info.filename, declared_total)
            vetted.append((info, rel))
        for info, rel in vetted:
            if info.is_dir():
                writer.make_dir(info.filename, rel)
            else:
                with zf.open(info) as source:
                    writer.write_file(info.filename, rel, source, info.file_size)


# Compressed tar: magic bytes -> a file object that inflates with an output limit per read.
_DECOMPRESSORS: tuple[tuple[bytes, type[gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile]], ...] = (
    (b"\x1f\x8b", gzip.GzipFile),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


def _open_tar_bytes(archive: Path) -> IO[bytes]:
    """The archive's uncompressed tar stream, inflated a bounded amount per read.

    Not tarfile's own "r|gz" / "r|bz2": its stream reader inflates every 16 KiB of input with no
    output limit, so a ~200-byte bzip2 member of zeros became 389 MiB in memory before any cap
    could look at it (tests/service/test_archive_bounds.py). gzip, bz2 and lzma file objects
    decompress with a `max_length`, so memory stays at their buffer size whatever the ratio.
    """
    with archive.open("rb") as f:
        head = f.read(6)
    for magic, decompressor in _DECOMPRESSORS:
        if head.startswith(magic):
            return cast(IO[bytes], decompressor(archive, "rb"))  # the caller's `with` closes it
    return archive.open("rb")


def _extract_tar(archive: Path, writer: _Writer) -> None:
    # Stream mode ("r|") reads members one at a time: the member list never sits in memory, so an
    # archive with millions of entries is stopped by the entry cap rather than by running out of RAM.
    with _open_tar_bytes(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
        for member in tf:
            writer.count_entry(member.name)
            rel = _safe_member_path(member.name)
            if member.issym() or member.islnk():
                kind = "symbolic" if member.issym() else "hard"
                raise ArchiveError(f"member {member.name!r}: {kind} link to {member.linkname!r}")
            if member.isdev() or member.isfifo():
                raise ArchiveError(f"member {member.name!r}: special file (device or FIFO)")
            if member.issparse() or not (member.isreg() or member.isdir()):
                raise ArchiveError(f"member {member.name!r}: unsupported tar member type {member.type!r}")
            try:
                tarfile.data_filter(member, str(writer.dest))
            except tarfile.FilterError as exc:
                raise ArchiveError(f"member {member.name!r}: refused by tar's data filter: {exc}") from exc
            if rel is None:
                continue
            if member.isdir():
                writer.make_dir(member.name, rel)
                continue
            # A tar member's size is exact (its data is that many bytes), so refuse before reading it.
            writer.check_total(member.name, writer.total_bytes + member.size)
            source = tf.extractfile(member)
            if source is None:  # pragma: no cover - isreg() members always have a file object
                raise ArchiveError(f"member {member.name!r}: has no data")
            with source:
                writer.write_file(member.name, rel, source, member.size)
