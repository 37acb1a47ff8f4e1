"""Every preset runs its real prompt path on a tiny random model of the same architecture.

For each preset the test builds a randomly initialised model of the preset's architecture
(hidden size 32, two layers) and a tiny word-level tokenizer carrying the family's special
tokens and, for chat-template presets, the family's chat template (tests/data). It loads them
through ``open_generator`` with ``--model NAME --generator FOLDER`` (the way a user points a
preset at local weights), renders the chatbot's real prompt and generates a few tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.formats import CHAT_TEMPLATE, FORMATS
from chatbot.generate import TransformersGenerator, open_generator
from chatbot.presets import PRESETS, ModelPreset, get_preset, preset_for
from chatbot.prompts import SYSTEM_PROMPT, build_messages
from config import DEFAULT_GENERATOR, Config
from index.search import Hit
from ingest.records import Article, Section
from tests.conftest import DATA

TEMPLATES = json.loads((DATA / "chat_templates.json").read_text(encoding="utf-8"))
TRAINED_CONTEXT = 4096  # max_position_embeddings of the tiny models

# The chat template each chat-tuned preset's tokenizer ships, and the token pair it uses.
FAMILY = {
    "biomistral-7b": "mistral",
    "mistral-7b": "mistral",
    "openbiollm-8b": "llama3",
    "llama3.1-8b": "llama3",
    "qwen2.5-1.5b": "chatml",
    "qwen2.5-7b": "chatml",
    "smollm2-1.7b": "chatml",
    "smollm2-135m": "chatml",
    "phi3.5-mini": "phi3",
    "gemma2-2b": "gemma",
}
BOS_EOS = {
    "mistral": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "chatml": (None, "<|im_end|>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "gemma": ("<bos>", "<eos>"),
    "completion": ("<s>", "</s>"),  # LLaMA-1/2 tokenizers of the completion-format presets
}
# Where the prompt must end: the point at which the model starts its reply.
REPLY_STARTS = {
    "mistral": "[/INST]",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "chatml": "<|im_start|>assistant\n",
    "phi3": "<|assistant|>\n",
    "gemma": "<start_of_turn>model\n",
    "medalpaca": "\n\nAnswer: ",
    "alpaca": "### Response:\n",
    "chatdoctor": "ChatDoctor: ",
    "meditron": "<|im_start|> assistant\n",
}
SPECIAL = sorted({t for pair in BOS_EOS.values() for t in pair if t} | {"<unk>", "<pad>", "<|im_start|>"})
SPECIAL += ["[INST]", "[/INST]", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>"]
SPECIAL += ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def _hits() -> list[Hit]:
    abstracts = [
        "Daily aspirin reduced recurrent stroke by 20% in adults after a first stroke.",
        "Statin therapy did not change muscle pain compared with placebo in a blinded trial.",
    ]
    return [
        Hit(Article(pmid=str(900 + n), title=f"Trial {n}", sections=(Section("", text),)), 0.8, n)
        for n, text in enumerate(abstracts, start=1)
    ]


def _family(preset: ModelPreset) -> str:
    return FAMILY[preset.name] if preset.prompt_format == CHAT_TEMPLATE else "completion"


def _build_tiny(preset: ModelPreset, folder: Path, words: str) -> None:
    """A random model of ``preset.architecture`` and a word-level tokenizer covering ``words``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    family = _family(preset)
    bos, eos = BOS_EOS[family]
    split = pre_tokenizers.Whitespace()
    pieces = [piece for piece, _ in split.pre_tokenize_str(words)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SPECIAL, *pieces]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL if t not in (bos, eos)]})
    if family != "completion":
        tokenizer.chat_template = TEMPLATES[family]
    tokenizer.save_pretrained(folder)
    config = AutoConfig.for_model(
        preset.architecture,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=TRAINED_CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)  # safetensors


@pytest.fixture(scope="module")
def messages() -> list[dict[str, str]]:
    return build_messages("Do statins cause muscle pain?", _hits(), [("Earlier question?", "Earlier [1].")])


def test_every_chat_template_preset_has_a_test_family() -> None:
    chat = {name for name, p in PRESETS.items() if p.prompt_format == CHAT_TEMPLATE}
    assert chat == set(FAMILY)


def test_medical_presets_cover_the_open_medical_models() -> None:
    medical = {name for name, p in PRESETS.items() if p.medical}
    for family in ("medalpaca", "meditron", "pmc-llama", "biomistral", "chatdoctor"):
        assert any(name.startswith(family) for name in medical), family


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt-5'.*biomistral-7b"):
        get_preset("gpt-5")


def test_default_generator_gets_its_preset() -> None:
    assert preset_for(DEFAULT_GENERATOR) is PRESETS["qwen2.5-1.5b"]
    assert preset_for("someone/unknown-model").name == "generic"


def test_a_preset_without_public_weights_says_how_to_get_them() -> None:
    from chatbot.generate import GeneratorUnavailable

    with pytest.raises(GeneratorUnavailable, match="Kent0n-Li/ChatDoctor"):
        open_generator(Config(model="chatdoctor"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_runs_its_prompt_path_on_a_tiny_model(name: str, messages: list[dict[str, str]], tmp_path: Path) -> None:
    preset = PRESETS[name]
    layouts = " ".join(f"{f.system} {f.user} {f.assistant}" for f in FORMATS.values())
    every_word = " ".join(m["content"] for m in messages) + " " + json.dumps(TEMPLATES) + " " + layouts
    _build_tiny(preset, tmp_path, every_word)
    generator = open_generator(Config(model=name, generator=str(tmp_path)))
    assert isinstance(generator, TransformersGenerator) and generator.preset is preset

    prompt = generator.render(messages)
    family = FAMILY.get(name, preset.prompt_format)
    assert prompt.endswith(REPLY_STARTS[family])
    assert SYSTEM_PROMPT.splitlines()[0] in prompt
    assert '<source n="1" pmid="901">' in prompt and '<source n="2" pmid="902">' in prompt
    assert prompt.index("Earlier question?") < prompt.index("Do statins cause muscle pain?")
    if not preset.system_role:  # the system prompt went into the first user turn
        first_user = {"mistral": "[INST] ", "gemma": "<start_of_turn>user\n"}[family]
        assert first_user + SYSTEM_PROMPT.splitlines()[0] in prompt
    bos = generator.tokenizer.bos_token
    if family in ("mistral", "llama3", "gemma") or preset.prompt_format != CHAT_TEMPLATE:
        assert prompt.startswith(bos) and prompt.count(bos) == 1  # exactly one BOS, from the format
    elif bos:
        assert bos not in prompt  # ChatML and Phi-3 templates put none (as transformers does)
    ids = generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert generator.tokenizer.unk_token_id not in ids  # every word and marker is a known token
    assert generator.count_tokens(prompt) == len(ids)

    new_tokens: list[int] = []
    generate = generator.model.generate

    def counting_generate(**kwargs):
        output = generate(**kwargs)
        new_tokens.append(output.shape[-1] - kwargs["input_ids"].shape[-1])
        return output

    generator.model.generate = counting_generate
    pieces = list(generator.stream(messages, max_new_tokens=4))
    assert all(isinstance(p, str) for p in pieces)
    assert len(new_tokens) == 1 and 1 <= new_tokens[0] <= 4
    expected_window = min(preset.context_window or TRAINED_CONTEXT, TRAINED_CONTEXT)
    assert generator.context_window == expected_window
    assert generator.stop_strings == preset.stop
