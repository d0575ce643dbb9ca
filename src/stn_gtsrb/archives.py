"""Where the three official GTSRB archives come from, and checking them.

A *source* is either a base URL (the official site or a mirror) or a local
folder that holds the archives (such as an offline copy). A
:class:`DataLocation` pairs it with the data directory that holds what is
made of the archives. Archives from a folder are read in place; archives from
a URL are downloaded with pooch into ``DATA_DIR/archives`` (temporary file,
hash check, then rename, with a progress bar). Every archive is verified
before use:

* against the source's ``SHA256SUMS`` file when it ships one,
* otherwise against the official MD5 sums below.

Hashes are written ``"md5:<hex>"`` or ``"sha256:<hex>"`` (pooch's notation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pooch
import requests

from .errors import StnError
from .fileio import write_text

OFFICIAL_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
SOURCE_ENV = "STN_GTSRB_SOURCE"  # default source: URL or folder
DATA_DIR_ENV = "STN_GTSRB_DATA"  # default data directory (downloads and caches)
CHECKSUM_FILE = "SHA256SUMS"
SOURCE_FILE = "source.json"  # in a data directory: the source its archives and caches came from
pooch.get_logger().setLevel("WARNING")  # the progress bar says enough

# role -> official archive name
ARCHIVES = {
    "train": "GTSRB_Final_Training_Images.zip",
    "test_images": "GTSRB_Final_Test_Images.zip",
    "test_labels": "GTSRB_Final_Test_GT.zip",
}
OFFICIAL_HASHES = {
    "GTSRB_Final_Training_Images.zip": "md5:f33fd80ac59bff73c82d25ab499e03a3",
    "GTSRB_Final_Test_Images.zip": "md5:c7e4e6327067d32654124b0fe9e82185",
    "GTSRB_Final_Test_GT.zip": "md5:fe31e9c9270bbcd7b84b7f21a9d9d9e5",
}


def default_data_dir() -> Path:
    """``$STN_GTSRB_DATA``, else the user cache directory."""
    return Path(os.environ.get(DATA_DIR_ENV) or platformdirs.user_cache_dir("stn-gtsrb"))


@dataclass(frozen=True)
class DataLocation:
    """Where the prepared data lives and where its archives come from.

    Resolve it once, where the options enter (:meth:`resolve`), and pass it down whole.
    """

    dir: Path  # the data directory: the prepared tensor caches, archives downloaded from a URL, SOURCE_FILE
    source: str  # a base URL or a folder holding the three official archives

    @classmethod
    def resolve(cls, data_dir: Path | str | None = None, source: str | None = None) -> DataLocation:
        """The location that options (or their absence) name.

        Args:
            data_dir: the data directory; default :func:`default_data_dir`.
            source: a base URL or folder; default the source the data directory was prepared from
                (:func:`remember_source`), else ``$STN_GTSRB_SOURCE``, else the official URL.
        """
        folder = Path(data_dir) if data_dir else default_data_dir()
        return cls(folder, source or remembered_source(folder) or os.environ.get(SOURCE_ENV) or OFFICIAL_URL)

    @property
    def archive_dir(self) -> Path:
        """Where archives from a URL source are downloaded to."""
        return self.dir / "archives"


def resolve_location(location: DataLocation | None, data_dir: Path | str | None = None,
                     source: str | None = None) -> DataLocation:
    """``location``, else :meth:`DataLocation.resolve` of ``data_dir`` and ``source``: for the public functions,
    which take a location or, as a convenience, the two options it is made of (one or the other, not both)."""
    if location is None:
        return DataLocation.resolve(data_dir, source)
    if data_dir is not None or source is not None:
        raise StnError("give a location or its data directory and source, not both")
    return location


def remembered_source(data_dir: Path) -> str | None:
    """The source recorded in ``data_dir/SOURCE_FILE``, if any."""
    path = data_dir / SOURCE_FILE
    try:
        return json.loads(path.read_text())["source"] if path.exists() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise StnError(f"cannot read {path}: {error}; delete it and prepare the data again") from None


def remember_source(location: DataLocation) -> None:
    """Record the location's source (a folder as an absolute path) in its data directory, where
    :meth:`DataLocation.resolve` finds it when given the directory alone."""
    value = location.source if is_url(location.source) else str(Path(location.source).resolve())
    if remembered_source(location.dir) != value:
        write_text(location.dir / SOURCE_FILE, json.dumps({"source": value}) + "\n")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def parse_checksums(text: str, origin: str) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <name>`` per line) into name -> hash."""
    hashes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise StnError(f"{origin}: line {number} is not '<sha256>  <file name>': {line!r}")
        hashes[parts[1].lstrip("*")] = "sha256:" + parts[0].lower()
    return hashes


