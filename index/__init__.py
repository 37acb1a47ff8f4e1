"""Embeddings, FAISS vectors, the SQLite metadata store and search over them.

Heavy libraries (torch, faiss) load inside the functions that need them, so importing this
package and ``python -m index --help`` stay instant.
"""
