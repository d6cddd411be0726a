"""Names of the files in a model, adapter or tokenizer folder that the stages read.

Kept one level below ``inputs`` and ``content_key`` so both can name them without importing
each other.
"""

from __future__ import annotations

#: Files whose presence means a folder has its own tokenizer (else the base model's is used).
TOKENIZER_CORE_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
#: Every tokenizer-side file a model folder may carry (copied beside merged weights, staged for
#: the converter, pushed to the Hub): the core files, their companions and the chat template.
TOKENIZER_FILES = (
    *TOKENIZER_CORE_FILES,
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
#: Files of a model or adapter folder the stages read, besides ``*.safetensors``: what the
#: content key covers (a README or an earlier export in the folder does not change it).
CONTENT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "adapter_config.json",
    *TOKENIZER_FILES,
)

__all__ = ["CONTENT_FILES", "TOKENIZER_CORE_FILES", "TOKENIZER_FILES"]
