"""Tiny local tokenizers and models, for tests, benchmarks and the demo.

Nothing here downloads anything: tokenizers are trained with the `tokenizers`
library on a given corpus and wrapped as ``PreTrainedTokenizerFast`` (so they
save/load with ``save_pretrained``/``from_pretrained`` like any hub tokenizer),
and models are built from transformers configs with random (seeded) weights.

Chat template styles:

* ``"llama3"`` -- LLaMA-3 headers, contents trimmed, BOS in the template;
* ``"chatml"`` -- Qwen/ChatML ``<|im_start|>`` turns with a default system turn;
* ``None`` -- no template (leaf falls back to its plain template).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.config import Summary, make, option

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_STYLES: dict[str | None, dict[str, Any]] = {
    "llama3": {
        "template": LLAMA3_TEMPLATE,
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|pad|>",
    },
    "chatml": {
        "template": CHATML_TEMPLATE,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
    },
    None: {
        "template": None,
        "special": ["<s>", "</s>", "<pad>", "<unk>"],
        "bos": "<s>",
        "eos": "</s>",
        "pad": "<pad>",
        "unk": "<unk>",
    },
}

DEFAULT_CORPUS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have now?",
    "The answer is 8. First add the numbers, then check the sum.",
    "def add(a, b):\n    # returns the sum\n    return a + b",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Ignore the hint: the key 42 maps to value 17, so the result is 17.",
    "Step 1: read the question. Step 2: compute 12 * 4 = 48. The answer is 48.",
    "Über café naïve — unicode text, with punctuation!? (brackets) [and] {braces}.",
]


def build_tokenizer(
    corpus: Iterable[str] | None = None,
    *,
    style: str | None = "llama3",
    vocab_size: int = 512,
    model_max_length: int = 4096,
) -> Any:
    """Train a byte-level BPE tokenizer on ``corpus`` and give it a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = _STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else DEFAULT_CORPUS) * 2, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        unk_token=spec.get("unk"),
        model_max_length=model_max_length,
    )
    if spec["template"]:
        fast.chat_template = spec["template"]
    return fast


def build_model(
    tokenizer: Any,
    *,
    arch: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    attn_implementation: str = "sdpa",
) -> Any:
    """A randomly initialised causal LM (``arch``: ``llama`` or ``qwen2``) sized for ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


@dataclass
class TinyConfig:
    """Options of ``leaf tiny``."""

    out: Path = option(role="output", help="folder; gets teacher/ and student/")
    data: Path | None = option(None, role="input", help="samples (JSONL or hf:NAME@SPLIT reference) whose text the tokenizer is also trained on")
    style: str = option("llama3", choices=("llama3", "chatml", "none"), help="chat template of the tokenizer")
    seed: int = option(0, help="seed of the teacher's weights (the student's is seed + 1)")


@dataclass
class TinySummary(Summary):
    out: Path
    parameters: dict[str, int] = field(default_factory=dict)  #: model name -> parameter count

    def line(self) -> str:
        return "\n".join(f"wrote {self.out / name} ({n / 1e6:.2f}M parameters)" for name, n in self.parameters.items())


def write_tiny(config: TinyConfig | None = None, **kwargs: Any) -> TinySummary:
    """Write a random tiny teacher (4 layers, width 64) and student (2 layers, width 32) sharing one tokenizer."""
    from leaf.data.records import load_samples

    cfg = make(TinyConfig, config, kwargs, "leaf.tiny.write_tiny()")
    corpus = list(DEFAULT_CORPUS)
    if cfg.data:
        corpus += [t for s in load_samples(cfg.data) for t in (s.instruction, s.response)]
    tok = build_tokenizer(corpus, style=None if cfg.style == "none" else cfg.style, vocab_size=1024)
    summary = TinySummary(cfg.out)
    for name, size, layers, seed in (("teacher", 64, 4, cfg.seed), ("student", 32, 2, cfg.seed + 1)):
        model = build_model(tok, hidden_size=size, num_layers=layers, seed=seed)
        model.save_pretrained(cfg.out / name)
        tok.save_pretrained(cfg.out / name)
        summary.parameters[name] = sum(p.numel() for p in model.parameters())
    return summary
