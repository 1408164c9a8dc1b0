"""What each recipe stage does: one workflow call each, with the recipe's option names.

Every function takes the run's :class:`RunState` and the stage's validated options, may replace
``state.model`` (pruning returns a new, smaller module), and returns a JSON-able summary. The
training, pruning, sparsifying and factorising steps are :mod:`prunekit.workflows`' own, the same
the CLI commands run.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from torch import nn

from prunekit.config import parse_config
from prunekit.errors import ConfigError
from prunekit.recover import Distiller, TrainConfig
from prunekit.registry import Registry
from prunekit.workflows.common import (
    calibration_batches,
    copy_tokenizer,
    data_record,
    eval_data,
    example_of,
    task_of,
    with_teacher,
)
from prunekit.workflows.train import fine_tune

if TYPE_CHECKING:
    from prunekit.recipes.schema import DataSpec

__all__ = ["STAGES", "STAGE_OUTPUTS", "TRAINING_KINDS", "RunState", "step_config", "training_config",
           "searched_after"]


@dataclass
class RunState:
    """What stages share: the current model, the data (image DataSplits or Loaders) and its task,
    the original model (distillation teacher)."""

    model: nn.Module
    splits: Any
    original: nn.Module
    architecture: dict[str, Any]
    seed: int
    out: Path
    progress: bool = False
    plans: list[dict[str, Any]] = field(default_factory=list)
    factorised: list[Any] = field(default_factory=list)  # its LayerRecords
    train_config: TrainConfig | None = None  # the last train/finetune stage's options
    device: str | None = None  # where training runs (None: where the model is)
    task: Any = None  # the Task every stage scores and trains with (None: what the data fits)
    max_eval_batches: int | None = None  # cap on evaluating data other than image DataSplits
    tokenizer: str | None = None  # the folder of the model's tokenizer, copied beside each saved model
    searched: dict[str, Any] | None = None  # the last search stage's plan, removed blocks and ranks not yet applied
    sparse: list[str] = field(default_factory=list)  # weights a sparsify stage zeroed: training keeps their zeros
    data: DataSpec | None = None  # the recipe's DataSpec (name, data_dir): what a search worker loads the data from
    # NOTE: stages that change the model save nothing, so this is the profile of the model every save writes.
    profile: dict[str, Any] | None = None  # the last measured profile of the model as it stands (the runner's)
    split_seed: int = 0  # the seed the data was split with (a saved folder's own), recorded in every checkpoint
    earlier: list[dict[str, Any]] = field(default_factory=list)  # the transforms of the saved folder it started from

    def __post_init__(self) -> None:
        self.task = with_teacher(task_of(self.splits, self.task), self.model)

    def save(self, folder: Path, extra: Sequence[Mapping[str, Any]] = ()) -> Path:
        """A checkpoint of the current model (see :mod:`prunekit.recipes.checkpoint`; ``extra``:
        further transform records), with its measured profile as the manifest's metrics and the
        model's tokenizer beside it when it has one."""
        from prunekit.io import record_metrics
        from prunekit.recipes.checkpoint import save_model

        # NOTE: the transforms in the order applied: the input folder's, then this run's plans and
        # factorised layers (the order save_model keeps), then ``extra``.
        own: list[Mapping[str, Any]] = [{"kind": "prune", "plan": plan} for plan in self.plans]
        if self.factorised:
            own.append({"kind": "factorise", "layers": list(self.factorised)})
        saved = save_model(self.model, self.architecture, folder, extra=[*self.earlier, *own, *extra],
                           data=data_record(self.splits, self.split_seed))
        if self.profile is not None:
            record_metrics(saved, {"profile": self.profile})
        copy_tokenizer(self.tokenizer, saved)
        return saved

    def example(self, batch: int = 1) -> Any:
        """The data's first ``batch`` inputs (what tracing and profiling run the model on)."""
        return example_of(self.splits, self.task, batch)

    def calibration(self, count: int, size: int = 64) -> list[Any]:
        """The first ``count`` training batches: (inputs, labels) of image data, model inputs of other data."""
        return calibration_batches(self.splits, count, size, task=self.task)

    def eval_split(self, split: str) -> Any:
        """The ``split`` to score (``test`` of data without one: its held-out ``val``)."""
        data = getattr(self.splits, split, None)
        if data is None and split == "test":
            data = eval_data(self.splits)
        if data is None:
            raise ConfigError(f"evaluate: the data '{getattr(self.splits, 'name', '?')}' has no {split} split; "
                              f"expected one of the splits it has. Use split: val.")
        return data


