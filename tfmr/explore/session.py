"""The numbers `tfmr explore` shows, for one checkpoint: every one comes from tfmr's own functions.

    open_checkpoint(dir)     a Session for a language-model checkpoint or a Hugging Face folder of
                             a decoder-only model (LMSession), or an encoder-decoder checkpoint,
                             G2P included (Seq2SeqSession); read by tfmr.load
    session.info()           what the model is: its name (never an absolute path: display_name),
                             family, shape, positions, kernel, mixers, pattern, tokenizer, source
    session.tokens(...)      the token ids, their text and byte spans (tokenizer.token_bytes)
    session.attention(...)   one layer's weights per head, self / cross / encoder, from a forward
                             pass under kernels.eager_attention (the same math, with weights); for
                             a layer that gives none, the decay its mixer declares (`decays()`:
                             retention's, drawn by mixers.decay_mask)
    session.distribution(...)  the next-token distribution before and after the repetition
                             penalty and no-repeat-n-gram (decode.process), temperature, top-k,
                             top-p and min-p (decode.next_token_probs, which decode.choose samples)
    session.step(...)        one more token, drawn by decode.choose
    session.decode(...)      the greedy output (decode.greedy) and, for an encoder-decoder, the
                             cross-attention alignment of the output over the input
    session.beam(...)        the beam-search tree: every step's candidates and their fate, recorded
                             by decode.beam_search(on_step=...), and the n best (each with its
                             summed log-probability and its length-normalised score)
    session.positions()      the position scheme at work, read through its three hooks: what
                             `embed` adds, how `rotate` turns a vector, the `bias` it adds to scores
    session.export(...)      every layer's attention for one input as BertViz-shaped tensors
                             ([batch, heads, query, key]), JSON or safetensors

Logits come through the model's own decoding state (start_state / step) fed as decode.stream
feeds it, so attention sinks and retention show what decoding computes. What a request gets
wrong (an empty prompt, a character the tokenizer never saw, a prompt longer than the context,
a setting out of range) is a ConfigError with one line for the page. The HTTP side is server.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import decode
from ..builder import mixer_kinds
from ..config import ConfigError
from ..kernels import eager_attention
from ..loading import load
from ..masks import Mask
from ..mixers import decay_mask
from ..seq2seq import BOS, EOS, SPECIALS, PairVocab
from ..tokenizers.hf import HFTokenizer

SHOWN = 30  # bars in the distribution chart
MAX_BEAM = 8
BEAM_NEW_TOKENS = 12  # the page's default length of a beam search
DECODE_NEW_TOKENS = 40  # the longest greedy output (as `tfmr g2p`'s decoding)
POSITIONS_SHOWN = 64  # positions drawn in the positional-encoding view
LENGTH_PENALTY = 1.0  # the beam's n-best score: summed log-probability / length ** LENGTH_PENALTY
GENERIC_FOLDERS = ("checkpoint", "best")  # folder names that say little without their run's name


def display_name(directory: str | Path) -> str:
    """What the page calls the model: its path relative to the working directory when it lies
    inside it, else its folder name (with the run's name for a run's checkpoint / best folder).
    Never an absolute path: the page may be served to others, and the header has no room for it."""
    path = Path(os.path.abspath(directory))
    try:
        relative = path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        relative = ""
    if relative not in ("", "."):
        return relative
    return f"{path.parent.name}/{path.name}" if path.name in GENERIC_FOLDERS else path.name


def _first_sentence(text: str | None) -> str:
    """The first sentence of a docstring, on one line, without its code quotes."""
    words = " ".join((text or "").replace("`", "").split())
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]


@dataclass
class Inputs:
    """One request's sequences, checked: what the decoder reads (`tgt`, (1, T)) and, for an
    encoder-decoder, the source (`src`, (1, S)); `given` of the tgt tokens came from the user
    (the prompt; for an encoder-decoder the start token), the rest were generated."""

    tgt: torch.Tensor
    src: torch.Tensor | None
    given: int
    tgt_tokens: list
    src_tokens: list


def _rounded(t: torch.Tensor, digits: int = 5):
    return torch.round(t.float(), decimals=digits).tolist()


@dataclass
class Settings:
    """A request's decoding settings, checked by decode.check_decoding: the processors that come
    before temperature (repetition penalty, no-repeat-n-gram; decode.process) and the filters after."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition: float = 1.0
    ngram: int = 0

    def filters(self) -> tuple:
        return self.temperature, self.top_k, self.top_p, self.min_p


