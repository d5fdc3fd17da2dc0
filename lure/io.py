"""Reading and writing the pipeline's files.

An output appears complete or not at all (written beside its target, then renamed), so a failed
stage never leaves a half-written file that DVC could cache. Array files carry no timestamps,
so the same content gives the same bytes and the same DVC hash. JSON is strict: a number that
cannot be computed (NaN, infinite) is written as null. A file that cannot be read is reported by
path, with how to get it back.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lure.errors import LureError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def strict(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict(value) for value in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_torch_archive(path: str | Path) -> None:
    """That `path` is whole, as torch.save writes it: a zip archive whose directory (at its end, so
    a truncated file has none) names a data.pkl; read from the archive's headers alone, without
    torch. A truncated or foreign file raises, naming it."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in archive.namelist()):
                raise ValueError("no data.pkl in it: not a file that torch.save wrote")
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise unreadable(path, err) from None


def unreadable(path: str | Path, err: Exception) -> LureError:
    """The message for a file that is there but cannot be read."""
    reason = f"{type(err).__name__}: {str(err).splitlines()[0]}" if str(err) else type(err).__name__
    return LureError(f"{path} cannot be read ({reason}): `uv run dvc checkout` restores what DVC keeps, "
                     f"`git checkout -- {path}` what git does, and `uv run dvc repro` makes it again")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise unreadable(path, err) from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an .npz that np.load reads, with fixed zip timestamps (np.savez stamps the time).

    Its members are stored, not compressed, so that `load_arrays(mmap=True)` maps them straight
    from the file; each is written in blocks, so that a memory-mapped array larger than the
    host's memory goes to disk without being read in whole."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                                          "fortran_order": False, "shape": array.shape})
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.file_size = len(header.getvalue()) + array.nbytes  # known ahead: zipfile uses zip64 only near 2 GiB
            with zf.open(info, "w") as member:
                member.write(header.getvalue())
                for block in _blocks(array):
                    member.write(block)


def _blocks(array: np.ndarray) -> Iterator[bytes]:
    """The array's bytes in C order, about 16 MiB at a time."""
    if array.ndim == 0 or len(array) == 0:
        yield np.ascontiguousarray(array).tobytes()
        return
    row_bytes = max(array[0].nbytes, 1)
    step = max(1, (16 << 20) // row_bytes)
    for start in range(0, len(array), step):
        yield np.ascontiguousarray(array[start:start + step]).tobytes()


def load_arrays(path: str | Path, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an .npz written by save_arrays; with `mmap`, read-only memory maps of the
    file (pages are read as they are used), so that arrays larger than memory can be used."""
    try:
        if mmap:
            return _map_members(Path(path))
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise unreadable(path, err) from None


def _map_members(path: Path) -> dict[str, np.ndarray]:
    """Each stored .npy member of the zip, mapped where its data lies in the file."""
    arrays = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise ValueError(f"{info.filename} is not a stored .npy member")
            f.seek(info.header_offset)
            local = f.read(30)  # the local file header: its name and extra field lengths end it
            f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                   + int.from_bytes(local[28:30], "little"))
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            name = info.filename[:-4]
            if 0 in shape:
                arrays[name] = np.empty(shape, dtype)
            else:
                arrays[name] = np.memmap(path, dtype, "r", offset=f.tell(), shape=shape,
                                         order="F" if fortran else "C")
    return arrays


def remove(path: Path) -> None:
    """A file or a folder, gone."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_md5(path: str | Path, blocks: int = 16, block_size: int = 1 << 16) -> str:
    """The file's size and the md5 of `blocks` blocks spread evenly over it (the whole file when it
    is smaller): a check whose cost does not grow with the file, for files whose full hash DVC has
    already checked."""
    size = Path(path).stat().st_size
    digest = hashlib.md5(str(size).encode())
    with open(path, "rb") as f:
        if size <= blocks * block_size:
            digest.update(f.read())
        else:
            for i in range(blocks):
                f.seek(i * (size - block_size) // (blocks - 1))
                digest.update(f.read(block_size))
    return f"{size}:{digest.hexdigest()}"
