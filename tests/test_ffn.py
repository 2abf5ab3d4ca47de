"""Feed-forward sublayers: formulas, the registry-wide contract, and the mixture of experts
(one expert is the MLP, top-k dispatch equals a per-token reference, balance / z-loss formulas,
capacity drops, the Hugging Face balance loss, utilisation logging)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tfmr import Choice, ConfigError, ModelConfig, build_model
from tfmr.ffn import FFNS, GLU, MLP, MoE, SwiGLU, balance_loss, expert_stats, glu_hidden, z_loss

DIM = 16


def _ffn(kind: str, **kw):
    torch.manual_seed(0)
    options = {"experts": 4, "top_k": 2} if kind == "moe" else {}
    options.update(kw)
    return FFNS[kind](dim=DIM, bias=True, dropout=0.0, **options)


# ----------------------------------------------------------------------------- registry contract


@pytest.mark.parametrize("kind", sorted(FFNS))
def test_every_ffn_keeps_the_shape_and_returns_a_scalar_or_no_aux_loss(kind):
    ffn = _ffn(kind).train()
    x = torch.randn(3, 20, DIM)
    y, aux = ffn(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert aux is None or (aux.dim() == 0 and torch.isfinite(aux))
    assert ffn.extra_repr()  # print(model) reads like the config


@pytest.mark.parametrize("kind", sorted(FFNS))
def test_every_ffn_is_position_wise_at_inference(kind):
    """Token t's output depends on token t alone (what cached decoding relies on)."""
    ffn = _ffn(kind).eval()
    x = torch.randn(2, 9, DIM)
    full, _ = ffn(x)
    for t in (0, 4, 8):
        alone, _ = ffn(x[:, t : t + 1])
        torch.testing.assert_close(alone[:, 0], full[:, t], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(FFNS))
def test_every_ffn_passes_gradients_to_all_its_parameters(kind):
    ffn = _ffn(kind).train()
    y, aux = ffn(torch.randn(4, 32, DIM))
    (y.square().mean() + (aux if aux is not None else 0)).backward()
    for name, p in ffn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", sorted(FFNS))
