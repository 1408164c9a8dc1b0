"""Run a recipe's stages in order: a checkpoint after each, ``resume`` from the last completed one.

Layout of ``out``::

    state.json                 {"completed": k, "recipe": <the validated recipe>}
    checkpoints/stage-01-train/   model.safetensors + manifest.json (prunekit.load reads it)
    model/                        the finished model, in the same format (``--model OUT`` reads it)
    results.json               per stage: options, summary, profile (params, MACs, size, task metric)

Stage ``i`` runs with seed ``recipe.seed + i`` and the model is rebuilt from the checkpoint on
resume, so a run stopped after any stage and resumed ends with the same weights as one that was
never stopped.

The distillation teacher (``RunState.original``) is the model as it stands before the first
compressing stage (prune, gates, sparsify, decompose): after a leading ``train`` or ``finetune``,
the trained model, not the untrained one the recipe started from. On resume it is reloaded from
that stage's checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prunekit._seed import seeded
from prunekit.errors import ConfigError, OutputError, PrunekitError
from prunekit.io import load_json, read_manifest, save_json
from prunekit.recipes.checkpoint import load_state
from prunekit.recipes.loader import Lines, load_yaml, where
from prunekit.recipes.parse import _dotted, load_recipe, parse_recipe
from prunekit.recipes.schema import Recipe, stage_kind, stage_options
from prunekit.recipes.stages import STAGE_OUTPUTS, STAGES, TRAINING_KINDS, RunState, searched_after, training_config

__all__ = ["STATE_FILE", "check_output", "run_recipe"]

STATE_FILE = "state.json"
CHECKPOINTS = "checkpoints"  # NOTE: OUT/checkpoints/stage-NN-KIND/, one saved folder per completed stage
_CHECKPOINT_NAME = re.compile(r"stage-\d{2,}-[a-z]+")
COMPRESSING = frozenset({"prune", "gates", "sparsify", "decompose"})
Naming = Callable[[str], contextlib.AbstractContextManager[None]]  # NOTE: a stage's field -> _naming it


def _teacher_stage(kinds: list[str]) -> int:
    """Index of the stage after which the model is the distillation teacher (-1: the model the
    recipe builds): the last stage before the first compressing one."""
    return next((i for i, kind in enumerate(kinds) if kind in COMPRESSING), len(kinds)) - 1


def _build(recipe: Recipe) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The model the recipe's spec names, sized for its data, the data, and the dense source record
    (``{"model": spec, **kwargs}``) its checkpoints name."""
    from prunekit import models
    from prunekit.workflows.common import build, hf_folder, is_saved_folder, sizes_of, source_architecture, task_of

    spec = recipe.model.name
    net, splits = build(spec, recipe.data.name, data_dir=recipe.data.data_dir, weights=recipe.model.weights,
                        task=recipe.task, seed=recipe.seed, image_size=recipe.data.image_size)
    if is_saved_folder(spec):
        return net, splits, source_architecture(spec, splits)
    # NOTE: only an hf: spec builds a different class per task; other specs ignore it.
    task = task_of(splits, recipe.task).name if hf_folder(spec) else None
    source = models.source_of(spec, task=task, **sizes_of(splits))
    return net, splits, {"model": source["spec"], **source["kwargs"]}


def _earlier_transforms(spec: str) -> list[dict[str, Any]]:
    """What a saved folder the recipe starts from had applied (its manifest's transforms, less how
    its weights were stored): every save of the run keeps them first, as ``prunekit prune --model
    OUT`` does; other specs had none."""
    from prunekit.workflows.common import is_saved_folder, model_folder

    if not is_saved_folder(spec):
        return []
    return [dict(t) for t in read_manifest(Path(model_folder(spec))).transforms if t["kind"] != "sparse"]


