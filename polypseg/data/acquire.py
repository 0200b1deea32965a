"""Get Kvasir-SEG onto disk: download the official archive, or import a folder/zip you have.

Both end in the same layout, ``<root>/images/*.jpg`` and ``<root>/masks/*.jpg``, and both verify
every file against the SHA-256 list shipped with polypseg (``kvasir-seg.sha256``), so a corrupt
download or a modified copy is caught before training. Nothing replaces an existing good copy
unless the new one verifies.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from polypseg.runtime.io import sha256_file

OFFICIAL_URL = "https://datasets.simula.no/downloads/kvasir-seg.zip"
CITATION = (
    "Debesh Jha, Pia H. Smedsrud, Michael A. Riegler, Pål Halvorsen, Thomas de Lange, Dag Johansen, "
    'Håvard D. Johansen. "Kvasir-SEG: A Segmented Polyp Dataset." MultiMedia Modeling (MMM) 2020, pp. 451-462.'
)


class ChecksumError(ValueError):
    """Downloaded or imported files do not match the expected checksums."""


def expected_checksums() -> dict[str, str]:
    """``relative path -> sha256`` of the official Kvasir-SEG files."""
    text = (importlib.resources.files("polypseg.data") / "kvasir-seg.sha256").read_text()
    return {
        path: digest
        for digest, path in (line.split(None, 1) for line in text.splitlines() if line.strip())
    }


def verify(root: str | Path, checksums: dict[str, str] | None = None) -> int:
    """Check every listed file under ``root``; raise ChecksumError naming each bad or missing file."""
    root, checksums = Path(root), checksums or expected_checksums()
    problems = []
    for rel, digest in sorted(checksums.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 mismatch (expected {digest[:12]}…)")
    if problems:
        shown = "\n  ".join(problems[:20])
        raise ChecksumError(f"{len(problems)} file(s) fail verification:\n  {shown}")
    return len(checksums)


def _find_dataset_dir(folder: Path) -> Path:
    """The folder holding ``images/`` and ``masks/`` (the zip nests it in ``Kvasir-SEG/``)."""
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if (candidate / "images").is_dir() and (candidate / "masks").is_dir():
            return candidate
    raise FileNotFoundError(f"{folder}: no folder with images/ and masks/ inside")


def _install(source_dir: Path, root: Path, verify_checksums: bool) -> Path:
    """Verify ``source_dir`` then copy it to ``root`` atomically (the old copy is kept until then)."""
    if verify_checksums:
        verify(source_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    for sub in ("images", "masks"):
        shutil.copytree(source_dir / sub, staging / sub)
    backup = root.with_name(f".{root.name}.old")
    if root.exists():
        root.rename(backup)
    staging.rename(root)
    shutil.rmtree(backup, ignore_errors=True)
    return root


def import_dataset(
    source: str | Path, root: str | Path = "data/kvasir-seg", verify_checksums: bool = True
) -> Path:
    """Import a Kvasir-SEG folder or zip into ``root`` (``images/``, ``masks/``), verified.

    Use ``verify_checksums=False`` for another dataset in the same layout.
    """
    source, root = Path(source), Path(root)
    if source.is_dir():
        return _install(_find_dataset_dir(source), root, verify_checksums)
    if not zipfile.is_zipfile(source):
        raise ValueError(f"{source}: neither a folder nor a zip archive")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():  # no path traversal out of the temp folder
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise ValueError(f"{source}: unsafe path in archive: {member}")
            archive.extractall(tmp)
        return _install(_find_dataset_dir(Path(tmp)), root, verify_checksums)


def download(
    root: str | Path = "data/kvasir-seg", url: str = OFFICIAL_URL, sha256: str | None = None
) -> Path:
    """Download the official archive, check it (archive hash if given, then every file), install it."""
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "kvasir-seg.zip"
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as fh:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                fh.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise ChecksumError(f"{url}: archive sha256 {digest.hexdigest()} != expected {sha256}")
        installed = import_dataset(archive, root)
    print(f"Kvasir-SEG installed in {installed.resolve()}. Cite: {CITATION}")
    return installed
