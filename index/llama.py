"""The index as a llama-index retriever, so it plugs into llama-index query and chat engines.

Each hit becomes a ``TextNode`` whose id is the PMID and whose metadata carries the citation
fields, so llama-index's own source tracking (``response.source_nodes``) cites PMIDs too.
"""

from __future__ import annotations

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from index.search import Hit, PubMedIndex


class PubMedRetriever(BaseRetriever):
    def __init__(self, index: PubMedIndex, *, top_k: int = 5) -> None:
        super().__init__()
        self.index = index
        self.top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(hit) for hit in self.index.search(query_bundle.query_str, k=self.top_k)]


def to_node(hit: Hit) -> NodeWithScore:
    article = hit.article
    node = TextNode(
        id_=article.pmid,
        text=article.text,
        metadata={
            "pmid": article.pmid,
            "title": article.title,
            "journal": article.journal,
            "year": article.year,
            "url": hit.url,
        },
        excluded_embed_metadata_keys=["url"],
        excluded_llm_metadata_keys=["url", "journal"],
    )
    return NodeWithScore(node=node, score=hit.score)