def _mirror_checksums(base_url: str, archive_dir: Path, download: bool) -> dict[str, str] | None:
    """The mirror's SHA256SUMS (fetched once, kept beside the archives), or None."""
    local = archive_dir / CHECKSUM_FILE
    if not local.exists() and download:
        try:
            pooch.retrieve(base_url + CHECKSUM_FILE, known_hash=None, fname=CHECKSUM_FILE, path=archive_dir)
        except requests.HTTPError:
            return None  # this mirror ships no checksum file: use the official sums
        except (requests.RequestException, OSError) as error:
            raise StnError(f"cannot reach {base_url}: {error}") from None
    if local.exists():
        return parse_checksums(local.read_text(), str(local))
    return None


def expected_hashes(location: DataLocation, download: bool = False) -> dict[str, str]:
    """Archive name -> the hash it must have, for the location's source."""
    source = location.source
    if is_url(source):
        shipped = None
        if source != OFFICIAL_URL:
            shipped = _mirror_checksums(_base_url(source), location.archive_dir, download)
    else:
        checksum_file = Path(source) / CHECKSUM_FILE
        shipped = parse_checksums(checksum_file.read_text(), str(checksum_file)) if checksum_file.exists() else None
    if shipped is None:
        return dict(OFFICIAL_HASHES)
    missing = [name for name in ARCHIVES.values() if name not in shipped]
    if missing:
        raise StnError(f"{source}: {CHECKSUM_FILE} has no entry for {', '.join(missing)}")
    return {name: shipped[name] for name in ARCHIVES.values()}


def _base_url(source: str) -> str:
    return source if source.endswith("/") else source + "/"


def verify_file(path: Path, known_hash: str) -> None:
    """Raise StnError unless ``path`` has the hash ``known_hash`` ("alg:hex")."""
    algorithm, expected = known_hash.split(":", 1)
    actual = pooch.file_hash(str(path), alg=algorithm)
    if actual != expected:
        raise StnError(f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual}")


def _download(url: str, known_hash: str, archive_dir: Path, show_progress: bool) -> Path:
    name = url.rsplit("/", 1)[-1]
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
        return Path(pooch.retrieve(url, known_hash=known_hash, fname=name, path=archive_dir,
                                   progressbar=show_progress))
    except ValueError as error:  # pooch: hash mismatch (the bad download is deleted)
        raise StnError(f"{url}: downloaded file failed verification, expected {known_hash} ({error})") from None
    except requests.RequestException as error:
        raise StnError(f"cannot download {url}: {error}") from None
    except OSError as error:
        raise StnError(f"cannot write {archive_dir / name}: {error}") from None


def fetch_archives(location: DataLocation, download: bool = False,
                   show_progress: bool = True) -> tuple[dict[str, Path], dict[str, str]]:
    """Locate (and if allowed download) the three archives and verify them.

    Returns ``(paths, hashes)``: role -> verified path, archive name -> hash.
    Raises StnError naming the archive that is missing or fails verification.
    """
    source = location.source
    hashes = expected_hashes(location, download)
    paths = {}
    if is_url(source):
        archive_dir = location.archive_dir
        for role, name in ARCHIVES.items():
            path = archive_dir / name
            if download:
                path = _download(_base_url(source) + name, hashes[name], archive_dir, show_progress)
            elif not path.exists():
                raise StnError(f"GTSRB archive {path} not found: run stn_gtsrb.prepare(download=True) "
                               "or pass download=True",
                               cli=f"GTSRB archive {path} not found: run 'stn-gtsrb data prepare' "
                                   "(with --source DIR_OR_URL for another source than the official URL)")
            else:
                verify_file(path, hashes[name])
            paths[role] = path
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise StnError(f"source folder {folder} not found")
        for role, name in ARCHIVES.items():
            path = folder / name
            if not path.exists():
                raise StnError(f"GTSRB archive {path} not found")
            verify_file(path, hashes[name])
            paths[role] = path
    return paths, hashes
