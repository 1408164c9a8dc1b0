"""When verification refuses a cut: find the groups to blame and plan again without them.

A group whose cut fails verification on its own means the graph missed a dependency there (an op
read as channel-preserving that is not, a stored size no rule follows). Rather than fail the whole
run, the groups whose cuts fail are found by bisection over the plan (each probe is one verified
``apply`` of part of the plan), frozen with the failure as the reason, and the target is met with
the groups left. The result is verified like any other; the warning names what was kept whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

from prunekit.graph.dependency import DependencyGraph
from prunekit.structured.apply import VerificationError, apply
from prunekit.structured.plan import Plan

__all__ = ["blame", "cause", "plan_without_blamed"]

T = TypeVar("T")
MAX_BLAMED = 8  # more failing groups than this: the graph is too far off for a fallback to be honest


def _part(plan: Plan, ids: Sequence[str]) -> Plan:
    return Plan(keep={g: plan.keep[g] for g in ids}, sizes={g: plan.sizes[g] for g in ids}, meta=plan.meta)


def blame(model: nn.Module, graph: DependencyGraph, plan: Plan, example_inputs: Any) -> list[str]:
    """The groups of ``plan`` whose cuts fail verification, found by bisection (a failure that
    needs two halves together blames both). Empty: the parts pass alone (nothing to freeze);
    more than :data:`MAX_BLAMED`: stops early, the caller gives up."""
    cache: dict[tuple[str, ...], bool] = {}

    def fails(ids: Sequence[str]) -> bool:
        key = tuple(ids)
        if key not in cache:
            try:
                apply(model, graph, _part(plan, ids), example_inputs=example_inputs, verify_result=True)
                cache[key] = False
            except VerificationError:
                cache[key] = True
        return cache[key]

    remaining = [g for g in plan.keep if plan.removed(g)]
    blamed: list[str] = []
    while remaining and len(blamed) <= MAX_BLAMED and fails(remaining):
        suspects = remaining
        while len(suspects) > 1:
            first, second = suspects[:len(suspects) // 2], suspects[len(suspects) // 2:]
            if fails(first):
                suspects = first
            elif fails(second):
                suspects = second
            else:
                break  # NOTE: only the two halves together fail: both are blamed
        blamed.extend(suspects)
        remaining = [g for g in remaining if g not in suspects]
    return blamed


def cause(error: VerificationError) -> str:
    """The error's first sentence: what failed, without the advice that follows."""
    return str(error).split(". ")[0]


def plan_without_blamed(model: nn.Module, graph: DependencyGraph, plan: Plan, example_inputs: Any,
                        error: VerificationError,
                        replan: Callable[[DependencyGraph], T]) -> tuple[DependencyGraph, T, list[str]] | None:
    """The graph with the blamed groups frozen and the plan ``replan`` makes on it, or None when
    nothing (or too much) is to blame."""
    blamed = blame(model, graph, plan, example_inputs)
    if not blamed or len(blamed) > MAX_BLAMED:
        return None
    frozen = graph.freezing(blamed, f"frozen: cutting it failed verification ({cause(error)})")
    return frozen, replan(frozen), blamed
