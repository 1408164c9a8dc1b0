"""Reinforcement learning, AMC-style (He et al. 2018): an agent proposes each layer's width in
turn, and learns from the proxy reward.

The agent walks the dimensions in order; at each it sees a small state (position, the group's size,
the previous choice's kept fraction, the cost fraction committed so far and the budget left) and
a tiny policy (4 -> 16 -> choices, tanh) samples one choice. Where the remaining budget cannot be
met even by the smallest remaining choices, the choice is clipped to the largest that still can
(AMC's action clipping), so every episode is feasible when the space allows. The reward is the
proxy metric; the policy is trained by REINFORCE (Williams 1992) with a moving-average baseline,
the advantage scaled by the reward's running spread.
Small enough for a CPU: a few hundred parameters, one proxy evaluation per episode.

The policy's weights, the baseline, the episode count and the sampling generator's state are the
strategy's state, saved after every episode, so a resumed search continues the same run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.search.evaluator import BudgetSpent, Evaluator
from prunekit.search.space import Config

__all__ = ["reinforce"]


def _policy(width: int, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    policy = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, width))
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return policy


def _fraction(evaluator: Evaluator, config: Config) -> float:
    costs = evaluator.costs(config)
    key = next(iter(evaluator.limits), "macs")
    return costs.get(key, 1.0)


def _episode(evaluator: Evaluator, policy: nn.Module, generator: torch.Generator
             ) -> tuple[Config, torch.Tensor]:
    space = evaluator.space
    dims = [d for d in space.dimensions if d.kind in ("width", "block", "rank")]
    config = space.dense()
    smallest = {**config, **{d.name: d.choices[-1] for d in dims}}
    limit = next(iter(evaluator.limits.values()), 1.0)
    log_prob = torch.zeros(())
    previous, largest = 1.0, max((d.size for d in dims), default=1) or 1
    for i, d in enumerate(dims):
        state = torch.tensor([i / max(len(dims), 1), d.size / largest, previous,
                              _fraction(evaluator, config), limit])
        logits = policy(state)[:len(d.choices)]
        fixed = {e.name: config[e.name] for e in dims[:i]}
        allowed = torch.tensor([not evaluator.constraints or
                                _fraction(evaluator, {**smallest, **fixed, d.name: c}) <= limit + 1e-12
                                for c in d.choices])
        if not bool(allowed.any()):
            allowed[-1] = True
        probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=0)
        index = int(torch.multinomial(probs.detach(), 1, generator=generator))
        log_prob = log_prob + torch.log(probs[index])
        config[d.name] = d.choices[index]
        previous = (d.choices[index] / d.size) if d.kind == "width" else float(index == 0)
    return config, log_prob


def reinforce(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any, lr: float = 0.05,
              decay: float = 0.9) -> None:
    """REINFORCE over episodes until the budget is spent (module docstring)."""
    width = max(len(d.choices) for d in evaluator.space.dimensions)
    policy = _policy(width, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    baseline, spread = state.get("baseline"), float(state.get("spread", 0.0))
    if "policy" in state:
        policy.load_state_dict({k: torch.tensor(v) for k, v in state["policy"].items()})
        generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)  # NOTE: stateless, so a resume is exact
    limit = 20 * (evaluator.budget or 50)  # NOTE: a converged policy repeats remembered configs, which cost nothing
    try:
        while state.get("episodes", 0) < limit:
            config, log_prob = _episode(evaluator, policy, generator)
            record = evaluator(config)
            penalty = evaluator.violation(record.values) if not record.feasible else 0.0
            reward = evaluator.goodness(record.values) - penalty
            baseline = reward if baseline is None else decay * baseline + (1 - decay) * reward
            spread = decay * spread + (1 - decay) * (reward - baseline) ** 2
            # NOTE: the advantage in units of the reward's running spread, clipped, so the policy does not
            # collapse onto one configuration after a few episodes whatever the metric's scale
            advantage = max(-2.0, min(2.0, (reward - baseline) / (spread ** 0.5 + 1e-6)))
            optimizer.zero_grad()
            (-advantage * log_prob).backward()
            optimizer.step()
            state.update(policy={k: v.tolist() for k, v in policy.state_dict().items()}, baseline=baseline,
                         spread=spread,
                         generator=generator.get_state().tolist(), episodes=state.get("episodes", 0) + 1)
            save(state)
    except BudgetSpent:
        pass
