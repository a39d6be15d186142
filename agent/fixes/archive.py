"""A fix commit's files as a tar, made from git objects in memory.

Verification never checks a fix out on medic's host: a checkout writes the model's
files where medic runs, and anything that then runs them (a test runner, a build)
runs them as medic. Instead the commit's tree is read from git (``Git.tree`` and one
``cat-file --batch``) and packed here, to be copied into a sandbox container or sent
to the engine as a build context.

What is packed: regular files with their mode (0644 or 0755), symbolic links as links
(a link is only a name; inside a container it points into the container), and the
folders that hold them. Submodules are skipped: their commits are not in this
repository. Every entry belongs to uid and gid 65534, the sandbox's user, so a test
run may write next to the files it tests. The total size is capped.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Callable, Mapping, Sequence

from agent.errors import FixError
from agent.fixes.git import TreeEntry

#: The owner of every entry: ``nobody``, the user sandbox containers run as.
SANDBOX_UID = 65534

#: How much file content one archive may hold, in bytes.
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024

#: git's modes for a regular file, an executable one, a symbolic link and a submodule.
FILE_MODE = "100644"
EXECUTABLE_MODE = "100755"
SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"

#: Reads blobs by sha: ``Git.read_blobs``.
BlobReader = Callable[[Sequence[str]], Mapping[str, bytes]]


def tree_archive(
    tree: Mapping[str, TreeEntry],
    read_blobs: BlobReader,
    *,
    prefix: str = "",
    under: str = "",
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> bytes:
    """An uncompressed tar of the files of ``tree`` that lie in the folder ``under``
    (the whole tree when empty), with paths relative to it and put under the folder
    ``prefix`` inside the tar (at its top when empty).

    FixError when the files hold more than ``max_bytes`` bytes; it is raised before any
    blob is read.
    """
    under = posixpath.normpath(under).strip("/") if under not in ("", ".") else ""
    prefix = prefix.strip("/")
    chosen: dict[str, TreeEntry] = {}
    for path, entry in sorted(tree.items()):
        relative = _relative(path, under)
        if relative is None or entry.mode == SUBMODULE_MODE or entry.kind != "blob":
            continue
        if not _plain(relative):
            # git refuses such names; a crafted object might still carry one.
            raise FixError(f"the fix's tree holds a path medic does not copy: {path!r}")
        chosen[relative] = entry
    total = sum(entry.size or 0 for entry in chosen.values())
    if total > max_bytes:
        where = f"the folder {under}" if under else "the fix's tree"
        raise FixError(
            f"{where} holds {_mib(total)} of files, more than the {_mib(max_bytes)} medic "
            "copies into a sandbox; verification did not run"
        )
    blobs = read_blobs([entry.sha for entry in chosen.values()])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = {prefix} if prefix else set()
        for relative in chosen:
            parts = relative.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folders.add(_join(prefix, "/".join(parts[:depth])))
        for folder in sorted(folders):
            tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
        for relative, entry in chosen.items():
            name = _join(prefix, relative)
            content = blobs[entry.sha]
            if entry.mode == SYMLINK_MODE:
                info = _info(name, tarfile.SYMTYPE, 0o777)
                info.linkname = content.decode("utf-8", errors="surrogateescape")
                tar.addfile(info)
                continue
            info = _info(name, tarfile.REGTYPE, 0o755 if entry.mode == EXECUTABLE_MODE else 0o644)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _relative(path: str, under: str) -> str | None:
    if not under:
        return path
    if path.startswith(under + "/"):
        return path[len(under) + 1 :]
    return None


def _plain(path: str) -> bool:
    parts = path.split("/")
    return not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _join(prefix: str, relative: str) -> str:
    return f"{prefix}/{relative}" if prefix else relative


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = SANDBOX_UID
    info.uname = info.gname = "nobody"
    return info


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