def _settings(temperature, top_k, top_p, min_p, repetition=1.0, ngram=0) -> Settings:
    """The decoding settings of a request (ConfigError when one is out of range or not a number)."""
    try:
        temperature = float(temperature)
        top_k = None if top_k in (None, 0, "") else int(top_k)
        top_p = None if top_p in (None, "") else float(top_p)
        min_p = None if min_p in (None, "") else float(min_p)
        repetition = 1.0 if repetition in (None, "") else float(repetition)
        ngram = 0 if ngram in (None, "") else int(ngram)
        decode.check_decoding(0, temperature, top_k, top_p, min_p, repetition, ngram)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e) or "a decoding setting is not a number") from None
    return Settings(temperature, top_k, top_p, min_p, repetition, ngram)


class Session:
    """What the two families share: attention, distributions, stepping, beam search, positions.
    A subclass turns the page's text into `Inputs` and names tokens."""

    kind = ""
    eos_id: int | None = None
    source = "tfmr checkpoint"

    def __init__(self, model, directory: Path):
        self.model, self.directory = model.eval(), directory
        self.name = display_name(directory)
        self.cfg = model.cfg
        self.limit = model.cfg.context  # the longest sequence the model reads (its context)

    # ------------------------------------------------------------ what subclasses provide
    def inputs(self, text: str, generated=()) -> Inputs:
        raise NotImplementedError

    def label(self, token_id: int) -> str:
        raise NotImplementedError

    def example(self) -> str:
        raise NotImplementedError

    def render(self, ids) -> str:
        """Generated ids as the text a user reads (what `tfmr lm generate` / `tfmr g2p` print)."""
        raise NotImplementedError

    def beam_start(self, inp: Inputs) -> torch.Tensor:
        return inp.tgt

    # ------------------------------------------------------------ the views
    def info(self) -> dict:
        c = self.cfg
        return {
            "kind": self.kind,
            "name": self.name,
            "arch": c.arch,
            "layers": c.layers,
            "encoder_layers": (c.encoder_layers or c.layers) if c.arch == "encoder-decoder" else 0,
            "heads": c.heads,
            "dim": c.dim,
            "context": c.context,
            "vocab_size": c.vocab_size,
            "kernel": c.kernel.kind,
            "positions": repr(self.model.pos),
            "pattern": repr(self.model.pattern),
            "mixers": self.mixers(),
            "source": self.source,
            "constant_state": bool(getattr(self.model, "constant_state", lambda: False)()),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "example": self.example(),
            "max_beam": MAX_BEAM,
            "beam_new_tokens": BEAM_NEW_TOKENS,
        }

    def tokens(self, text: str, generated=()) -> dict:
        inp = self.inputs(text, generated)
        return {"tokens": inp.tgt_tokens, "source": inp.src_tokens, "given": inp.given}

    @torch.no_grad()
    def forward_with_weights(self, inp: Inputs):
        """The model's forward pass on the eager kernel: an Output with every attention weight."""
        with eager_attention(self.model):
            return self.model(inp.tgt) if inp.src is None else self.model(inp.src, inp.tgt)

    def mixers(self) -> list[str]:
        """The sequence mixer of each decoder layer (builder.mixer_kinds: kinds of mixers.MIXERS)."""
        return mixer_kinds(self.cfg)

    def attention(self, text: str, generated=(), which: str = "self", layer: int = 0) -> dict:
        """One layer's attention weights, (heads, query, key), with the query and key labels; for
        decoder queries (self, cross) also `predicts`, the token the model ranks first after each
        (so a row can say what its step predicted). A decayed mixer (retention) has no attention
        map (no softmax; its parallel form is (Q K^T * D) V): it gives `weights` None and, per
        head, the decay D[n, m] = gamma_h^(n - m) that its parallel form multiplies the scores with
        (mixers.decay_mask of the decays the mixer declares, `Mixer.decays()`)."""
        inp = self.inputs(text, generated)
        out = self.forward_with_weights(inp)
        stacks = {"self": (out.attentions, inp.tgt_tokens, inp.tgt_tokens)}
        if inp.src is not None:
            stacks["cross"] = (out.cross_attentions, inp.tgt_tokens, inp.src_tokens)
            stacks["encoder"] = (out.encoder_attentions, inp.src_tokens, inp.src_tokens)
        if which not in stacks:
            raise ConfigError(f"no {which!r} attention in this model; it has {', '.join(stacks)}")
        weights, queries, keys = stacks[which]
        try:
            layer = int(layer)
        except (TypeError, ValueError):
            raise ConfigError(f"the layer must be a whole number, got {layer!r}") from None
        if not 0 <= layer < len(weights):
            raise ConfigError(
                f"layer {layer} does not exist; the {which} attention has {len(weights)} layers"
            )
        mixer = self.mixers()[layer] if which == "self" else "attention"
        view = {
            "which": which,
            "layer": layer,
            "layers": len(weights),
            "kinds": list(stacks),
            "mixer": mixer,
            "mixers": self.mixers() if which == "self" else ["attention"] * len(weights),
            "queries": [t["text"] for t in queries],
            "keys": [t["text"] for t in keys],
        }
        if which != "encoder":
            view["predicts"] = [self.label(int(i)) for i in out.logits[0].argmax(-1).tolist()]
        if weights[layer] is not None:
            return {**view, "weights": _rounded(weights[layer][0])}
        decays = self.model.blocks[layer].attn.decays() if which == "self" else None
        if decays is None:
            raise ConfigError(f"the {which} attention of layer {layer} gives no weights")
        return {
            **view,
            "weights": None,
            "decay": _rounded(decay_mask(decays, inp.tgt.shape[1])),
            "gammas": _rounded(decays.exp(), 8),
        }

    @torch.no_grad()
    def next_logits(self, inp: Inputs) -> torch.Tensor:
        """Next-token logits (1, V) after `inp.tgt`, through the model's own decoding state as
        decode.stream drives it: the given tokens in one step (the prefill), then each generated
        token one step at a time. For attention sinks (positions inside the cache) and retention
        (the recurrent state) that is what decoding computes, not what one full forward would."""
        state = self.model.start_state(1, self.limit, src=inp.src)
        logits, state = self.model.step(inp.tgt[:, : inp.given], state)
        for t in range(inp.given, inp.tgt.shape[1]):
            logits, state = self.model.step(inp.tgt[:, t : t + 1], state)
        return logits.float()

    def distribution(
        self,
        text: str,
        generated=(),
        temperature=1.0,
        top_k=None,
        top_p=None,
        min_p=None,
        repetition=1.0,
        ngram=0,
        shown: int = SHOWN,
    ) -> dict:
        """The SHOWN most likely next tokens by the model's own tempered probability (`before`);
        the repetition penalty and the no-repeat-n-gram ban over the text so far (decode.process,
        as decode.stream applies them), then the filters; the renormalised probability a sample is
        drawn with (`after`, 0 for a filtered or banned token). `penalised`: the repetition
        penalty changed the token's logit; `banned`: the n-gram rule forbids it."""
        s = _settings(temperature, top_k, top_p, min_p, repetition, ngram)
        inp = self.inputs(text, generated)
        logits = self.next_logits(inp)
        processed = decode.process(logits, inp.tgt, s.repetition, s.ngram)
        before = decode.next_token_probs(logits, s.temperature if s.temperature > 0 else 1.0)[0]
        after = decode.next_token_probs(processed, *s.filters())[0]
        penalised = decode.repetition_penalty(logits, inp.tgt, s.repetition)[0] != logits[0]
        banned = torch.isinf(decode.no_repeat_ngram(logits, inp.tgt, s.ngram)[0]) & ~torch.isinf(
            logits[0]
        )
        order = torch.argsort(before, descending=True, stable=True)[:shown].tolist()
        kept = after > 0
        return {
            "tokens": [
                {
                    "id": i,
                    "text": self.label(i),
                    "before": float(before[i]),
                    "after": float(after[i]),
                    "kept": bool(kept[i]),
                    "penalised": bool(penalised[i]),
                    "banned": bool(banned[i]),
                }
                for i in order
            ],
            "kept": int(kept.sum()),
            "vocab": int(after.numel()),
            "kept_mass": float(before[kept].sum()),
            "greedy": s.temperature <= 0,
            "penalised": int(penalised.sum()),
            "banned": int(banned.sum()),
        }

    def step(
        self,
        text: str,
        generated=(),
        temperature=1.0,
        top_k=None,
        top_p=None,
        min_p=None,
        repetition=1.0,
        ngram=0,
        seed: int | None = 0,
    ) -> dict:
        """One more token after the text so far, drawn by decode.choose from `distribution`'s
        `after` (the arg-max at temperature 0), after the same processors. The draw of step n
        uses seed + n, so the same settings step the same way."""
        s = _settings(temperature, top_k, top_p, min_p, repetition, ngram)
        generated = [int(g) for g in generated]
        inp = self.inputs(text, generated)
        if self.eos_id is not None and generated and generated[-1] == self.eos_id:
            raise ConfigError("the output has ended (</s>); reset the generation to step again")
        if inp.tgt.shape[1] >= self.limit:
            raise ConfigError(
                f"the text fills the model's context ({self.limit} tokens); it cannot step further"
            )
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed) + len(generated))
        scores = decode.process(self.next_logits(inp), inp.tgt, s.repetition, s.ngram)
        token = int(decode.choose(scores, *s.filters(), gen)[0])
        return {"token": token, "text": self.label(token), "generated": generated + [token]}

    @torch.no_grad()
    def decode(self, text: str, max_new_tokens: int | None = None) -> dict:
        """The greedy continuation (decode.greedy) of the text, as ids and labels."""
        inp = self.inputs(text)
        start = self.beam_start(inp)
        room = self.limit - start.shape[1]
        new = min(DECODE_NEW_TOKENS if max_new_tokens is None else int(max_new_tokens), room)
        if new < 1:
            raise ConfigError(
                f"the text fills the model's context ({self.limit} tokens); nothing to decode"
            )
        ids = decode.greedy(self.model, start, new, eos_id=self.eos_id, src=inp.src)[
            0, start.shape[1] :
        ].tolist()
        if self.eos_id is not None and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id) + 1]
        return {
            "generated": ids,
            "labels": [self.label(i) for i in ids],
            "rendered": self.render(ids),
        }

    def beam(
        self,
        text: str,
        width: int = 3,
        max_new_tokens: int | None = None,
        generated=(),
        repetition=1.0,
        ngram=0,
    ) -> dict:
        """Beam search (decode.beam_search, width 1-8) from the text so far, with its tree; the
        repetition penalty and no-repeat-n-gram apply to the candidates as in `generate`."""
        s = _settings(1.0, None, None, None, repetition, ngram)
        try:
            width = int(width)
        except (TypeError, ValueError):
            raise ConfigError(f"the beam width must be a whole number, got {width!r}") from None
        if not 1 <= width <= MAX_BEAM:
            raise ConfigError(f"the beam width must be between 1 and {MAX_BEAM}, got {width}")
        inp = self.inputs(text, generated)
        start = self.beam_start(inp)
        room = self.limit - start.shape[1]
        new = min(BEAM_NEW_TOKENS, room) if max_new_tokens in (None, "") else int(max_new_tokens)
        if new < 1 or new > room:
            raise ConfigError(
                f"beam search keeps the whole sequence in the context ({self.limit} tokens): "
                f"{start.shape[1]} tokens so far leave room for 1 to {room} new ones, not {new}"
            )
        steps: list[decode.BeamStep] = []
        best = decode.beam_search(
            self.model,
            start,
            width,
            new,
            eos_id=self.eos_id,
            length_penalty=LENGTH_PENALTY,
            src=inp.src,
            n_best=width,
            repetition=s.repetition,
            ngram=s.ngram,
            on_step=steps.append,
        )
        tree = beam_tree(steps, best, start.shape[1], self.label, self.root_label(inp))
        so_far = list(
            generated
        )  # already stepped: the output so far, which each hypothesis continues
        for hyp in tree["n_best"]:
            hyp["length"] = len(hyp["ids"])
            hyp["log_prob"] = (
                hyp["score"] * max(hyp["length"], 1) ** LENGTH_PENALTY
            )  # the sum the tree shows
            hyp["rendered"] = self.render([int(g) for g in so_far] + hyp["ids"])
        return {**tree, "length_penalty": LENGTH_PENALTY, "stepped": len(so_far)}

    def root_label(self, inp: Inputs) -> str:
        """The text the tree grows from: everything the decoder has read (the page shortens it)."""
        return "".join(t["text"] for t in inp.tgt_tokens)

    @torch.no_grad()
    def positions(self) -> dict:
        """Each position module of the model read through its hooks, at the first positions."""
        T = min(self.limit, POSITIONS_SHOWN)
        attn = self.model.blocks[0].attn
        parts = [("encoder", self.model.enc_pos, False)] if self.model.needs_source else []
        parts.append(("decoder", self.model.pos, True))
        return {
            "length": T,
            "parts": [
                position_view(name, pos, T, self.cfg.dim, attn.heads, attn.head_dim, causal)
                for name, pos, causal in parts
            ],
        }

    def export(self, text: str, generated=()) -> tuple[dict, dict]:
        """(tensors, labels): every layer's attention for one input, each (1, heads, query, key),
        named as BertViz's views take them ("attention.<layer>" for a language model;
        "encoder_attention.<layer>", "decoder_attention.<layer>" and "cross_attention.<layer>" for
        an encoder-decoder), and the labels: the tokens ("tokens", or "encoder_tokens" and
        "decoder_tokens") and "layers", the number of layers of each stack. A retention layer has
        no weights: its tensor is left out (null in the JSON)."""
        inp = self.inputs(text, generated)
        out = self.forward_with_weights(inp)
        tgt = [t["text"] for t in inp.tgt_tokens]
        if inp.src is None:
            stacks = {"attention": out.attentions}
            labels = {"tokens": tgt}
        else:
            stacks = {
                "encoder_attention": out.encoder_attentions,
                "decoder_attention": out.attentions,
                "cross_attention": out.cross_attentions,
            }
            labels = {"encoder_tokens": [t["text"] for t in inp.src_tokens], "decoder_tokens": tgt}
        tensors = {
            f"{name}.{i}": w.float().contiguous()
            for name, stack in stacks.items()
            for i, w in enumerate(stack)
            if w is not None
        }
        return tensors, {**labels, "layers": {name: len(stack) for name, stack in stacks.items()}}


