"""Retrieval + prompting + generation + citations: questions in, cited answers out."""
