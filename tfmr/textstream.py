"""Text streaming: decoded text pieces, yielded as the decoder chooses tokens.

    from tfmr.textstream import stream_text, TextPieces
    for piece in stream_text(model, tokenizer, prompt_ids, max_new_tokens=50, temperature=0.0):
        print(piece, end="", flush=True)

A byte-level token can end in the middle of a UTF-8 character (a Chinese character or an emoji is
often split over two or three tokens), so decoding one token at a time would print U+FFFD for the
pieces. `TextPieces` keeps the text right:

* a tokenizer with `token_bytes(id)` (tfmr's BPE) feeds the bytes to an incremental UTF-8
  decoder: a character is yielded once its last byte arrives, and bytes that can never become one
  turn into U+FFFD exactly where a one-shot `decode` of all the ids would put them;
* any other tokenizer (char, the `tokenizers` library wrapper) is decoded whole after each token
  and the new suffix is yielded, held back while it ends in U+FFFD (a character still incomplete).

`finish()` yields what is held back when the stream ends, so "".join(pieces) always equals
tokenizer.decode(all new ids). Left out: detokenizers that change earlier text when a later token
comes (the suffix rule then yields only the part that stays the same, then the rest at the end).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch

REPLACEMENT = "\ufffd"


class TextPieces:
    """Turns token ids, one at a time, into the text they add (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = ""
        errors = getattr(tokenizer, "decode_errors", "replace")
        self._bytes = (
            codecs.getincrementaldecoder("utf-8")(errors)
            if hasattr(tokenizer, "token_bytes")
            else None
        )

    def add(self, token_id: int) -> str:
        """The text this token completes ('' while a character is still incomplete)."""
        if self._bytes is not None:
            return self._bytes.decode(self.tokenizer.token_bytes(int(token_id)))
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids)
        stable = text.rstrip(REPLACEMENT)
        if not stable.startswith(
            self.shown
        ):  # the detokenizer rewrote earlier text: wait for the end
            return ""
        piece, self.shown = stable[len(self.shown) :], stable
        return piece

    def finish(self) -> str:
        """What is still held back (as U+FFFD where bytes never completed a character)."""
        if self._bytes is not None:
            return self._bytes.decode(b"", final=True)
        text = self.tokenizer.decode(self.ids)
        rest = text[len(self.shown) :] if text.startswith(self.shown) else text
        self.shown = text
        return rest


def stream_text(
    model,
    tokenizer,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    **more,
) -> Iterator[str]:
    """Yield the text of the continuation of `input_ids` (1, T) piece by piece, as tokens are chosen
    by tfmr.decode.stream (`more`: min_p, eos_id, repetition, ngram, ...). No piece is empty, and
    the pieces join to tokenizer.decode(new ids)."""
    from .decode import stream

    if input_ids.shape[0] != 1:
        raise ValueError(
            f"stream_text streams one prompt at a time, got a batch of {input_ids.shape[0]}"
        )
    pieces = TextPieces(tokenizer)
    for tok in stream(
        model, input_ids, max_new_tokens, temperature, top_k, top_p, seed=seed, **more
    ):
        piece = pieces.add(int(tok[0]))
        if piece:
            yield piece
    rest = pieces.finish()
    if rest:
        yield rest
