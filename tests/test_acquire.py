"""Getting the dataset: official-archive download (served from a local file URL here), import of a
folder or zip, checksum verification, and never replacing a good copy with a bad one."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from polypseg.data.acquire import (
    ChecksumError,
    download,
    expected_checksums,
    import_dataset,
    verify,
)

from conftest import KVASIR

pytestmark = pytest.mark.data  # reads images from ../shared/data


@pytest.fixture(scope="module")
def official_zip(tmp_path_factory):
    """The archive laid out like the official one: Kvasir-SEG/images, Kvasir-SEG/masks."""
    path = tmp_path_factory.mktemp("zip") / "kvasir-seg.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(KVASIR.glob("*/*.jpg")):
            archive.write(file, f"Kvasir-SEG/{file.parent.name}/{file.name}")
    return path


def test_shipped_checksums_match_the_real_dataset():
    assert len(expected_checksums()) == 2000
    assert verify(KVASIR) == 2000


def test_download_verifies_and_installs(official_zip, tmp_path):
    digest = hashlib.sha256(official_zip.read_bytes()).hexdigest()
    root = download(tmp_path / "kvasir", url=official_zip.as_uri(), sha256=digest)
    assert len(list((root / "images").glob("*.jpg"))) == 1000 and verify(root) == 2000


def test_download_with_wrong_archive_hash_keeps_existing_copy(official_zip, tmp_path):
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    (root / "images" / "keep.jpg").write_bytes(b"old good copy")
    with pytest.raises(ChecksumError, match="archive sha256"):
        download(root, url=official_zip.as_uri(), sha256="0" * 64)
    assert (root / "images" / "keep.jpg").read_bytes() == b"old good copy"


def test_import_folder_and_tampered_copy(tmp_path):
    root = import_dataset(KVASIR, tmp_path / "imported")
    assert verify(root) == 2000
    tampered = tmp_path / "tampered"
    import_dataset(KVASIR, tampered)
    victim = sorted((tampered / "masks").glob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match=f"{victim.name}: sha256 mismatch"):
        import_dataset(tampered, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_import_subset_zip_needs_verification_off(tmp_path, tiny_root):
    archive = tmp_path / "subset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in sorted(tiny_root.glob("*/*.jpg")):
            z.write(file, f"mine/{file.parent.name}/{file.name}")
    with pytest.raises(ChecksumError, match="missing"):
        import_dataset(archive, tmp_path / "strict")
    root = import_dataset(archive, tmp_path / "loose", verify_checksums=False)
    assert len(list((root / "images").glob("*.jpg"))) == 12


def test_unsafe_archive_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="unsafe path"):
        import_dataset(archive, tmp_path / "root", verify_checksums=False)
    assert not (tmp_path.parent / "escape.txt").exists()