def export_json(tensors: dict, labels: dict) -> bytes:
    """The export as JSON: the labels, and per stack a list of layers, each [1][heads][query][key]
    (null for a layer without weights)."""
    data: dict = {k: v for k, v in labels.items() if k != "layers"}
    for stack, count in labels["layers"].items():
        data[stack] = [None] * count
    for name, w in tensors.items():
        stack, layer = name.rsplit(".", 1)
        data[stack][int(layer)] = w.tolist()
    return json.dumps(data).encode("utf-8")


def export_safetensors(tensors: dict, labels: dict) -> bytes:
    """The export as safetensors bytes; the token labels go in the metadata as JSON strings."""
    from safetensors.torch import save

    return save(tensors, metadata={k: json.dumps(v) for k, v in labels.items()})


# ---------------------------------------------------------------------------- the beam tree
def beam_tree(steps, best: decode.NBest, prompt_len: int, label, root: str) -> dict:
    """Nodes of the beam-search tree from the recorded steps (one input). A node is one candidate
    continuation: its parent (a node of the step before; 0 is the prompt), its token, the summed
    log-prob, and its fate: "running" (a beam of the next step), "finished" (entered the pool of
    finished hypotheses) or "pruned". The n best are marked by rank; the nodes on the best path
    carry best=True."""
    nodes = [
        {
            "id": 0,
            "parent": None,
            "step": -1,
            "token": None,
            "text": root,
            "score": 0.0,
            "fate": "root",
        }
    ]
    running = {0: 0}  # beam slot -> node id
    finished: dict[tuple, int] = {}  # token path -> node id
    paths = {0: ()}
    for s in steps:
        parents, tokens, scores = s.parents[0].tolist(), s.tokens[0].tolist(), s.scores[0].tolist()
        ended, pooled, kept = s.ended[0].tolist(), s.pooled[0].tolist(), s.kept[0].tolist()
        ids = {}
        for c, (p, tok, score) in enumerate(zip(parents, tokens, scores)):
            if (
                score <= decode.NEG / 2 or p not in running
            ):  # a placeholder beam (only one at the start)
                continue
            fate = "finished" if pooled[c] else "pruned"
            node = {
                "id": len(nodes),
                "parent": running[p],
                "step": s.t,
                "token": tok,
                "text": label(tok),
                "score": score,
                "fate": fate,
            }
            ids[c] = node["id"]
            paths[node["id"]] = paths[running[p]] + (tok,)
            if pooled[c]:
                finished[paths[node["id"]]] = node["id"]
            nodes.append(node)
        running = {}
        for slot, c in enumerate(kept):
            if c in ids and not ended[c]:
                nodes[ids[c]]["fate"] = "running"
                running[slot] = ids[c]
    n_best = []
    for rank in range(best.ids.shape[1]):
        length = int(best.lengths[0, rank])
        toks = tuple(best.ids[0, rank, prompt_len : prompt_len + length].tolist())
        node = finished.get(toks)
        if node is not None:
            nodes[node]["rank"] = rank
        n_best.append(
            {
                "rank": rank,
                "ids": list(toks),
                "text": [label(t) for t in toks],
                "score": float(best.scores[0, rank]),
                "node": node,
            }
        )
    node = n_best[0]["node"] if n_best else None
    while node is not None:
        nodes[node]["best"] = True
        node = nodes[node]["parent"]
    return {"nodes": nodes, "n_best": n_best, "steps": len(steps)}


