"""Read and normalise PubMed records (XML, efetch, JSON Lines) into ``Article`` events."""

from ingest.records import Article, Deletion, Event, IngestSummary, Section, Skipped, SourceError
from ingest.sources import expand_sources, read_source

__all__ = [
    "Article",
    "Deletion",
    "Event",
    "IngestSummary",
    "Section",
    "Skipped",
    "SourceError",
    "expand_sources",
    "read_source",
]
