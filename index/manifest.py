"""The manifest: how an index was built, so a query never mixes encoders.

Stored as ``manifest.json`` inside each index generation, next to the vectors it describes.
Fields added later have defaults, so a manifest written before them still loads (format 1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_VERSION = 1


@dataclass
class SourceFile:
    name: str
    sha256: str
    records: int
    ingested_at: str


@dataclass
class Manifest:
    encoder: str  # sentence-transformers id or path that embedded every vector
    dim: int
    normalized: bool = True  # vectors are unit length: inner product == cosine
    metric: str = "inner_product"
    index_type: str = "IDMap2,Flat"
    documents: int = 0
    files: list[SourceFile] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    format_version: int = FORMAT_VERSION
    query_encoder: str = ""  # model that embeds queries when it differs from ``encoder`` (MedCPT); "" = same
    bm25: str = ""  # how bm25/ was built (library, parameters, tokenizer); "" = none stored
    ann: str = ""  # approximate index in ann.faiss derived from the vectors ("hnsw", "ivfpq"); "" = none
    encoder_backend: str = "torch"  # what ran the encoder(s): torch, onnx or onnx-int8; queries use the same
    segments: list[str] = field(default_factory=list)  # vector segments, oldest first; [] = vectors.faiss alone
    meta_segments: list[list] = field(default_factory=list)  # [file, rows] of the metadata; [] = articles.sqlite
    meta_next: int = 1  # the next metadata segment's number (never reused: index/meta_segments.py)

    def has_file(self, sha256: str) -> bool:
        return any(f.sha256 == sha256 for f in self.files)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); restore it or rebuild the index") from exc
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            found = data.get("format_version") if isinstance(data, dict) else None
            raise ValueError(f"{path}: index format {found} is not {FORMAT_VERSION}; rebuild it")
        try:
            data["files"] = [SourceFile(**f) for f in data.get("files", [])]
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: not an index manifest ({exc}); restore it or rebuild the index") from exc
