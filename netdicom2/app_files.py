"""Part 10 files for `netdicom2 scp --output-dir` that never lie about their content.

A data set streams into a temporary file `.netdicom2-<pid>-<n>.part` in the output folder; only
when its last fragment arrived (PS3.8 Annex E.2, bit 1 of the Message Control Header) is the
file flushed, fsync'ed and renamed to `<SOP Instance UID>.dcm` in one atomic step. An aborted,
reset, oversized or refused store removes its temporary file; the leftovers of a process that
was killed (SIGKILL, power loss) are swept at the next start. A writer holds an flock(2) on its
temporary file, which the kernel releases when the process dies however it dies: the sweep
removes exactly the temporary files nobody holds (another SCP writing into the same folder
keeps its own). Each final name has at most one writer at a time (`OutputDir.claim`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from netdicom2.cli import UsageError
from netdicom2.dimse import part10_header

__all__ = [
    "MAX_IN_PROGRESS",
    "OutputDir",
    "PartialFile",
    "byte_size",
    "final_name",
    "prepare_output_dir",
]

_TEMP_PREFIX = ".netdicom2-"
_TEMP_SUFFIX = ".part"
# Temporary names: the writer's pid (for people), then a counter. Final names never contain
# "-" (see final_name), so the two sets cannot meet.
_TEMP_NAME = re.compile(r"^\.netdicom2-(\d+)-\d+\.part$")
_UNSAFE = re.compile(r"[^0-9A-Za-z.]")
# The default bound on data-set bytes in temporary files at once, all associations together
# (--max-in-progress): two data sets of the largest default size.
MAX_IN_PROGRESS = 8 << 30
_NAME_MAX = 255  # bytes in one file name (NAME_MAX on Linux and most file systems)


def final_name(sop_instance_uid: str) -> str:
    """`<UID>.dcm`, every character outside [0-9A-Za-z.] replaced by "_" (no path traversal)."""
    name = _UNSAFE.sub("_", sop_instance_uid) or "unnamed"
    if name.strip(".") == "":
        name = name.replace(".", "_")  # ".", ".." are not file names
    return f"{name}.dcm"


class PartialFile:
    """One data set being written under a temporary name; `commit()` gives it its final name."""

    __slots__ = ("_fd", "final", "size", "temp")

    def __init__(self, temp: Path, final: Path, fd: int) -> None:
        self.temp, self.final, self._fd = temp, final, fd
        self.size = 0  # data-set bytes written (the File Meta header excluded)

    def write(self, data: bytes | memoryview) -> None:
        """Append a fragment (OSError on a full disk: the caller discards the file)."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def commit(self) -> None:
        """fsync and rename to the final name (atomic: readers see all or nothing), then close.

        Renamed while still open and locked, so that no sweep can take it in between.
        """
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
            os.replace(self.temp, self.final)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temporary file (abort, reset, shutdown, refusal)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


class OutputDir:
    """The SCP's output folder: temporary files, atomic renames, one writer per final name."""

    def __init__(self, path: Path, max_in_progress: int = MAX_IN_PROGRESS) -> None:
        self.path = path
        self.max_in_progress = max_in_progress
        self.in_progress = 0  # data-set bytes in temporary files, all writers together
        self._pid = os.getpid()
        self._sequence = 0
        self._claimed: set[str] = set()  # final names being written (one loop thread)

    def sweep(self) -> list[Path]:
        """Remove the temporary files no live writer holds locked (leftovers of a killed one)."""
        removed: list[Path] = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if _TEMP_NAME.match(entry.name) is None:
                    continue
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:
                    continue  # gone meanwhile, or not a plain file
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it (another SCP in this folder)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
                finally:
                    os.close(fd)
        return removed

    def check_writable(self) -> None:
        """Create and remove one temporary file: OSError when the folder cannot hold files."""
        partial = self._create("probe")
        partial.discard()

    def busy(self, sop_instance_uid: str) -> bool:
        """True while another store of this SOP Instance UID is being written."""
        return final_name(sop_instance_uid) in self._claimed

    def claim(self, sop_instance_uid: str, sop_class_uid: str, transfer_syntax: str) -> PartialFile:
        """A temporary file with the File Meta header written (PS3.10 §7.1); OSError if not.

        The caller checked `busy()` first; the claim lasts until `release()`.
        """
        name = final_name(sop_instance_uid)
        if len(name.encode()) > _NAME_MAX:  # PS3.5 §9.1: a UID has at most 64 characters
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name[:40] + "...")
        partial = self._create(name)
        try:
            partial.write(part10_header(sop_class_uid, sop_instance_uid, transfer_syntax))
        except OSError:
            partial.discard()
            raise
        self._claimed.add(partial.final.name)
        return partial

    def write(self, partial: PartialFile, data: bytes | memoryview) -> bool:
        """Append to a claimed file; False (nothing written) past `max_in_progress` in all."""
        size = len(data)
        if self.in_progress + size > self.max_in_progress:
            return False
        partial.write(data)
        partial.size += size
        self.in_progress += size
        return True

    def release(self, partial: PartialFile) -> None:
        """The final name is free for another writer; its bytes leave the in-progress total."""
        self._claimed.discard(partial.final.name)
        self.in_progress -= partial.size
        partial.size = 0

    def _create(self, final: str) -> PartialFile:
        """A new, exclusive temporary file in the folder."""
        while True:
            self._sequence += 1
            temp = self.path / f"{_TEMP_PREFIX}{self._pid}-{self._sequence}{_TEMP_SUFFIX}"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue  # a leftover of an earlier process with our pid: take the next
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            # Held until closed, or until the process dies: sweep() leaves it alone. Where the
            # file system has no locks, a sweep by another SCP could remove it: A702H then.
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return PartialFile(temp, self.path / final, fd)


_SIZE_SUFFIXES = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_MAX_SIZE = 1 << 62


def byte_size(text: str) -> int:
    """An argparse type: a byte count, optionally with K, M, G or T (1024-based; "KiB" too)."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, suffix = raw, ""
    if raw and raw[-1] in _SIZE_SUFFIXES:
        number, suffix = raw[:-1], raw[-1]
    try:
        value = int(number) << _SIZE_SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 500M, 4G)") from None
    if not 0 <= value <= _MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..{_MAX_SIZE} bytes")
    return value


def prepare_output_dir(path: Path) -> None:
    """Create the folder if needed and prove a file can be written there (UsageError if not)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {path}: cannot create it ({exc.strerror})") from None
    try:
        OutputDir(path).check_writable()
    except OSError as exc:
        raise UsageError(
            f"--output-dir {path}: cannot write files there ({exc.strerror})"
        ) from None
