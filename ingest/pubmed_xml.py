"""Streaming reader for PubMed XML: baseline and update files, and E-utilities efetch output.

Contract: memory stays constant per file (each ``PubmedArticle`` element is cleared once read),
events come out in document order, and ``DeleteCitation`` becomes a ``Deletion``. Records
without an abstract are still yielded (the index decides what to keep). Not handled on
purpose: ``OtherAbstract`` (translations, publisher abstracts) and full text.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ingest.records import Article, Deletion, Event, Section, Skipped, SourceError

_RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
# Some citations carry an empty ArticleTitle and only the original-language title.
_TITLE_PATHS = ("ArticleTitle", "VernacularTitle", "Book/BookTitle")


def read_pubmed_xml(path: Path) -> Iterator[Event]:
    """Yield the events of one PubMed XML file (``.xml`` or ``.xml.gz``)."""
    from lxml import etree

    name = str(path)
    try:
        with _open(path) as stream:
            context = etree.iterparse(
                stream,
                events=("end",),
                tag=_RECORD_TAGS,
                resolve_entities=False,
                no_network=True,
                huge_tree=True,
                load_dtd=False,
            )
            for _, element in context:
                yield _event(element, name)
                element.clear(keep_tail=False)
                while element.getprevious() is not None:
                    del element.getparent()[0]
    except etree.XMLSyntaxError as exc:
        raise SourceError(name, f"not well-formed PubMed XML: {exc}", "is the file complete?") from exc
    except (EOFError, OSError, zlib.error) as exc:
        raise SourceError(name, f"cannot be read: {exc}", "re-download the file") from exc


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _event(element, source: str) -> Event:
    if element.tag == "DeleteCitation":
        return Deletion(tuple(p.text.strip() for p in element.iter("PMID") if p.text))
    pmid_el = element.find("./*/PMID")
    pmid = (pmid_el.text or "").strip() if pmid_el is not None else ""
    if not pmid.isdigit():
        return Skipped(source, pmid or "?", "record has no numeric PMID")
    try:
        return _article(element, pmid, pmid_el)
    except (ValueError, AttributeError) as exc:
        return Skipped(source, pmid, f"malformed record: {exc}")


def _article(element, pmid: str, pmid_el) -> Article:
    book = element.tag == "PubmedBookArticle"
    root = element.find("BookDocument") if book else element.find("MedlineCitation/Article")
    if root is None:
        raise ValueError("no Article element")
    title = next(filter(None, (_text(root.find(t)) for t in _TITLE_PATHS)), "")
    if not title:
        raise ValueError("no title")
    return Article(
        pmid=pmid,
        title=title,
        sections=_sections(root.find("Abstract")),
        journal=_text(root.find("Journal/Title")) or _text(root.find("Book/Publisher/PublisherName")),
        year=_year(root),
        authors=_authors(root.find("AuthorList")),
        publication_types=tuple(_text(p) for p in root.iterfind("PublicationTypeList/PublicationType")),
        mesh=tuple(_text(d) for d in element.iterfind("MedlineCitation/MeshHeadingList/MeshHeading/DescriptorName")),
        doi=_doi(element, root),
        version=int(pmid_el.get("Version", "1")),
    )


def _text(node) -> str:
    """All text inside a node (inline <i>, <sup> ... included), whitespace collapsed."""
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def _sections(abstract) -> tuple[Section, ...]:
    if abstract is None:
        return ()
    parts = (Section(p.get("Label", "").strip(), _text(p)) for p in abstract.iterfind("AbstractText"))
    return tuple(s for s in parts if s.text)


def _year(root) -> int | None:
    for path in ("Journal/JournalIssue/PubDate/Year", "Book/PubDate/Year", "ArticleDate/Year"):
        if (year := _text(root.find(path)))[:4].isdigit():
            return int(year[:4])
    medline_date = _text(root.find("Journal/JournalIssue/PubDate/MedlineDate"))  # e.g. "1998 Dec-1999 Jan"
    return int(medline_date[:4]) if medline_date[:4].isdigit() else None


def _authors(author_list) -> tuple[str, ...]:
    if author_list is None:
        return ()
    names = []
    for author in author_list.iterfind("Author"):
        last, initials = _text(author.find("LastName")), _text(author.find("Initials"))
        name = f"{last} {initials}".strip() or _text(author.find("CollectiveName"))
        if name:
            names.append(name)
    return tuple(names)


def _doi(element, root) -> str:
    for node in root.iterfind("ELocationID[@EIdType='doi']"):
        return _text(node)
    for node in element.iterfind("PubmedData/ArticleIdList/ArticleId[@IdType='doi']"):
        return _text(node)
    return ""
