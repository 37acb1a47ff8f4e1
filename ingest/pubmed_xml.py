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

from ingest.records import (
    Article,
    BadValue,
    Deletion,
    Event,
    Section,
    Skipped,
    SourceError,
    pmid_of,
    version_of,
    year_of,
)

_RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
_SET_TAGS = ("PubmedArticleSet", "PubmedBookArticleSet")  # an empty one is a valid answer with no records
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
            records = 0
            for _, element in context:
                records += 1
                yield from _events(element, name)
                element.clear(keep_tail=False)
                while element.getprevious() is not None:
                    del element.getparent()[0]
            root = context.root.tag if context.root is not None else ""
            if not records and root not in _SET_TAGS:
                raise SourceError(name, f"the root element <{root}> is not PubMed XML", "expected <PubmedArticleSet>")
    except etree.XMLSyntaxError as exc:
        raise SourceError(name, f"not well-formed PubMed XML: {exc}", "is the file complete?") from exc
    except (EOFError, OSError, zlib.error) as exc:
        raise SourceError(name, f"cannot be read: {exc}", "re-download the file") from exc


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _events(element, source: str) -> Iterator[Event]:
    where = f"{source}:{element.sourceline}" if element.sourceline else source
    if element.tag == "DeleteCitation":
        pmids = []
        for node in element.iter("PMID"):
            try:
                pmids.append(pmid_of(node.text or ""))
            except BadValue as exc:
                yield Skipped(f"{source}:{node.sourceline}", (node.text or "?").strip()[:40], f"DeleteCitation: {exc}")
        if pmids:
            yield Deletion(tuple(pmids))
        return
    yield _event(element, where)


def _event(element, where: str) -> Event:
    pmid_el = element.find("./*/PMID")
    raw = (pmid_el.text or "").strip() if pmid_el is not None else ""
    if not raw:
        return Skipped(where, "?", "record has no PMID")
    try:
        return _article(element, pmid_of(raw), pmid_el)
    except BadValue as exc:
        return Skipped(where, raw[:40], str(exc))
    except (ValueError, AttributeError) as exc:
        return Skipped(where, raw[:40], f"malformed record: {exc}")


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
        version=version_of(pmid_el.get("Version", "1")),
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
        if (year := year_of(_text(root.find(path)))) is not None:
            return year
    return year_of(_text(root.find("Journal/JournalIssue/PubDate/MedlineDate")))  # e.g. "1998 Dec-1999 Jan"


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