def test_every_ffn_trains_in_a_model_and_decodes_with_a_cache(kind):
    torch.manual_seed(0)
    options = {"experts": 4, "top_k": 2} if kind == "moe" else {}
    model = build_model(
        ModelConfig(
            vocab_size=40, dim=DIM, layers=2, heads=2, context=16, ffn=Choice(kind, **options)
        )
    )
    ids = torch.randint(0, 40, (2, 10))
    loss = model(ids, ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    full = model(ids).logits
    state = model.start_state(2, 16)
    logits, state = model.step(ids[:, :6], state)
    for t in range(6, 10):
        logits, state = model.step(ids[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("activation, fn", [("gelu", F.gelu), ("relu", F.relu)])
def test_mlp_is_w2_act_w1(activation, fn):
    ffn = _ffn("mlp", activation=activation)
    x = torch.randn(2, 5, DIM)
    expected = fn(x @ ffn.w1.weight.T + ffn.w1.bias) @ ffn.w2.weight.T + ffn.w2.bias
    torch.testing.assert_close(ffn(x)[0], expected)
    assert ffn.w1.out_features == 4 * DIM


@pytest.mark.parametrize(
    "kind, gate", [("swiglu", F.silu), ("geglu", F.gelu), ("reglu", F.relu), ("glu", torch.sigmoid)]
)
def test_glu_variants_are_w2_of_gate_times_up(kind, gate):
    ffn = _ffn(kind)
    x = torch.randn(2, 5, DIM)
    lin = lambda m, v: v @ m.weight.T + m.bias  # noqa: E731
    expected = lin(ffn.w2, gate(lin(ffn.w1, x)) * lin(ffn.w3, x))
    torch.testing.assert_close(ffn(x)[0], expected)


def test_glu_hidden_is_two_thirds_of_4x_rounded_up_to_a_multiple():
    assert glu_hidden(96, 4, 64) == 256  # 2/3 * 384 = 256 exactly
    assert glu_hidden(100, 4, 64) == 320  # 266 -> next multiple of 64
    assert glu_hidden(4096, 4, 256) == 11008  # Llama-7B's intermediate size
    assert SwiGLU(dim=48).w1.out_features == 128
    assert GLU(dim=48, hidden=100).w3.out_features == 100
    # the same parameter count as the 4x MLP when no rounding happens
    mlp, glu = MLP(dim=96, bias=False), SwiGLU(dim=96, bias=False, multiple_of=64)
    assert sum(p.numel() for p in mlp.parameters()) == sum(p.numel() for p in glu.parameters())


# ----------------------------------------------------------------------------- mixture of experts


@pytest.mark.parametrize("expert, dense", [("mlp", MLP), ("swiglu", SwiGLU)])
@pytest.mark.parametrize("train", [False, True])
def test_moe_with_one_expert_equals_the_dense_ffn(expert, dense, train):
    torch.manual_seed(0)
    ref = dense(dim=DIM)
    moe = MoE(
        dim=DIM,
        experts=1,
        top_k=1,
        expert=expert,
        capacity_factor=1.0,
        balance_coef=0.01,
        z_coef=0.001,
    )
    moe.experts[0].load_state_dict(ref.state_dict())
    moe.train(train)
    x = torch.randn(2, 7, DIM)
    y, aux = moe(x)
    torch.testing.assert_close(y, ref(x)[0])
    if train:  # one expert: f = P = 1, so balance = 1; z = mean(logit^2)
        logit = x.reshape(-1, DIM) @ moe.router.weight.T  # (N, 1)
        torch.testing.assert_close(aux, 0.01 * 1.0 + 0.001 * logit.square().mean())
    else:
        assert aux is None


def _reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The definition, token by token: sum over the chosen experts of gate * expert(x_t)."""
    flat = x.reshape(-1, x.shape[-1])
    probs = (flat @ moe.router.weight.T).softmax(-1)
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        gates, chosen = probs[t].topk(moe.top_k)
        if moe.norm_topk:
            gates = gates / gates.sum()
        for g, e in zip(gates, chosen):
            out[t] += g * moe.experts[int(e)](flat[t : t + 1])[0][0]
    return out.view_as(x)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_routing_sends_each_token_to_its_k_best_experts(top_k):
    torch.manual_seed(0)
    moe = MoE(dim=DIM, experts=5, top_k=top_k).eval()
    x = torch.randn(2, 12, DIM)
    seen = {e: [] for e in range(5)}
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, inp, out, e=e: seen[e].append(inp[0].detach()))
    y, _ = moe(x)
    flat = x.reshape(-1, DIM)
    chosen = (flat @ moe.router.weight.T).topk(top_k, dim=-1).indices  # (N, k)
    for t in range(flat.shape[0]):
        got = {e for e, rows in seen.items() for r in torch.cat(rows) if torch.equal(r, flat[t])}
        assert got == set(chosen[t].tolist()), t  # exactly its k best experts, each once
    assert sum(torch.cat(rows).shape[0] for rows in seen.values()) == top_k * flat.shape[0]
    torch.testing.assert_close(y, _reference_moe(moe, x), atol=1e-6, rtol=1e-5)


def test_balance_loss_equals_the_switch_formula_on_a_hand_made_routing():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    chosen = torch.tensor([[0], [0], [0], [1]])
    # f = (3/4, 1/4), P = (0.65, 0.35): 2 * (0.75 * 0.65 + 0.25 * 0.35) = 1.15
    torch.testing.assert_close(balance_loss(probs, chosen, 2), torch.tensor(1.15))
    # top-2 of 3 experts, hand-made: counts (2, 1, 1) over N = 2, P = (0.5, 0.3, 0.2)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.3, 0.3]])
    chosen = torch.tensor([[0, 1], [0, 2]])
    torch.testing.assert_close(
        balance_loss(probs, chosen, 3), torch.tensor(3 * (1.0 * 0.5 + 0.5 * 0.3 + 0.5 * 0.2))
    )
    # perfectly even routing gives k
    uniform = torch.full((4, 4), 0.25)
    torch.testing.assert_close(
        balance_loss(uniform, torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]]), 4), torch.tensor(2.0)
    )


def test_router_z_loss_is_the_mean_squared_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(
        z_loss(logits), torch.tensor((math.log(2) ** 2 + math.log(4) ** 2) / 2)
    )


def test_moe_balance_loss_matches_hugging_face_mixtral():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    torch.manual_seed(0)
    moe = MoE(dim=DIM, experts=6, top_k=2, balance_coef=1.0, z_coef=0.0).train()
    x = torch.randn(3, 11, DIM)
    _, aux = moe(x)
    logits = x.reshape(-1, DIM) @ moe.router.weight.T
    ref = mixtral.load_balancing_loss_func((logits,), num_experts=6, top_k=2)
    torch.testing.assert_close(aux, ref.to(aux.dtype))


def _forced_router(moe: MoE, favourite: list[int]):
    """Make every token prefer experts in the order `favourite` (a constant input feature)."""
    with torch.no_grad():
        moe.router.weight.zero_()
        for rank, e in enumerate(favourite):
            moe.router.weight[e, 0] = float(len(favourite) - rank)


def test_capacity_drops_the_overflow_in_token_order_and_the_residual_carries_it():
    torch.manual_seed(0)
    moe = MoE(dim=DIM, experts=4, top_k=1, capacity_factor=1.0).train()  # capacity = 8 * 1 / 4 = 2
    _forced_router(moe, [2, 0, 1, 3])
    x = torch.randn(1, 8, DIM)
    x[..., 0] = 1.0
    y, _ = moe(x)
    gate = torch.softmax(torch.tensor([3.0, 2.0, 4.0, 1.0]), 0)[2]
    expected = gate * moe.experts[2](x[:, :2])[0]
    torch.testing.assert_close(y[:, :2], expected)  # the first two tokens fit
    assert torch.all(y[:, 2:] == 0)  # the other six were dropped: the sublayer adds nothing
    stats = expert_stats(moe)
    assert stats["moe_dropped"] == 0.75 and stats["moe_load"] == [[0.0, 0.0, 1.0, 0.0]]
    assert stats["moe_max_load"] == 4.0
    assert expert_stats(moe) == {}  # read once, then reset
    moe.eval()  # no capacity limit at inference (eval_capacity_factor = 0)
    torch.testing.assert_close(moe(x)[0], gate * moe.experts[2](x)[0])


def test_second_choices_are_dropped_before_first_choices():
    torch.manual_seed(0)
    moe = MoE(dim=DIM, experts=2, top_k=2, capacity_factor=0.5, norm_topk=False).train()
    _forced_router(moe, [0, 1])  # every token: first choice 0, second choice 1
    x = torch.randn(1, 8, DIM)
    x[..., 0] = 1.0
    y, _ = moe(x)  # capacity = ceil(0.5 * 8 * 2 / 2) = 4 slots per expert
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    first = p[0] * moe.experts[0](x)[0]
    second = p[1] * moe.experts[1](x)[0]
    torch.testing.assert_close(y[:, :4], first[:, :4] + second[:, :4])
    assert torch.all(y[:, 4:] == 0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(top_k=5), "top_k must be between 1 and experts"),
        (dict(expert="moe"), "unknown expert kind 'moe'"),
        (dict(expert="swiglu", activation="relu"), "fixes its activation"),
    ],
)
def test_bad_moe_options_are_config_errors(bad, message):
    cfg = ModelConfig(
        vocab_size=20, dim=DIM, layers=1, heads=2, ffn=Choice("moe", experts=4, **bad)
    )
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)


def test_trainer_logs_expert_utilisation(tiny_cfg, tmp_path):
    from tfmr.train import Trainer

    tiny_cfg.model.ffn = Choice("moe", experts=4, top_k=2, hidden=32)
    tiny_cfg.train.steps, tiny_cfg.train.log_every, tiny_cfg.train.eval_every = 6, 3, 6
    Trainer(tiny_cfg, tmp_path / "run", progress=False, log=lambda *a: None).fit()
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r for r in lines if "moe_load" in r]
    assert [r["step"] for r in logged] == [3, 6]
    for r in logged:
        assert len(r["moe_load"]) == tiny_cfg.model.layers and all(
            len(layer) == 4 for layer in r["moe_load"]
        )
        assert all(abs(sum(layer) - 1.0) < 1e-3 for layer in r["moe_load"])
        assert 1.0 <= r["moe_max_load"] <= 4.0 and r["moe_dropped"] == 0.0


@pytest.mark.parametrize("capacity_factor", [0.0, 0.6])
def test_moe_gradients_pass_gradcheck_with_and_without_drops(capacity_factor):
    """Dispatch and Combine have hand-written backwards (gathers, no scatter-add): check them."""
    torch.manual_seed(0)
    moe = MoE(dim=4, experts=3, top_k=2, hidden=6, capacity_factor=capacity_factor).double().train()
    x = torch.randn(1, 8, 4, dtype=torch.double, requires_grad=True)
    moe(x)
    assert (float(moe.dropped) > 0) == (capacity_factor > 0)  # the drop path is exercised
    torch.autograd.gradcheck(lambda v: moe(v)[0], (x,))  # through Combine's and Dispatch's backward


def test_moe_experiment_runs_and_compares_equal_active_sizes(tmp_path, capsys):
    import argparse

    from tfmr.experiments import EXPERIMENTS

    module = EXPERIMENTS["moe"]
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path),
            "--set",
            "model.layers=1",
            "--set",
            "model.dim=16",
            "--set",
            "model.context=16",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.steps=3",
            "--set",
            "train.warmup=1",
            "--set",
            "train.eval_every=1",
            "--experts",
            "4",
        ]
    )
    assert module.main(args) == 0
    results = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert set(results) == {"dense", "top2", "switch"}
    dense = results["dense"]["active_ffn_params"]
    for name in ("top2", "switch"):  # same active FFN size, up to the router's dim x E
        assert results[name]["active_ffn_params"] - dense == 16 * 4 + (
            16 if name == "top2" else 0
        )  # + a 2nd w2 bias
        assert results[name]["ffn_params"] > 2 * dense
    assert (tmp_path / "moe.png").exists() and "| switch |" in capsys.readouterr().out
