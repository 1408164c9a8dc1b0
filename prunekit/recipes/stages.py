"""What each recipe stage does: one library call each, with the recipe's option names.

Every function takes the run's :class:`RunState` and the stage's validated options, may replace
``state.model`` (pruning returns a new, smaller module), and returns a JSON-able summary.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from prunekit.data.base import DataSplits
from prunekit.errors import ConfigError
from prunekit.recover import Distiller, TrainConfig, fit
from prunekit.registry import Registry

__all__ = ["RunState", "STAGES"]


@dataclass
class RunState:
    """What stages share: the current model, the data, the original model (distillation teacher)."""

    model: nn.Module
    splits: DataSplits
    original: nn.Module
    architecture: dict[str, Any]
    seed: int
    out: Path
    progress: bool = True
    plans: list[dict[str, Any]] = field(default_factory=list)
    factorised_from: nn.Module | None = None  # the model the (first) decompose stage started from
    factorised: list[Any] = field(default_factory=list)  # its LayerRecords

    def save(self, folder: Path) -> Path:
        """A checkpoint of the current model (see :mod:`prunekit.recipes.checkpoint`)."""
        from prunekit.recipes.checkpoint import save_model

        return save_model(self.model, self.architecture, folder, factorised_from=self.factorised_from,
                          factorised=self.factorised)

    def example(self, batch: int = 1) -> torch.Tensor:
        """An input batch of the data's shape."""
        return self.splits.example_input(batch)

    def calibration(self, count: int, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` training batches (inputs, labels)."""
        from prunekit.pipeline import calibration_batches

        return calibration_batches(self.splits, count, size)


StageFn = Callable[[RunState, BaseModel, int], dict[str, Any]]
STAGES: Registry[StageFn] = Registry("recipe stage", list_hint="see prunekit.recipes.schema")


def _train_config(options: BaseModel, seed: int) -> TrainConfig:
    """TrainConfig from a stage's options (stage i trains with seed + i unless it sets its own)."""
    values = {k: getattr(options, k) for k in TrainConfig.model_fields}
    if "seed" not in options.model_fields_set:
        values["seed"] = seed
    return TrainConfig(**values)


def _fit(state: RunState, config: TrainConfig, callbacks: list[Any]) -> dict[str, Any]:
    if config.epochs == 0:
        return {"epochs": 0}
    result = fit(state.model, state.splits, config, progress=state.progress, callbacks=callbacks)
    return {"epochs": config.epochs, "history": list(result.history), "val": asdict(result.val),
            "wall_time_s": result.wall_time_s}


@STAGES.register("train")
def train(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``fit(model, data, TrainConfig(**options))``."""
    return _fit(state, _train_config(options, seed), [])


@STAGES.register("finetune")
def finetune(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``fit`` with an optional :class:`~prunekit.recover.Distiller` from the original model."""
    return _fit(state, _train_config(options, seed), _distillers(state, options))


def _distillers(state: RunState, options: BaseModel) -> list[Distiller]:
    """A :class:`~prunekit.recover.Distiller` from the original model if the stage sets ``distill``."""
    distill = getattr(options, "distill", None)
    return [] if distill is None else [Distiller(state.original, temperature=distill.temperature,
                                                 alpha=distill.alpha)]


@STAGES.register("distill")
def distill(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``fit`` with distillation (temperature, alpha) from the original model."""
    teacher = Distiller(state.original, temperature=options.temperature, alpha=options.alpha)  # type: ignore[attr-defined]
    return _fit(state, _train_config(options, seed), [teacher])


def _relative(target: Any, state: RunState, start_model: nn.Module, removed_before: float) -> dict[str, float]:
    """A schedule step's target (relative to the stage's input model) as one for the current model."""
    from prunekit.structured.target import measure

    kind, value = target.kind, target.value
    if kind == "ratio":
        return {"ratio": max(0.0, 1.0 - (1.0 - value) / max(1.0 - removed_before, 1e-9))}
    if kind in ("macs", "params"):
        base = measure(start_model, state.example(), kind)
        now = measure(state.model, state.example(), kind)
        return {kind: min(1.0, value * base / max(now, 1e-9))}
    raise ConfigError(f"a prune schedule step's target must be ratio, macs or params; got {kind}. "
                      f"Use a single prune stage with target: {{latency: ...}} instead.")


@STAGES.register("prune")
def prune(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``StructuredPruner(...).fit_transform``; a ``schedule`` prunes step by step with fine-tuning."""
    from prunekit.pipeline import _prune_model
    from prunekit.structured import StructuredPruner

    o = options
    batches = state.calibration(o.calibration_batches)  # type: ignore[attr-defined]
    common = {"scope": o.scope, "round_to": o.round_to, "ignore": tuple(o.ignore), "seed": seed,  # type: ignore[attr-defined]
              "options": o.options}  # type: ignore[attr-defined]
    finetune_cfg = TrainConfig(epochs=o.finetune_epochs, seed=seed)  # type: ignore[attr-defined]
    if o.schedule is None:  # type: ignore[attr-defined]
        pruner = StructuredPruner(o.target.to_dict(), importance=o.importance, steps=o.steps, **common)  # type: ignore[attr-defined]
        state.model, plan, achieved, steps = _prune_model(state.model, state.splits, pruner, finetune_cfg,
                                                          state.progress)
        state.plans.append(plan.to_dict())
        return {"achieved": achieved, "steps": steps}
    start, records, removed = copy.deepcopy(state.model), [], 0.0
    for i, step in enumerate(o.schedule):  # type: ignore[attr-defined]
        target = _relative(step.target, state, start, removed)
        pruner = StructuredPruner(target, importance=step.importance or o.importance, **common)  # type: ignore[attr-defined]
        state.model = pruner.fit_transform(state.model, state.example(), batches)
        state.plans.append(pruner.plan_.to_dict())
        if step.target.kind == "ratio":
            removed = step.target.value
        tuned = _fit(state, TrainConfig(epochs=step.finetune_epochs, seed=seed + i), [])
        records.append({"step": i, "target": step.target.to_dict(), "importance": step.importance or o.importance,  # type: ignore[attr-defined]
                        "achieved": dict(pruner.achieved_), "finetune": tuned})
    return {"steps": records}


@STAGES.register("gates")
def gates(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """Train :class:`~prunekit.gates.ChannelGates` with the model, then ``harden()`` to a smaller model."""
    from prunekit.gates import ChannelGates

    o = options
    gated = ChannelGates(o.target,  # type: ignore[attr-defined]
                         warmup_steps=o.warmup_steps, init_log_alpha=o.init_log_alpha,  # type: ignore[attr-defined]
                         ignore=tuple(o.ignore), round_to=o.round_to,  # type: ignore[attr-defined]
                         lr=o.gate_lr, init_importance=o.init_importance).fit(state.model, state.example())  # type: ignore[attr-defined]
    try:
        trained = _fit(state, _train_config(options, seed), [gated, *_distillers(state, options)])
    finally:
        gated.detach()
    hardened = gated.harden()
    state.model = hardened.model
    state.plans.append(hardened.plan.to_dict())
    return {"train": trained, "achieved": hardened.achieved, "open_gates": hardened.open_gates,
            "skipped_groups": gated.skipped_}


@STAGES.register("sparsify")
def sparsify(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``prunekit.sparsity.sparsify_model``: masks or calibration, fine-tuning under the zeros."""
    from prunekit.sparsity.pipeline import sparsify_model

    o = options
    state.model, rows, info = sparsify_model(
        state.model, state.splits, method=o.method, sparsity=o.sparsity, pattern=o.pattern,  # type: ignore[attr-defined]
        scope=o.scope, schedule=o.schedule, ignore=tuple(o.ignore), ramp=o.ramp, updates=o.updates,  # type: ignore[attr-defined]
        calibration_batches=o.calibration_batches, finetune=_train_config(options, seed),  # type: ignore[attr-defined]
        progress=state.progress)
    return {"achieved_sparsity": info["achieved_sparsity"], "target": info["sparsity"],
            "finetune": info["finetune"], "layers": [asdict(r) for r in rows]}


@STAGES.register("decompose")
def decompose_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``prunekit.decompose.decompose``: factorised layers chosen by rank, energy or a MACs target."""
    from prunekit.decompose import decompose

    o = options
    if state.factorised:
        raise ConfigError("a recipe can factorise its model once: a second decompose stage would factorise "
                          "already factorised layers. Merge the two stages into one.")
    rank = tuple(o.rank) if isinstance(o.rank, list) else o.rank  # type: ignore[attr-defined]
    result = decompose(state.model, example_inputs=state.example(), method=o.method, rank=rank,  # type: ignore[attr-defined]
                       energy=o.energy, target=o.target, include=o.include,  # type: ignore[attr-defined]
                       ignore=tuple(o.ignore), options=o.options,  # type: ignore[attr-defined]
                       calibration=state.calibration(o.calibration_batches), progress=state.progress)  # type: ignore[attr-defined]
    if result.layers:
        state.factorised_from, state.factorised = state.model, list(result.layers)
    state.model = result.model
    return result.to_dict()


@STAGES.register("evaluate")
def evaluate_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """Accuracy and loss on one split (the profile after every stage adds params, MACs, size)."""
    from prunekit.measure import evaluate

    split = getattr(state.splits, options.split)  # type: ignore[attr-defined]
    return {"split": options.split, "metrics": asdict(evaluate(state.model, split))}  # type: ignore[attr-defined]


@STAGES.register("export")
def export(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """Weights + layout record (``prunekit.recipes.load_result`` / ``prunekit.load``) and ONNX."""
    from prunekit.measure import export_onnx

    folder = state.out / "export"
    files = {"model": str(state.save(folder))}
    if options.onnx:  # type: ignore[attr-defined]
        files["onnx"] = str(export_onnx(state.model.eval(), state.example(), folder / "model.onnx"))
    return {"files": files}
