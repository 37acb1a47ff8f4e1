"""The index behind llama-index's retriever interface."""

from __future__ import annotations

from conftest import HashingEncoder

from index.llama import PubMedRetriever
from index.search import PubMedIndex


def test_retriever_returns_pmid_nodes_in_rank_order(demo_index):
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    target = next(index.store.iter_articles())
    nodes = PubMedRetriever(index, top_k=4).retrieve(target.title)
    assert len(nodes) == 4
    assert nodes[0].node.node_id == target.pmid
    assert nodes[0].node.metadata["url"].endswith(f"/{target.pmid}/")
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)


def test_retriever_plugs_into_a_llama_index_query_engine(demo_index):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers import get_response_synthesizer

    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    target = next(index.store.iter_articles())
    synthesizer = get_response_synthesizer(response_mode="compact", llm=MockLLM(max_tokens=8))
    engine = RetrieverQueryEngine(retriever=PubMedRetriever(index, top_k=3), response_synthesizer=synthesizer)
    response = engine.query(target.title)
    assert response.source_nodes[0].node.metadata["pmid"] == target.pmid
    assert response.response  # MockLLM echoes a piece of the prompt built from the retrieved abstracts