def _inputs(recipe: Recipe) -> list[tuple[str, Path]]:
    """The files and folders the recipe reads its model from (as given, resolved): a path spec and the
    saved folder it stands for, a ``file.py:factory`` spec's file, the weights file."""
    from prunekit.workflows.common import model_folder

    spec, weights = recipe.model.name, recipe.model.weights
    head, sep, _ = spec.rpartition(":")
    given = [spec, model_folder(spec), *([head] if sep and head.endswith(".py") else []),
             *([weights] if weights else [])]
    return [(text, Path(text).expanduser().resolve()) for text in given if Path(text).expanduser().exists()]


def check_output(recipe: Recipe, out: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an ``out`` whose ``model/`` (replaced by the finished model) is or
    holds what the recipe reads its model from: the run would destroy its own input."""
    final = Path(out) / "model"
    resolved = final.expanduser().resolve()
    for given, path in _inputs(recipe):
        if path == resolved or resolved in path.parents:
            raise OutputError(f"run: the finished model goes to '{final}', which would replace the recipe's "
                              f"model input '{given}'. Pick another --out (or out: in the recipe); nothing was run.")


def _profile(state: RunState, name: str, latency: bool) -> dict[str, Any]:
    from prunekit.measure import profile
    from prunekit.measure.latency import DEFAULT_BACKENDS

    backends = DEFAULT_BACKENDS if latency else ()
    from prunekit.workflows.common import eval_data

    return profile(state.model, state.example(1), name=name, backends=backends, dataset=eval_data(state.splits),
                   task=state.task, max_batches=state.max_eval_batches).to_dict()


def _reseed(data: Any, seed: int) -> None:
    """Restart the shuffling of a training DataLoader that owns a generator (text Loaders) at ``seed``,
    so stage i sees the same batches in a run resumed before it as in one never stopped."""
    generator = getattr(getattr(data, "train", None), "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


@contextlib.contextmanager
def _naming(source: str, lines: Lines, loc: tuple[Any, ...]) -> Iterator[None]:
    """Re-raise a PrunekitError of the body naming the recipe file, line and field ``loc``, as every
    recipe error does."""
    try:
        yield
    except PrunekitError as exc:
        line = where(lines, loc)
        at = f"{source}:{line}" if line else source
        raise ConfigError(f"{at}: {_dotted(loc)}: {' '.join(str(exc).split())}") from None


def _check_fits(recipe: Recipe, state: RunState, first: int, source: str, lines: Lines) -> None:
    """Refuse, before any stage trains, what the data or the built model cannot take: an importance
    needing labels the data lacks, module names the model lacks, layers a sparsify pattern cannot
    fit. Each error names the recipe file, line and field."""
    from prunekit.workflows.prune import check_fits as prune_fits
    from prunekit.workflows.sparsify import check_fits as sparsify_fits

    for index in range(first, len(recipe.stages)):
        stage = recipe.stages[index]
        kind, o, loc = stage_kind(stage), stage_options(stage), ("stages", index, stage_kind(stage))
        before = [stage_kind(s) for s in recipe.stages[first:index]]

        def at(field: str, loc: tuple[Any, ...] = loc) -> contextlib.AbstractContextManager[None]:
            return _naming(source, lines, (*loc, field))

        if kind == "prune":
            for name in {o.importance, *(s.importance for s in o.schedule or () if s.importance)}:  # type: ignore[attr-defined]
                with at("importance"):
                    prune_fits(name, state.splits, state.task)
            if o.allocation is None:  # type: ignore[attr-defined]
                _check_prune_names(state, o, at)
        elif kind == "sparsify":
            with at("importance"):
                sparsify_fits(state.splits, state.task, importance=o.importance, method=o.method,  # type: ignore[attr-defined]
                              schedule=o.schedule)  # type: ignore[attr-defined]
            if "decompose" not in before:  # NOTE: factorising renames and replaces the layers
                _check_sparsify_layers(state, o, before, at)


def _check_prune_names(state: RunState, o: Any, at: Naming) -> None:
    """A prune stage's ``ignore`` and ``options`` name modules the model has (pruning renames none)."""
    from prunekit.structured import StructuredPruner
    from prunekit.workflows.prune import precheck

    common = {"scope": o.scope, "round_to": o.round_to, "ignore": tuple(o.ignore)}
    if o.ignore:
        with at("ignore"):
            precheck(state.model, state.example(), StructuredPruner({"ratio": 0.0}, **common))
    if o.options:
        with at("options"):
            precheck(state.model, state.example(), StructuredPruner({"ratio": 0.0}, **common, options=o.options))


def _check_sparsify_layers(state: RunState, o: Any, before: list[str], at: Naming) -> None:
    """A sparsify stage's ``ignore`` names modules the model has, and each layer it sparsifies fits its
    pattern: all of them, or after a structural stage the layers whose shape that stage cannot change
    where the pattern reads it (none after a search, whose allocation may remove blocks)."""
    from prunekit.graph import DependencyGraph
    from prunekit.sparsity import Pattern, select_targets
    from prunekit.sparsity.patterns import check_layer

    example = state.example()
    with at("ignore"):
        targets = select_targets(state.model, None, tuple(o.ignore), example)
    pattern = Pattern.parse(o.pattern)
    if pattern.kind == "unstructured" or "search" in before:
        return
    resizable: set[str] = set()
    if any(kind in COMPRESSING for kind in before):
        lowest = 0 if pattern.kind == "block" else 1  # NOTE: N:M reads the input axes, blocks both
        groups = DependencyGraph.trace(state.model, example).groups
        resizable = {m.tensor for g in groups if g.prunable for m in g.members if m.axis >= lowest}
    for name in targets:
        if name not in resizable:
            with at("pattern"):
                check_layer(name, tuple(state.model.get_parameter(name).shape), pattern)


def _checkpoint_dir(out: Path, index: int, kind: str) -> Path:
    return out / CHECKPOINTS / f"stage-{index + 1:02d}-{kind}"


def _remove_earlier_run(out: Path, recipe: Recipe) -> None:
    """Remove what an earlier recipe run left in ``out`` beside the records ``--overwrite`` removes
    (``prunekit.workflows.outputs``): its stage checkpoints and the ``export/`` and ``quantize/``
    folders its stages wrote, so that none is read as this run's. Other files stay: the user's own,
    ``model/`` (replaced at the end) and any folder holding this recipe's model or weights."""
    inputs = [Path(p).expanduser().absolute() for p in (recipe.model.name, recipe.model.weights) if p]
    checkpoints = out / CHECKPOINTS
    stale = [p for p in sorted(checkpoints.iterdir()) if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()
             ] if checkpoints.is_dir() and not checkpoints.is_symlink() else []
    stale += [out / name for name, mark in STAGE_OUTPUTS.items() if (out / name / mark).is_file()]
    for folder in stale:
        if folder.is_symlink() or any(folder.absolute() in (p, *p.parents) for p in inputs):
            continue  # NOTE: a link is not ours to follow; a folder this run reads from must stay
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise OutputError(f"run: --overwrite could not remove the earlier run's '{folder}' ({exc.strerror}). "
                              f"Remove it yourself or pick a new folder with --out.") from None
    with contextlib.suppress(OSError):
        checkpoints.rmdir()  # NOTE: only where nothing else is left in it


def run_recipe(recipe: Recipe | str | os.PathLike[str], *, out_dir: str | os.PathLike[str] | None = None,
               resume: bool = False, overwrite: bool = False, progress: bool = False,
               stop_after: int | None = None, device: str | None = None,
               max_eval_batches: int | None = None, source: str | os.PathLike[str] | None = None
               ) -> dict[str, Any]:
    """Execute ``recipe`` (a :class:`Recipe` or a YAML path); returns the results dict.

    Args:
        out_dir: where checkpoints and results go (default: the recipe's ``out``, else ``runs/recipe``).
        resume: continue after the last completed stage recorded in ``out_dir/state.json``.
        overwrite: (without ``resume``) first remove an earlier run's stage checkpoints and the
            ``export/`` and ``quantize/`` folders its stages wrote (the CLI's ``--overwrite``).
        stop_after: stop after this many stages in total (for tests and partial runs; resumable).
        device: where training stages run (cpu, cuda, ...); the rest runs on the CPU.
        max_eval_batches: evaluate validation and test accuracy (per epoch, per stage and in
            ``evaluate`` stages) on only the first this many batches of 512.
        source: the YAML file a :class:`Recipe` was read from, whose lines the checks made once the
            model is built name (a path ``recipe`` is its own).
    """
    if not isinstance(recipe, Recipe):
        source = source or recipe
        recipe = load_recipe(recipe)
    out = Path(out_dir or recipe.out or "runs/recipe")
    check_output(recipe, out)
    plain = recipe.model_dump(mode="json")
    kinds = [stage_kind(stage) for stage in recipe.stages]
    teacher_at = _teacher_stage(kinds)
    state, first, results = _start(recipe, out, plain, kinds, resume=resume, progress=progress, device=device,
                                   max_eval_batches=max_eval_batches)
    _check_fits(recipe, state, first, str(source) if source is not None else "recipe",
                load_yaml(source)[1] if source is not None else {})
    if overwrite and not resume:
        _remove_earlier_run(out, recipe)
    if first == 0:
        results["initial"] = state.profile = _profile(state, recipe.model.name, recipe.profile_latency)
    last = len(recipe.stages) if stop_after is None else min(stop_after, len(recipe.stages))
    bar = tqdm(range(first, last), desc="recipe", file=sys.stderr, disable=not progress,
               initial=first, total=len(recipe.stages))
    for index in bar:
        stage = recipe.stages[index]
        kind = stage_kind(stage)
        bar.set_postfix_str(kind)
        started = time.perf_counter()
        _reseed(state.splits, recipe.seed + index)
        with seeded(recipe.seed + index):  # NOTE: the caller's RNG state is restored after the stage.
            summary = STAGES.get(kind).factory(state, stage_options(stage), recipe.seed + index)
        record = {"index": index, "kind": kind, "options": stage_options(stage).model_dump(mode="json"),
                  "summary": summary, "seconds": time.perf_counter() - started,
                  "profile": _profile(state, f"after {kind}", recipe.profile_latency)}
        results["stages"].append(record)
        state.profile = record["profile"]
        if index == teacher_at:
            state.original = copy.deepcopy(state.model).eval()
        state.save(_checkpoint_dir(out, index, kind))
        save_json(results, out / "results.json")
        save_json({"completed": index + 1, "recipe": plain}, out / STATE_FILE)
    bar.close()
    if last == len(recipe.stages):
        # NOTE: the finished model also sits where every command puts its result: OUT/model/ (written
        # again by a resume after the last stage: a run stopped before it has none, or a partial one).
        state.save(out / "model")
        results["files"] = {"model": str(out / "model")}
        save_json(results, out / "results.json")
        results["report"] = _report(state, out, kinds, first)
    results["completed"] = last
    results["results_file"] = str(out / "results.json")  # NOTE: after the saves: not a recorded result
    results["model"] = state.model
    return results


def _report(state: RunState, out: Path, kinds: list[str], first: int) -> str | None:
    """The run's evidence (the model before the first compressing stage against the finished one,
    with that stage's plan when it prunes and ran in this process) and its report."""
    from prunekit.structured import Plan
    from prunekit.workflows.common import evidence_of, write_run_report

    start = _teacher_stage(kinds) + 1
    parts: dict[str, Any] = {"before_label": "the model before the first compressing stage"}
    # NOTE: the first compressing stage's plan is state.plans[0] (none came before it) and it is
    # shown only when that stage ran in this process, with the example it was traced on.
    if state.plans and start < len(kinds) and kinds[start] in ("prune", "gates") and first <= start:
        parts.update(plan=Plan.from_dict(state.plans[0]), example_inputs=state.example())
    return write_run_report(out, evidence_of(state.original, state.model, state.splits, state.task, out, **parts))


def _start(recipe: Recipe, out: Path, plain: dict[str, Any], kinds: list[str], *, resume: bool,
           progress: bool, device: str | None, max_eval_batches: int | None
           ) -> tuple[RunState, int, dict[str, Any]]:
    """The run's state before its first stage to run, that stage's index and the results so far:
    the built model, or on ``resume`` the last checkpoint (and the teacher and training options
    the stages before it left)."""
    from prunekit.workflows import Measure
    from prunekit.workflows.common import capped_splits, made_for, split_seed_of, tokenizer_of

    net, splits, architecture = _build(recipe)
    splits = capped_splits(splits, Measure(max_eval_batches=max_eval_batches))
    original = copy.deepcopy(net).eval()
    results: dict[str, Any] = {"command": "run", "recipe": plain, "stages": []}
    first = 0
    factorised: list[Any] = []
    plans: list[dict[str, Any]] = []
    teacher_at = _teacher_stage(kinds)
    earlier = _earlier_transforms(recipe.model.name)
    if resume:
        first, results = _resume_point(out, plain)
        if first > 0:
            checkpoint = _checkpoint_dir(out, first - 1, kinds[first - 1])
            net, factorised = load_state(checkpoint)
            # NOTE: the plans applied so far stay in every later manifest, as in a run never stopped;
            # the checkpoint lists the input folder's transforms first, which state.earlier holds.
            own = read_manifest(checkpoint).transforms[len(earlier):]
            plans = [t["plan"] for t in own if t["kind"] == "prune"]
            factorised = factorised[sum(len(t["layers"]) for t in earlier if t["kind"] == "factorise"):]
        if 0 <= teacher_at < first:
            original = load_state(_checkpoint_dir(out, teacher_at, kinds[teacher_at]))[0].eval()
    state = RunState(model=net, splits=splits, original=original, architecture=architecture,
                     seed=recipe.seed, out=out, progress=progress, plans=plans, earlier=earlier,
                     factorised=factorised, device=device, task=recipe.task,
                     max_eval_batches=max_eval_batches, tokenizer=tokenizer_of(recipe.model.name),
                     data=recipe.data, split_seed=split_seed_of(made_for(recipe.model.name), recipe.model.name),
                     profile=results["stages"][first - 1]["profile"] if first > 0 else results.get("initial"))
    for index in range(first):  # NOTE: on resume, prune steps fine-tune as they would have.
        if kinds[index] in TRAINING_KINDS:
            state.train_config = training_config(stage_options(recipe.stages[index]), recipe.seed + index)
        if kinds[index] == "sparsify":  # NOTE: later training keeps these zeros, resumed or not.
            layers = results["stages"][index]["summary"].get("layers", [])
            state.sparse = sorted({*state.sparse, *(layer["name"] for layer in layers)})
        state.searched = _searched_after(kinds[index], recipe.stages[index], results["stages"][index], state.searched)
    return state, first, results


def _searched_after(kind: str, stage: Any, record: dict[str, Any],
                    searched: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a completed stage leaves for a later ``prune``/``decompose: {allocation: search}`` on
    resume: a search stage its plan, removed blocks and ranks (from its summary, so the search is not
    run again); a stage that applied part of them what is left (:func:`~prunekit.recipes.stages.searched_after`)."""
    if kind == "search":
        summary = record["summary"]
        return {"plan": summary["plan"], "blocks": list(summary["removed_blocks"]), "ranks": summary.get("ranks")}
    return searched_after(kind, stage_options(stage), searched)


def _resume_point(out: Path, plain: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """How many stages ``out`` completed for this same recipe, and the results so far."""
    state_file = out / STATE_FILE
    if not state_file.is_file():
        return 0, {"command": "run", "recipe": plain, "stages": []}
    saved = load_json(state_file)
    if saved.get("recipe") != plain:
        raise ConfigError(f"resume: '{out}' holds a run of a different recipe (its {STATE_FILE} differs). "
                          f"Use a new --out folder, or the recipe that started this run.")
    results = load_json(out / "results.json")
    completed = int(saved["completed"])
    results["stages"] = results["stages"][:completed]
    return completed, results


def validate(path: str | os.PathLike[str]) -> Recipe:
    """Parse and check a recipe without running anything (``prunekit run --check``)."""
    return load_recipe(path)


__all__ += ["parse_recipe", "validate"]