# ---------------------------------------------------------------------------- positions
def position_view(
    where: str, pos, T: int, dim: int, heads: int, head_dim: int, causal: bool
) -> dict:
    """What a position module does, read through its three hooks (positions.py):

        embedding   what `embed` adds to zero token embeddings, (T, dim): sinusoidal, learned
        rotation    a vector of ones after `rotate`, (T, head_dim), and the score of the rotated
                    query at each position against the key at position 0, q_m . k_0 / head_dim
        bias        the `bias` it adds to attention scores, (heads, T, T), masked entries None

    and, for the caption, `about` (the first sentence of the class's docstring) and `settings`
    (its extra_repr, as print(model) shows it)."""
    view: dict = {
        "where": where,
        "module": repr(pos),
        "name": type(pos).__name__,
        "about": _first_sentence(type(pos).__doc__),
        "settings": pos.extra_repr().replace("=", " "),
    }
    added = pos.embed(torch.zeros(1, T, dim), 0)[0]  # (T, dim)
    if bool(added.abs().max() > 0):
        view["embedding"] = _rounded(added, 4)
    ones = torch.ones(1, 1, T, head_dim)
    q, k = pos.rotate(ones, ones, 0)  # (1, 1, T, head_dim) each
    if not torch.equal(q, ones):
        view["rotation"] = _rounded(q[0, 0], 4)
        view["scores"] = _rounded(q[0, 0] @ k[0, 0, 0] / head_dim, 4)  # (T,)
    bias = pos.bias(T, T, 0)
    if bias is not None:
        mask = Mask(causal=causal)
        dense = bias.dense(mask, T, T, "cpu", torch.float32)  # (H, T, T)
        allowed = mask.dense(T, T, "cpu")
        if allowed is not None:
            dense = dense.masked_fill(~allowed[0], float("nan"))
        view["bias"] = [
            [[None if v != v else round(v, 4) for v in row] for row in h] for h in dense.tolist()
        ]
    return view


