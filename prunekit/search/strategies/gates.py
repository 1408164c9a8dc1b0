"""The differentiable option: :class:`~prunekit.gates.ChannelGates` trained with the model for a few
steps towards the MACs constraint, hardened to a plan, and read back as a configuration.

Hard Concrete gates learn which channels to keep by gradient descent on the task loss plus a
Lagrangian MACs budget (see :mod:`prunekit.gates.channel_gates`); the hardened widths, rounded up to
the space's next choice (down, where rounding up breaks the constraints), are one configuration,
scored like any other (one proxy evaluation).
Needs a ``macs`` constraint and the evaluator's model and a trainable ``metric`` (a Proxy).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch

from prunekit.errors import ConfigError
from prunekit.search.evaluator import BudgetSpent, Evaluator

__all__ = ["gates"]


def gates(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any, steps: int = 30,
          lr: float = 0.01) -> None:
    """Train gates ``steps`` batches on the proxy's calibration data, harden, score the result."""
    from prunekit.gates import ChannelGates

    proxy, model = evaluator.metric, evaluator.model
    if "macs" not in evaluator.constraints or model is None or not hasattr(proxy, "calibration"):
        raise ConfigError("search strategy 'gates' needs a MACs constraint (e.g. --target-macs 0.25) and a model "
                          "scored by a Proxy. Pass target macs, or choose another strategy.")
    if "config" not in state:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            work = copy.deepcopy(model).train()
            batches = list(proxy.calibration)  # type: ignore[union-attr]
            example = proxy.task.inputs(batches[0])[0][:1]  # type: ignore[union-attr]
            gated = ChannelGates({"macs": evaluator.constraints["macs"]}, round_to=1,
                                 warmup_steps=steps // 2).fit(work, example)
            optimizer = torch.optim.SGD(work.parameters(), lr=lr, momentum=0.9)
            for batch in itertools.islice(itertools.cycle(batches), steps):
                optimizer.zero_grad(set_to_none=True)
                proxy.task.loss(work, batch).backward()  # type: ignore[union-attr]
                optimizer.step()
                gated.step()
            plan = gated.harden(verify_result=False).plan
        up, down = evaluator.space.dense(), evaluator.space.dense()
        for d in evaluator.space.dimensions:
            if d.kind == "width" and d.name in plan.keep:
                kept = len(plan.keep[d.name])
                up[d.name] = min((c for c in d.choices if c >= kept), default=d.choices[0])
                down[d.name] = max((c for c in d.choices if c <= kept), default=d.choices[-1])
        # NOTE: rounding every width up to the space's coarse steps can overshoot the MACs budget the
        # gates met (ResNet-20 at 4x, 24 evaluations: nothing feasible); then round down instead
        state["config"] = up if evaluator.cheap_feasible(up) else down
        save(state)
    try:
        evaluator(state["config"])
    except BudgetSpent:
        pass
