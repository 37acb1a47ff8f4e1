"""The passage of each retrieved abstract that matched the question, for its source card.

The scoring lives in ``chatbot.passages``, where the prompt's excerpts are chosen from the same
scores; the chatbot hands the cards' passages over with each answer (``Answer.passages``), so a
turn embeds the abstracts' sentences once. This module keeps the app's names for them.
"""

from chatbot.passages import SHORT_SENTENCE, matched_passages, sentences

__all__ = ["SHORT_SENTENCE", "matched_passages", "sentences"]
