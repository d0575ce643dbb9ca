"""Archives: download over real HTTP, verification, and every bad input."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from stn_gtsrb import DataLocation, archives, data
from stn_gtsrb.errors import StnError
from synthetic_gtsrb import TEST_COUNT

GT = "GTSRB_Final_Test_GT.zip"


def sha256sums(folder: Path) -> None:
    lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}" for n in data.ARCHIVES.values()]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_download_over_http_verifies_and_gives_official_counts(real_dir, http_server, tmp_path):
    url = http_server(real_dir)
    paths, hashes = archives.fetch_archives(DataLocation(tmp_path, url), download=True, show_progress=False)
    assert all(p.parent == tmp_path / "archives" and p.exists() for p in paths.values())
    assert all(h.startswith("sha256:") for h in hashes.values())  # the mirror's SHA256SUMS was used
    official = data.load_tensors(32, DataLocation(tmp_path, url))
    assert len(official["train"]) == 39209 and len(official["test"]) == 12630
    assert int((official["test"].labels == 0).sum()) == 60
    assert int((official["test"].labels == 2).sum()) == 750
    assert official["train"].images.shape == (39209, 3, 32, 32)
    assert len(official["train"].tracks.unique()) == 1307
    # a second call finds the verified files and downloads nothing
    assert archives.fetch_archives(DataLocation(tmp_path, url), download=False)[0] == paths


def test_interrupted_download_restarts_cleanly(shared_dir, http_server, tmp_path):
    url = http_server(shared_dir, truncate_once={GT})
    with pytest.raises(StnError, match=GT):
        archives.fetch_archives(DataLocation(tmp_path, url), download=True, show_progress=False)
    assert not (tmp_path / "archives" / GT).exists()  # no partial file under the final name
    paths, _ = archives.fetch_archives(DataLocation(tmp_path, url), download=True, show_progress=False)
    assert paths["test_labels"].read_bytes() == (shared_dir / GT).read_bytes()


def test_mirror_without_checksums_is_held_to_the_official_md5(mirror, http_server, tmp_path):
    url = http_server(mirror(with_checksums=False))
    with pytest.raises(StnError, match=r"failed verification, expected md5:"):
        archives.fetch_archives(DataLocation(tmp_path, url), download=True, show_progress=False)
    assert not list((tmp_path / "archives").glob("*.zip"))  # nothing unverified is kept


def test_official_url_uses_official_md5s(tmp_path):
    assert archives.expected_hashes(DataLocation(tmp_path, archives.OFFICIAL_URL)) == archives.OFFICIAL_HASHES


def test_missing_archives_say_how_to_prepare(tmp_path):
    with pytest.raises(StnError, match="not found: run stn_gtsrb.prepare") as error:
        archives.fetch_archives(DataLocation(tmp_path, "http://127.0.0.1:9/"), download=False)
    assert "run 'stn-gtsrb data prepare'" in error.value.cli and "download=True" not in error.value.cli


def test_missing_archive_in_folder(mirror):
    folder = mirror()
    (folder / GT).unlink()
    with pytest.raises(StnError, match=f"{GT} not found"):
        archives.fetch_archives(DataLocation.resolve(source=str(folder)), download=False)


def test_checksum_mismatch_names_file_and_expected_hash(mirror, shared_dir):
    corrupt = bytearray((shared_dir / GT).read_bytes())
    corrupt[1000] ^= 0xFF
    folder = mirror(replace={GT: bytes(corrupt)})
    expected = archives.parse_checksums((shared_dir / "SHA256SUMS").read_text(), "x")[GT].split(":")[1]
    with pytest.raises(StnError, match=f"{GT}: sha256 checksum mismatch: expected {expected}"):
        archives.fetch_archives(DataLocation.resolve(source=str(folder)))


def test_truncated_archive_is_reported(mirror, shared_dir, tmp_path):
    folder = mirror(replace={GT: (shared_dir / GT).read_bytes()[:5000]})
    sha256sums(folder)
    with pytest.raises(StnError, match=f"{GT} is not a readable zip archive"):
        data.prepare(32, DataLocation(tmp_path / "d", str(folder)), show_progress=False)


def test_bad_checksum_file_is_reported(mirror):
    folder = mirror()
    (folder / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(StnError, match="SHA256SUMS: line 1"):
        archives.fetch_archives(DataLocation.resolve(source=str(folder)))


# ------------------------------------------------------------ crafted test archives

def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def ppm(width: int, height: int) -> bytes:
    pixels = (bytes(range(256)) * (width * height * 3 // 256 + 1))[: width * height * 3]
    return f"P6 {width} {height} 255\n".encode() + pixels


HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def write_test_archives(tmp_path: Path, images: dict[str, bytes], rows: list[str]) -> tuple[Path, Path]:
    images_zip, labels_zip = tmp_path / "images.zip", tmp_path / "labels.zip"
    images_zip.write_bytes(zip_bytes({f"GTSRB/Final_Test/Images/{k}": v for k, v in images.items()}))
    labels_zip.write_bytes(zip_bytes({"GT-final_test.csv": (HEADER + "".join(rows)).encode()}))
    return images_zip, labels_zip


def test_images_of_any_size_are_resized_and_rois_scaled(tmp_path):
    paths = write_test_archives(tmp_path, {"00000.ppm": ppm(250, 100), "00001.ppm": ppm(15, 15)},
                                ["00000.ppm;250;100;25;10;225;90;7\n", "00001.ppm;15;15;0;0;15;15;3\n"])
    split = data.decode_test(*paths, size=48)
    assert split.images.shape == (2, 3, 48, 48) and split.labels.tolist() == [7, 3]
    assert split.rois[0].tolist() == pytest.approx([4.8, 4.8, 43.2, 43.2])


def test_csv_row_naming_a_missing_image(tmp_path):
    paths = write_test_archives(tmp_path, {"00000.ppm": ppm(20, 20)},
                                ["00000.ppm;20;20;1;1;19;19;1\n", "00001.ppm;20;20;1;1;19;19;1\n"])
    with pytest.raises(StnError, match="entry GTSRB/Final_Test/Images/00001.ppm is listed in a CSV but missing"):
        data.decode_test(*paths, size=32)


def test_unreadable_image(tmp_path):
    paths = write_test_archives(tmp_path, {"00000.ppm": b"P6 garbage"}, ["00000.ppm;20;20;1;1;19;19;1\n"])
    with pytest.raises(StnError, match="cannot decode image GTSRB/Final_Test/Images/00000.ppm"):
        data.decode_test(*paths, size=32)


@pytest.mark.parametrize("name", ["../evil.ppm", "/etc/evil.ppm", "GTSRB/../../evil.ppm"])
def test_unsafe_entry_names_are_refused(tmp_path, name):
    _, labels_zip = write_test_archives(tmp_path, {}, ["00000.ppm;4;4;0;0;4;4;1\n"])
    images_zip = tmp_path / "evil.zip"
    images_zip.write_bytes(zip_bytes({name: ppm(4, 4)}))
    with pytest.raises(StnError, match="unsafe entry name"):
        data.decode_test(images_zip, labels_zip, size=32)


# ------------------------------------------------------------ cache

@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_size(size, tmp_path, shared_dir):
    with pytest.raises(StnError, match="image size must be a positive integer"):
        data.prepare(size, DataLocation(tmp_path, str(shared_dir)))


def test_unknown_split(prepared, shared_dir):
    with pytest.raises(StnError, match="unknown split 'valid'; valid: train, val, train_without_val, test"):
        data.load_split("valid", 32, DataLocation(prepared, str(shared_dir)))


def test_unwritable_data_dir(shared_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StnError, match=f"cannot write {blocker / 'data'}"):
        data.prepare(8, DataLocation(blocker / "data", str(shared_dir)), show_progress=False)


def test_failed_rebuild_keeps_the_good_cache(prepared, mirror, shared_dir, tmp_path):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    good = data.cache_path(prepared, 32).read_bytes()
    data.cache_path(data_dir, 32).write_bytes(good)
    folder = mirror(replace={GT: (shared_dir / GT).read_bytes()[:5000]})
    sha256sums(folder)
    with pytest.raises(StnError):
        data.prepare(32, DataLocation(data_dir, str(folder)), rebuild=True, show_progress=False)
    assert data.cache_path(data_dir, 32).read_bytes() == good
    assert [p.name for p in data_dir.iterdir()] == ["gtsrb-32px.pt"]  # no temp file left behind


def test_truncated_or_stale_cache_is_rebuilt(prepared, shared_dir, tmp_path):
    good = data.cache_path(prepared, 32).read_bytes()
    path = data.cache_path(tmp_path, 32)
    path.write_bytes(good[: len(good) // 2])
    assert data._read_cache(path, 32, archives.expected_hashes(DataLocation(tmp_path, str(shared_dir)))) is None
    path.write_bytes(good)
    assert data._read_cache(path, 32, {"other": "sha256:0"}) is None  # keyed by the archives' hashes
    path.write_bytes(good[: len(good) // 2])
    official = data.load_tensors(32, DataLocation(tmp_path, str(shared_dir)))
    assert len(official["test"]) == TEST_COUNT and path.read_bytes() != good[: len(good) // 2]
    assert os.path.getsize(path) > len(good) // 2