# ---------------------------------------------------------------------------- the two families
class LMSession(Session):
    """A decoder-only language model and its tokenizer: a `tfmr lm train` checkpoint, or a Hugging
    Face folder (tfmr.interop.from_pretrained). A tokenizer that tfmr reads as its own (char, BPE,
    a byte-level tokenizer.json) names each token by its bytes, with byte spans; one the
    `tokenizers` library runs for tfmr (HFTokenizer) names it by its vocabulary entry, no spans."""

    kind = "lm"

    def __init__(
        self, model, directory: Path, tokenizer, example: str = "", source: str = "tfmr checkpoint"
    ):
        super().__init__(model, directory)
        self.tokenizer, self._example, self.source = tokenizer, example, source
        self.byte_spans = not isinstance(tokenizer, HFTokenizer)

    def example(self) -> str:
        text = self._example if self._example.strip() else "The "
        try:
            self.tokenizer.encode(text)
        except ValueError:
            return ""
        return text

    def render(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    def label(self, token_id: int) -> str:
        if not self.byte_spans:
            return self.tokenizer.piece(int(token_id))
        return self.tokenizer.token_bytes(int(token_id)).decode("utf-8", errors="backslashreplace")

    def info(self) -> dict:
        return {**super().info(), "tokenizer": self.tokenizer.kind}

    def inputs(self, text: str, generated=()) -> Inputs:
        if not isinstance(text, str):
            raise ConfigError("the prompt must be text")
        if not text:
            raise ConfigError("the prompt is empty: type at least one character")
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as e:
            raise ConfigError(f"the prompt cannot be encoded: {e}") from None
        ids = ids + [int(g) for g in generated]
        if any(not 0 <= i < self.cfg.vocab_size for i in ids):
            raise ConfigError(
                f"a generated token id is outside the vocabulary (0 to {self.cfg.vocab_size - 1})"
            )
        if len(ids) > self.limit:
            raise ConfigError(
                f"the text is {len(ids)} tokens; this model reads at most {self.limit} (its context): "
                "shorten it"
            )
        tokens, at = [], 0
        for n, i in enumerate(ids):
            tokens.append(
                {"id": i, "text": self.label(i), "generated": n >= len(ids) - len(generated)}
            )
            if self.byte_spans:
                size = len(self.tokenizer.token_bytes(i))
                tokens[-1]["bytes"] = [at, at + size]
                at += size
        return Inputs(torch.tensor([ids]), None, len(ids) - len(generated), tokens, [])


class Seq2SeqSession(Session):
    """An encoder-decoder model and its source / target vocabularies (G2P, the copy task): the
    text is the source (one symbol per character when every source symbol is one character,
    else one per word; folded to lower case when the source alphabet has no upper case); the
    decoder starts from <s>."""

    kind = "seq2seq"
    eos_id = EOS

    def __init__(self, model, directory: Path, vocab: PairVocab):
        super().__init__(model, directory)
        self.vocab = vocab
        symbols = vocab.src.itos[len(SPECIALS) :]
        self.by_char = all(len(s) == 1 for s in symbols)
        self.fold = all(s == s.lower() for s in symbols)

    def example(self) -> str:
        symbols = self.vocab.src.itos[len(SPECIALS) :]
        if self.by_char and set("tomato") <= set(symbols):
            return "tomato"
        return ("" if self.by_char else " ").join(symbols[:5])

    def render(self, ids) -> str:
        return " ".join(self.vocab.tgt.decode(ids))

    def label(self, token_id: int) -> str:
        itos = self.vocab.tgt.itos
        return itos[token_id] if 0 <= token_id < len(itos) else SPECIALS[3]

    def info(self) -> dict:
        return {
            **super().info(),
            "tokenizer": "symbols",
            "source_symbols": len(self.vocab.src),
            "target_symbols": len(self.vocab.tgt),
        }

    def root_label(self, inp: Inputs) -> str:
        """<s> and the symbols stepped so far: where the beam starts."""
        return " ".join(t["text"] for t in inp.tgt_tokens)

    def inputs(self, text: str, generated=()) -> Inputs:
        if not isinstance(text, str):
            raise ConfigError("the input must be text")
        text = text.strip().lower() if self.fold else text.strip()
        symbols = list(text) if self.by_char else text.split()
        if not symbols:
            raise ConfigError("the input is empty: type a word")
        stoi = self.vocab.src.stoi
        unknown = sorted({s for s in symbols if s not in stoi or s in SPECIALS})
        if unknown:
            alphabet = self.vocab.src.itos[len(SPECIALS) :]
            known = (
                f"these {len(alphabet)}: {''.join(alphabet)!r}"
                if self.by_char
                else f"{len(alphabet)} symbols"
            )
            raise ConfigError(
                f"not in the model's input alphabet: {', '.join(map(repr, unknown))}; it knows {known}"
            )
        tgt = [BOS] + [int(g) for g in generated]
        for what, n in (("input", len(symbols)), ("output", len(tgt))):
            if n > self.limit:
                raise ConfigError(
                    f"the {what} is {n} symbols; this model reads at most {self.limit}: shorten it"
                )
        if any(not 0 <= i < self.cfg.vocab_size for i in tgt):
            raise ConfigError(
                f"a generated id is outside the vocabulary (0 to {self.cfg.vocab_size - 1})"
            )
        src_tokens = [{"id": stoi[s], "text": s} for s in symbols]
        tgt_tokens = [
            {"id": i, "text": self.label(i), "generated": n > 0} for n, i in enumerate(tgt)
        ]
        return Inputs(
            torch.tensor([tgt]),
            torch.tensor([[stoi[s] for s in symbols]]),
            1,
            tgt_tokens,
            src_tokens,
        )

    def decode(self, text: str, max_new_tokens: int | None = None) -> dict:
        """The greedy output and its alignment: the last layer's cross-attention, averaged over
        heads, one row per output symbol (and </s>) over the input symbols."""
        result = super().decode(text, max_new_tokens)
        ids = result["generated"]
        body = ids[:-1] if ids and ids[-1] == EOS else ids
        out = self.forward_with_weights(self.inputs(text, body))
        result["body"] = body  # the output without </s>: what the attention view reads by default
        result["alignment"] = {
            "rows": [self.label(i) for i in body] + [SPECIALS[2]],
            "columns": [t["text"] for t in self.inputs(text).src_tokens],
            "weights": _rounded(out.cross_attentions[-1][0].float().mean(0)),
        }
        return result


def open_checkpoint(path: str | Path) -> Session:
    """The Session for the folder `path`, read by tfmr.load (a checkpoint checked against its
    manifest first; a folder that is no model is one line naming what it holds): a language model
    with its tokenizer (a tfmr checkpoint, or a Hugging Face folder of a decoder-only family, in
    float32: the page's numbers are float32 either way), or a tfmr encoder-decoder with its
    vocabularies (G2P, the copy task). An encoder-only model, or a Hugging Face encoder or
    encoder-decoder folder, is a ConfigError: the page reads text into a decoder."""
    loaded = load(path, runs=False, dtype=torch.float32)
    from ..ensemble import Ensemble

    if isinstance(loaded.model, Ensemble):
        raise ConfigError(
            f"{loaded.path} is an exported ensemble of {len(loaded.model.members)} models; explore "
            "shows one model's attention and beams: open one member's checkpoint"
        )
    arch = loaded.model.cfg.arch
    if loaded.kind == "hf" and arch != "decoder":
        raise ConfigError(
            f"{path} holds a Hugging Face {loaded.model_type} model ({arch}); explore shows "
            "Hugging Face decoder-only language models (gpt2, bloom, llama, mistral, mixtral)"
        )
    if arch == "encoder":
        raise ConfigError(
            f"{loaded.path} holds an encoder-only model; explore shows language models and "
            "encoder-decoder models"
        )
    if isinstance(loaded.vocab, PairVocab):
        return Seq2SeqSession(loaded.model, loaded.path, loaded.vocab)
    if loaded.kind == "hf":
        return LMSession(
            loaded.model,
            loaded.path,
            loaded.vocab,
            source=f"Hugging Face folder (model_type {loaded.model_type})",
        )
    prompt = loaded.config.sample.prompt
    return LMSession(
        loaded.model, loaded.path, loaded.vocab, prompt if isinstance(prompt, str) else ""
    )
