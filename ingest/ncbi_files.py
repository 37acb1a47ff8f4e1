"""``--pubmed-updates`` / ``--pubmed-baseline``: fetch NCBI's PubMed files not yet ingested.

NCBI publishes the yearly baseline (``baseline/``) and daily update files (``updatefiles/``) as
``pubmedYYnNNNN.xml.gz``, each next to a ``.md5`` file (``MD5(name)= hex``). The folder listing
is plain HTML; the file names are taken from its links. A file is "new" when no file of that
name is in the index manifest; each new file is downloaded (or reused, if an earlier download
is already in ``download_dir`` and matches), verified against its ``.md5``, and returned in
name order, which is the order NCBI means them to be applied in.

A checksum mismatch is a ``SourceError`` naming the file (the download is deleted, so the next
run fetches it again); nothing is ingested from a run in which any file failed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from config import Config
from ingest.http import HttpClient
from ingest.records import SourceError

log = logging.getLogger(__name__)

FOLDERS = {"updates": "updatefiles/", "baseline": "baseline/"}
_FILE = re.compile(r'href="(?:[^"]*/)?(pubmed\d+n\d+\.xml\.gz)"')
_MD5 = re.compile(r"=\s*([0-9a-fA-F]{32})\b")


def new_files(
    kind: str, config: Config, ingested: set[str], *, client: HttpClient | None = None, limit: int = 0
) -> list[Path]:
    """Download (and verify) the ``kind`` files (``updates`` or ``baseline``) not in ``ingested``."""
    client = client or HttpClient(rate=3.0)
    url = config.pubmed_files_url.rstrip("/") + "/" + FOLDERS[kind]
    names = [n for n in list_files(client, url) if n not in ingested]
    if limit:
        names = names[:limit]
    log.info("%s: %d file(s) not yet ingested", url, len(names))
    folder = config.download_dir / FOLDERS[kind].rstrip("/")
    return [_fetch_verified(client, url, name, folder) for name in names]


def list_files(client: HttpClient, url: str) -> list[str]:
    """The ``pubmed*.xml.gz`` names linked from an NCBI folder listing, sorted, each once."""
    page = client.get(url).decode("utf-8", "replace")
    names = sorted(set(_FILE.findall(page)))
    if not names and "<html" not in page.lower():
        raise SourceError(url, "is not a folder listing", "check --pubmed-files-url")
    return names


def ingested_names(index_dir: Path) -> set[str]:
    """Names of the files already in the index at ``index_dir`` (none for a new index)."""
    from index.manifest import Manifest
    from index.storage import MANIFEST, IndexDir

    live = IndexDir(index_dir).current()
    return {f.name for f in Manifest.load(live / MANIFEST).files} if live else set()


def _fetch_verified(client: HttpClient, url: str, name: str, folder: Path) -> Path:
    expected = _expected_md5(client, url + name + ".md5", name)
    target = folder / name
    if target.exists() and md5sum(target) == expected:
        log.info("%s: already downloaded and verified", target)
        return target
    log.info("Downloading %s", url + name)
    client.download(url + name, target)
    if md5sum(target) != expected:
        target.unlink()
        raise SourceError(url + name, f"MD5 of the download does not match {name}.md5", "run again to re-download")
    return target


def _expected_md5(client: HttpClient, url: str, name: str) -> str:
    text = client.get(url).decode("ascii", "replace")
    match = _MD5.search(text)
    if match is None or name not in text:
        raise SourceError(url, f"not an MD5 line for {name}: {text.strip()[:80]!r}")
    return match.group(1).lower()


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