STAGES: Registry[dict[str, Any]] = Registry("recipe stage", list_hint="see prunekit.recipes.schema")
SEARCH_STATE = "search-state"  # NOTE: under the run's folder: a search's resumable state, study, worker logs
EXPORT_DIR, QUANTIZE_DIR = "export", "quantize"  # NOTE: under the run's folder: what those stages write
# NOTE: each stage output folder and the file in it that marks it as one prunekit wrote
STAGE_OUTPUTS = {EXPORT_DIR: "manifest.json", QUANTIZE_DIR: "model/manifest.json"}


def training_config(options: BaseModel, seed: int) -> TrainConfig:
    """TrainConfig from a stage's options (stage i trains with seed + i unless it sets its own)."""
    values = {k: getattr(options, k) for k in TrainConfig.model_fields}
    if "seed" not in options.model_fields_set:
        values["seed"] = seed
    return TrainConfig(**values)


@contextlib.contextmanager
def holding_zeros(state: RunState) -> Iterator[None]:
    """While training, keep the zeros of the weights an earlier sparsify stage zeroed (masks on the
    weights the model still has, taken from their zeros now, so a structured prune in between is
    fine); the model holds plain zeros again afterwards."""
    from prunekit.sparsity import masks as masking

    params = dict(state.model.named_parameters())
    keep = {name: params[name].detach() != 0 for name in state.sparse if name in params}
    if keep:
        masking.attach(state.model, keep)
    try:
        yield
    finally:
        if keep:
            masking.finalize(state.model)


def tune(state: RunState, config: TrainConfig, callbacks: Sequence[Any] = ()) -> Any:
    """``fine_tune`` of the current model with the run's data, task and device, holding the zeros of
    an earlier sparsify stage (every training stage and prune step trains through this)."""
    with holding_zeros(state):
        return fine_tune(state.model, state.splits, config, progress=state.progress, callbacks=list(callbacks),
                         device=state.device, task=state.task)


def _fit(state: RunState, config: TrainConfig, callbacks: list[Any]) -> dict[str, Any]:
    if config.epochs == 0:
        return {"epochs": 0}
    return _fitted(config, tune(state, config, callbacks))


def _fitted(config: TrainConfig, result: Any) -> dict[str, Any]:
    """The summary of one fine-tuning (``result``: what ``fine_tune`` returned) with ``config``."""
    return {"epochs": config.epochs, "history": list(result.history), "val": dict(result.val),
            "wall_time_s": result.wall_time_s}


TRAINING_KINDS = ("train", "finetune", "distill")


def _training(state: RunState, options: BaseModel, seed: int) -> TrainConfig:
    """The stage's TrainConfig, remembered as the run's training options (prune steps reuse them)."""
    state.train_config = training_config(options, seed)
    return state.train_config


