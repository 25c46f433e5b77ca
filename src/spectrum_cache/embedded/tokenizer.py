"""A word-level tokenizer for the synthetic captions; its vocabulary saves as vocab.json.

It is a (tiny) transformers PreTrainedTokenizer, so diffusers saves and loads it as a pipeline
component like FLUX's own tokenizers, with no custom loading code.
"""

from __future__ import annotations

import json
import os
import re

import torch
from transformers import PreTrainedTokenizer

from .data import vocabulary

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[BOS]", "[UNK]")
VOCAB_FILE = "vocab.json"
MAX_LENGTH = 32  # [BOS] + the longest caption (31 words: four objects, each with size and position)
# A word is a run of letters or digits (with inner apostrophes, "don't"): punctuation and hyphens split
# words and are dropped, as a word-level tokenizer's pre-tokenizer does, so "circle," is "circle".
# The training captions are plain space-separated words, so their ids do not change.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def default_vocab() -> dict[str, int]:
    """[PAD] = 0, [BOS] = 1, [UNK] = 2, then every caption word in data.vocabulary() order."""
    return {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + vocabulary())}


class WordTokenizer(PreTrainedTokenizer):
    """Lower-cases, splits into words (punctuation dropped), maps words to ids and prepends [BOS].

    Unknown words map to [UNK] rather than failing, so any prompt can be encoded. An empty prompt is
    just [BOS], the unconditional input of classifier-free guidance.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids"]

    def __init__(self, vocab_file: str | None = None, **kwargs: object) -> None:
        if vocab_file is None:
            self.vocab = default_vocab()
        else:
            with open(vocab_file) as f:
                self.vocab = json.load(f)
        self.id_to_word = {i: w for w, i in self.vocab.items()}
        for key, token in zip(("pad_token", "bos_token", "unk_token"), SPECIAL_TOKENS):
            kwargs.setdefault(key, token)
        kwargs.setdefault("model_max_length", MAX_LENGTH)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs: object) -> list[str]:
        return _WORD.findall(text.lower())

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab["[UNK]"])

    def _convert_id_to_token(self, index: int) -> str:
        return self.id_to_word.get(index, "[UNK]")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        return [self.bos_token_id] + token_ids_0 + (token_ids_1 or [])

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE)
        with open(path, "w") as f:
            json.dump(self.vocab, f, indent=1)
        return (path,)

    def ids(self, texts: str | list[str]) -> torch.Tensor:
        """(B, model_max_length) int64 ids: [BOS] + words, truncated and padded with [PAD]."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self(texts, padding="max_length", truncation=True, max_length=self.model_max_length, return_tensors="pt")["input_ids"]