@STAGES.register("train")
def train(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``train(model, data, TrainConfig(**options))``."""
    return _fit(state, _training(state, options, seed), [])


@STAGES.register("finetune")
def finetune(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``fit`` with an optional :class:`~prunekit.recover.Distiller` from the original model."""
    return _fit(state, _training(state, options, seed), _distillers(state, options))


def _distillers(state: RunState, options: BaseModel) -> list[Distiller]:
    """A :class:`~prunekit.recover.Distiller` from the original model if the stage sets ``distill``."""
    distill = getattr(options, "distill", None)
    return [] if distill is None else [Distiller(state.original, temperature=distill.temperature,
                                                 alpha=distill.alpha)]


@STAGES.register("distill")
def distill(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``fit`` with distillation (temperature, alpha) from the original model."""
    teacher = Distiller(state.original, temperature=options.temperature, alpha=options.alpha)  # type: ignore[attr-defined]
    return _fit(state, _training(state, options, seed), [teacher])


def _relative(target: Any, state: RunState, start_model: nn.Module, removed_before: float) -> dict[str, float]:
    """A schedule step's target (relative to the stage's input model) as one for the current model."""
    from prunekit.structured.target import measure

    kind, value = target.kind, target.value
    if kind == "ratio":
        return {"ratio": max(0.0, 1.0 - (1.0 - value) / max(1.0 - removed_before, 1e-9))}
    if kind == "size_mb":
        return {"size_mb": value}  # NOTE: absolute, the same for every model
    if kind in ("macs", "params"):
        base = measure(start_model, state.example(), kind)
        now = measure(state.model, state.example(), kind)
        return {kind: min(1.0, value * base / max(now, 1e-9))}
    raise ConfigError(f"a prune schedule step's target must be ratio, macs, params or size_mb; got {kind}. "
                      f"Use a single prune stage with target: {{latency: ...}} instead.")


def step_config(state: RunState, options: BaseModel, epochs: int, seed: int) -> TrainConfig:
    """How a prune stage fine-tunes between and after its steps: the stage's ``finetune`` options,
    else the run's last train/finetune stage's, else TrainConfig's defaults, for ``epochs`` epochs
    with ``seed``."""
    own = getattr(options, "finetune", None)
    base = own if own is not None else (state.train_config or TrainConfig())
    values = {k: getattr(base, k) for k in TrainConfig.model_fields}
    values.update(epochs=epochs, seed=seed, warmup_epochs=min(values["warmup_epochs"], epochs))
    return parse_config(TrainConfig, values)


def _tune_model(state: RunState, model: nn.Module, config: TrainConfig) -> Any:
    """:func:`tune` of ``model`` (a prune step's new module) as the run's current model."""
    state.model = model
    return tune(state, config)


@STAGES.register("prune")
def prune(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """``StructuredPruner(...).fit_transform``; a ``schedule`` prunes step by step with fine-tuning."""
    from prunekit.structured import StructuredPruner
    from prunekit.workflows.prune import prune_model

    o = options
    if o.allocation == "search":  # type: ignore[attr-defined]
        return _apply_searched(state, o, seed)
    batches = state.calibration(o.calibration_batches)  # type: ignore[attr-defined]
    common = {"scope": o.scope, "round_to": o.round_to, "ignore": tuple(o.ignore), "seed": seed,  # type: ignore[attr-defined]
              "options": o.options}  # type: ignore[attr-defined]
    if o.max_metric_drop is not None:  # type: ignore[attr-defined]
        return _prune_within(state, o, seed, common)
    if o.schedule is None:  # type: ignore[attr-defined]
        pruner = StructuredPruner(o.target.to_dict(), importance=o.importance, steps=o.steps, **common)  # type: ignore[attr-defined]
        config = step_config(state, o, o.finetune_epochs, seed)  # type: ignore[attr-defined]
        state.model, plan, achieved, steps, tuned = prune_model(
            state.model, state.splits, pruner, finetune_epochs=o.finetune_epochs, task=state.task,  # type: ignore[attr-defined]
            tune=lambda m: _tune_model(state, m, config))
        state.plans.append(plan.to_dict())
        return {"achieved": achieved, "steps": steps, "finetune": {"epochs": 0} if tuned is None else
                _fitted(config, tuned), "finetune_config": config.model_dump()}
    start, records, removed = copy.deepcopy(state.model), [], 0.0
    for i, step in enumerate(o.schedule):  # type: ignore[attr-defined]
        target = _relative(step.target, state, start, removed)
        pruner = StructuredPruner(target, importance=step.importance or o.importance, **common)  # type: ignore[attr-defined]
        state.model = pruner.fit_transform(state.model, state.example(), batches)
        state.plans.append(pruner.plan_.to_dict())
        if step.target.kind == "ratio":
            removed = step.target.value
        config = step_config(state, o, step.finetune_epochs, seed + i)
        tuned = _fit(state, config, [])
        records.append({"step": i, "target": step.target.to_dict(), "importance": step.importance or o.importance,  # type: ignore[attr-defined]
                        "achieved": dict(pruner.achieved_), "finetune": tuned,
                        "finetune_config": config.model_dump() if step.finetune_epochs else None})
    return {"steps": records}


def _prune_within(state: RunState, o: Any, seed: int, common: dict[str, Any]) -> dict[str, Any]:
    """A prune stage under ``max_metric_drop``: the deepest of ``tries`` cuts towards the target whose
    validation metric, after ``finetune_epochs`` of fine-tuning, holds (:mod:`prunekit.workflows.metric_budget`)."""
    from prunekit.structured import StructuredPruner
    from prunekit.workflows import Measure
    from prunekit.workflows.common import selection_data, torch_scorer
    from prunekit.workflows.metric_budget import Attempt, prune_within
    from prunekit.workflows.prune import prune_model

    dense, config = state.model, step_config(state, o, o.finetune_epochs, seed)

    def attempt(target: Mapping[str, Any]) -> Attempt:
        pruner = StructuredPruner(dict(target), importance=o.importance, steps=o.steps, **common)
        model, plan, achieved, steps, tuned = prune_model(
            dense, state.splits, pruner, finetune_epochs=o.finetune_epochs, task=state.task,
            tune=lambda m: _tune_model(state, m, config))
        state.model = model
        return Attempt(pruner, model, plan, achieved, steps, None if tuned is None else _fitted(config, tuned))

    score = torch_scorer(selection_data(state.splits), state.task, Measure(max_eval_batches=state.max_eval_batches))
    found, record = prune_within(dense, o.target, max_metric_drop=o.max_metric_drop, tries=o.tries, attempt=attempt,
                                 score=lambda m: score(m)[state.task.metric],
                                 higher_is_better=state.task.higher_is_better)
    if found is None:
        warnings.warn(f"prune stage: no cut of the {o.tries} tried kept the validation {state.task.metric} within "
                      f"{o.max_metric_drop:g}; the model goes on uncut (results.json lists each try).", stacklevel=2)
        state.model = dense
        return {"metric_budget": record}
    state.model = found.model
    state.plans.append(found.plan.to_dict())
    return {"achieved": found.achieved, "steps": found.steps, "finetune": found.tuned, "metric_budget": record,
            "finetune_config": config.model_dump()}


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
        trained = _fit(state, training_config(options, seed), [gated, *_distillers(state, options)])
    finally:
        gated.detach()
    hardened = gated.harden()
    state.model = hardened.model
    state.plans.append(hardened.plan.to_dict())
    return {"train": trained, "achieved": hardened.achieved, "open_gates": hardened.open_gates,
            "skipped_groups": gated.skipped_}


@STAGES.register("sparsify")
def sparsify(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.workflows.sparsify.sparsify_model`: masks from an importance, or a calibration
    method, fine-tuning under the zeros."""
    from prunekit.workflows.sparsify import sparsify_model

    o = options
    state.model, rows, info = sparsify_model(
        state.model, state.splits, importance=o.importance, method=o.method,  # type: ignore[attr-defined]
        sparsity=o.sparsity, pattern=o.pattern, scope=o.scope, schedule=o.schedule,  # type: ignore[attr-defined]
        ignore=tuple(o.ignore), ramp=o.ramp, updates=o.updates,  # type: ignore[attr-defined]
        calibration_batches=o.calibration_batches, finetune=training_config(options, seed),  # type: ignore[attr-defined]
        progress=state.progress, device=state.device, task=state.task)
    state.sparse = sorted({*state.sparse, *(r.name for r in rows)})
    return {"achieved_sparsity": info["achieved_sparsity"], "target": info["sparsity"],
            "finetune": info["finetune"], "layers": [asdict(r) for r in rows]}


@STAGES.register("decompose")
def decompose_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.workflows.decompose.decompose_model`: factorised layers chosen by rank,
    energy or a MACs target."""
    from prunekit.workflows.decompose import decompose_model

    o = options
    if state.factorised:
        raise ConfigError("a recipe can factorise its model once: a second decompose stage would factorise "
                          "already factorised layers. Merge the two stages into one.")
    if o.allocation == "search":  # type: ignore[attr-defined]
        return _factorise_searched(state)
    result = decompose_model(state.model, state.splits, method=o.method, rank=o.rank,  # type: ignore[attr-defined]
                             energy=o.energy, target=o.target, include=o.include,  # type: ignore[attr-defined]
                             ignore=tuple(o.ignore),  # type: ignore[attr-defined]
                             options=o.options, calibration_batches=o.calibration_batches,  # type: ignore[attr-defined]
                             progress=state.progress, task=state.task)
    if result.layers:
        state.factorised = list(result.layers)
    state.model = result.model
    return result.to_dict()


@STAGES.register("evaluate")
def evaluate_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """The task's metrics on one split (the profile after every stage adds params, MACs, size)."""
    from prunekit.measure import evaluate

    data = state.eval_split(options.split)  # type: ignore[attr-defined]
    metrics = evaluate(state.model, data, task=state.task, max_batches=state.max_eval_batches)
    return {"split": options.split, "task": state.task.name, "metrics": dict(metrics)}  # type: ignore[attr-defined]


@STAGES.register("export")
def export(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """Weights + layout record (``prunekit.recipes.load_result`` / ``prunekit.load``) and ONNX."""
    from prunekit.measure import export_onnx
    from prunekit.workflows.inputs import without_cache

    folder = state.out / EXPORT_DIR
    files = {"model": str(state.save(folder))}
    if options.onnx:  # type: ignore[attr-defined]
        with without_cache(state.model):
            files["onnx"] = str(export_onnx(state.model.eval(), state.example(), folder / "model.onnx"))
    return {"files": files}


@STAGES.register("qat")
def qat_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.quantize.qat`: fine-tune under int8 fake quantisation (the weights change;
    a later ``quantize`` stage exports the int8 file)."""
    from prunekit.quantize import qat

    config = training_config(options, seed)
    fp32_epochs = options.fp32_epochs  # type: ignore[attr-defined]
    result = qat(state.model, state.example(2),
                 lambda m, callbacks: fine_tune(m, state.splits, config, progress=state.progress, device=state.device,
                                                task=state.task, callbacks=callbacks),
                 fp32_epochs=fp32_epochs)
    state.model = result.model
    tuned = result.fit_result
    return {"flow": result.flow, "note": result.note, "epochs": config.epochs, "fp32_epochs": fp32_epochs,
            "history": list(tuned.history), "val": dict(tuned.val)}


@STAGES.register("quantize")
def quantize_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.workflows.quantize.quantize_model`: ``quantize/model.onnx`` (int8) and
    ``quantize/model.fp32.onnx``, both scored by ONNX Runtime on the test split."""
    from prunekit.quantize import evaluate_onnx
    from prunekit.workflows import Measure
    from prunekit.workflows.quantize import FP32_FILE, INT8_FILE, check_backend, quantize_model

    o = options.model_dump()
    backend, compile = o.pop("backend"), o.pop("compile")
    check_backend(backend, dynamic=o["dynamic"], compile=compile, method=o["method"],
                  max_metric_drop=o["max_metric_drop"])
    folder, measure = state.out / QUANTIZE_DIR, Measure(max_eval_batches=state.max_eval_batches)
    if backend == "torch":
        return _quantize_torch(state, folder, measure, dynamic=o["dynamic"],
                               calibration_batches=o["calibration_batches"], compile=compile)
    record = quantize_model(state.model, state.splits, folder, task=state.task, measure=measure,
                            progress=state.progress, **o)
    test = state.eval_split("test")
    scores = {name: dict(evaluate_onnx(folder / file, test, task=state.task, max_batches=state.max_eval_batches))
              for name, file in (("fp32", FP32_FILE), ("int8", INT8_FILE))}
    return {"quantize": record, "test": scores,
            "files": {"onnx": str(folder / INT8_FILE), "fp32_onnx": str(folder / FP32_FILE),
                      "model": str(state.save(folder / "model"))}}


def _quantize_torch(state: RunState, folder: Path, measure: Any, *, dynamic: bool, calibration_batches: int,
                    compile: bool) -> dict[str, Any]:
    """The ``quantize`` stage with ``backend: torch``: the torchao int8 module scored on the test
    split and saved as the fp32 weights plus its record (``prunekit.load`` re-applies it)."""
    from prunekit.measure import evaluate
    from prunekit.quantize.torch_int8 import eager
    from prunekit.workflows.quantize import quantize_model_torch

    result = quantize_model_torch(state.model, state.splits, task=state.task, dynamic=dynamic,
                                  calibration_batches=calibration_batches, compile=compile, measure=measure)
    test = state.eval_split("test")
    scores = {name: dict(evaluate(net, test, task=state.task, max_batches=state.max_eval_batches))
              for name, net in (("fp32", state.model), ("int8", eager(result.model)))}
    saved = state.save(folder / "model", extra=[result.record])
    return {"quantize": result.record, "test": scores, "files": {"model": str(saved)}}


@STAGES.register("sensitivity")
def sensitivity_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.workflows.sensitivity.sensitivity_of`; writes ``sensitivity.json`` in the run folder."""
    from prunekit.io import save_json
    from prunekit.search import SENSITIVITY_FILE
    from prunekit.workflows.sensitivity import sensitivity_of

    o = options
    found = sensitivity_of(state.model, state.splits, state.task, ratios=o.ratios, importance=o.importance,  # type: ignore[attr-defined]
                           depth=o.depth, bn_batches=o.bn_batches, val_samples=o.val_samples,  # type: ignore[attr-defined]
                           ranks=o.ranks, progress=state.progress)  # type: ignore[attr-defined]
    file = save_json(found, state.out / SENSITIVITY_FILE)
    return {"file": str(file), "baseline": found["baseline"], "metric_name": found["metric_name"],
            "groups": len(found["groups"]), "blocks": len(found["blocks"]), "ranks": len(found.get("ranks", []))}


@STAGES.register("search")
def search_stage(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """:func:`prunekit.workflows.search.search_model`; writes ``pareto.json`` in the run folder and keeps
    the chosen allocation for the next ``prune: {allocation: search}`` stage. With ``workers > 1`` the
    current model is saved to ``OUT/search-state/model/`` first: each worker process rebuilds it
    (and the recipe's data) from there, since a model is never sent to a process."""
    from prunekit.search.search import write_pareto
    from prunekit.workflows.search import search_model

    o = options
    target = o.target  # type: ignore[attr-defined]
    state_dir = state.out / SEARCH_STATE
    rebuild = _worker_source(state, state_dir) if o.workers > 1 else None  # type: ignore[attr-defined]
    found = search_model(state.model, state.splits, state.task, strategy=o.strategy, budget=o.trials,  # type: ignore[attr-defined]
                         constraints={target.kind: target.value}, objectives=tuple(o.objectives),  # type: ignore[attr-defined]
                         seed=seed, levels=tuple(o.levels), round_to=o.round_to, depth=o.depth,  # type: ignore[attr-defined]
                         ranks=o.ranks, widths=o.widths,  # type: ignore[attr-defined]
                         bn_batches=o.bn_batches, val_samples=o.val_samples,  # type: ignore[attr-defined]
                         proxy_steps=o.proxy_steps, finetune_steps=o.finetune_steps,  # type: ignore[attr-defined]
                         latency_model=o.latency_model, latency_batch_size=o.timed_batch,  # type: ignore[attr-defined]
                         state_dir=state_dir,
                         storage=o.storage, workers=o.workers, rebuild=rebuild,  # type: ignore[attr-defined]
                         progress=state.progress)
    # NOTE: ranks None: none were searched (a later decompose: {allocation: search} has nothing to apply)
    state.searched = {"plan": found["plan"].to_dict(), "blocks": list(found["blocks"]),
                      "ranks": dict(found["ranks"]) if o.ranks else None}  # type: ignore[attr-defined]
    result = found["result"]
    file = write_pareto(result, state.out, found["chosen"])
    return {"pareto_file": str(file), "evaluations": result.evaluations, "best": found["best"].to_dict(),
            "front": len(result.front), "removed_blocks": list(found["blocks"]), "plan": state.searched["plan"],
            "ranks": state.searched["ranks"]}


def _worker_source(state: RunState, state_dir: Path) -> dict[str, Any]:
    """What a search worker rebuilds the run's current model, data and task from (the ``rebuild`` of
    :func:`prunekit.workflows.search.worker_objective`): the model as it stands (pruned or trained
    by earlier stages) saved to ``state_dir/model/``, and the recipe's data spec, seed and caps."""
    from prunekit.workflows import Measure

    if state.data is None:
        raise ConfigError("search: workers > 1 needs the recipe's data spec on the run state (RunState.data) so "
                          "each worker can load the data; run the recipe with prunekit.recipes.run_recipe.")
    folder = state.save(state_dir / "model")

    def absolute(path: str | None) -> str | None:
        return str(Path(path).absolute()) if path is not None and Path(path).exists() else path
    return {"model": str(folder.absolute()), "data": absolute(state.data.name),
            "data_dir": absolute(state.data.data_dir), "image_size": state.data.image_size, "weights": None,
            "task": getattr(state.task, "name", None),
            "seed": state.seed, "max_eval_batches": state.max_eval_batches,
            "eval_batch_size": Measure.eval_batch_size}


def _apply_searched(state: RunState, options: BaseModel, seed: int) -> dict[str, Any]:
    """Apply the previous search stage's plan (and block removals), then fine-tune ``finetune_epochs``."""
    from prunekit.graph import DependencyGraph
    from prunekit.structured import Plan, apply, remove_blocks

    if state.searched is None or "plan" not in state.searched:
        raise ConfigError("prune: allocation: search needs a search stage before it. Add "
                          "- search: {target: {macs: 0.25}} before this prune stage.")
    plan = Plan.from_dict(state.searched["plan"])
    example = state.example()
    graph = DependencyGraph.trace(state.model, example)
    model = apply(state.model, graph, plan, example_inputs=example)
    if state.searched["blocks"]:
        model = remove_blocks(model, state.searched["blocks"])
    state.model, state.searched = model, searched_after("prune", options, state.searched)
    state.plans.append(plan.to_dict())
    config = step_config(state, options, options.finetune_epochs, seed)  # type: ignore[attr-defined]
    return {"plan": plan.to_dict(), "finetune": _fit(state, config, [])}


def searched_after(kind: str, options: BaseModel, searched: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of a search stage's result is left after a stage of ``kind`` ran: a ``prune: {allocation:
    search}`` takes the widths and blocks (the ranks stay for a later decompose), a ``decompose:
    {allocation: search}`` the ranks (nothing is left); any other stage takes nothing."""
    if searched is None or getattr(options, "allocation", None) != "search":
        return searched
    if kind == "prune":
        return {"ranks": searched["ranks"]} if searched.get("ranks") is not None else None
    return None if kind == "decompose" else searched


def _factorise_searched(state: RunState) -> dict[str, Any]:
    """Factorise each layer as the previous search stage chose (``"method:fraction"``): the same
    factorisation its candidates were scored and priced with, after its widths were applied."""
    from prunekit.search.ranks import factorise
    from prunekit.structured import Plan

    searched = state.searched
    if searched is None or searched.get("ranks") is None:
        raise ConfigError("decompose: allocation: search needs a search stage with ranks before it; "
                          + ("got none. Add" if searched is None else "the one before searched widths only. Set")
                          + " - search: {target: {macs: 0.5}, ranks: true} before this decompose stage.")
    if "plan" in searched:
        plan = Plan.from_dict(searched["plan"])
        if plan.ratio > 0 or searched["blocks"]:
            raise ConfigError("decompose: allocation: search comes after the search's widths are applied (its ranks "
                              "are fractions of the pruned layers' ranks); got no prune stage in between. Add "
                              "- prune: {allocation: search} before this decompose stage.")
    ranks = dict(searched["ranks"])
    result = factorise(state.model, ranks, state.example())
    if result.layers:
        state.factorised = list(result.layers)
    state.model, state.searched = result.model, None
    return {**result.to_dict(), "ranks": ranks}
