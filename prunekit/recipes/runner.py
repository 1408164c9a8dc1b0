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
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prunekit._seed import seeded
from prunekit.errors import ConfigError, OutputError
from prunekit.io import load_json, read_manifest, save_json
from prunekit.recipes.checkpoint import load_state
from prunekit.recipes.parse import load_recipe, parse_recipe
from prunekit.recipes.schema import Recipe, stage_kind, stage_options
from prunekit.recipes.stages import STAGE_OUTPUTS, STAGES, TRAINING_KINDS, RunState, searched_after, training_config

__all__ = ["STATE_FILE", "run_recipe"]

STATE_FILE = "state.json"
CHECKPOINTS = "checkpoints"  # NOTE: OUT/checkpoints/stage-NN-KIND/, one saved folder per completed stage
_CHECKPOINT_NAME = re.compile(r"stage-\d{2,}-[a-z]+")
COMPRESSING = frozenset({"prune", "gates", "sparsify", "decompose"})


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


def _check_fits(recipe: Recipe, state: RunState) -> None:
    """Refuse, before any stage trains, a stage whose importance needs labels the data lacks."""
    from prunekit.workflows.prune import check_fits as prune_fits
    from prunekit.workflows.sparsify import check_fits as sparsify_fits

    for stage in recipe.stages:
        kind, o = stage_kind(stage), stage_options(stage)
        if kind == "prune":
            for name in {o.importance, *(s.importance for s in o.schedule or () if s.importance)}:  # type: ignore[attr-defined]
                prune_fits(name, state.splits, state.task)
        elif kind == "sparsify":
            sparsify_fits(state.splits, state.task, importance=o.importance, method=o.method,  # type: ignore[attr-defined]
                          schedule=o.schedule)  # type: ignore[attr-defined]


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
               max_eval_batches: int | None = None) -> dict[str, Any]:
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
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir or recipe.out or "runs/recipe")
    plain = recipe.model_dump(mode="json")
    kinds = [stage_kind(stage) for stage in recipe.stages]
    teacher_at = _teacher_stage(kinds)
    state, first, results = _start(recipe, out, plain, kinds, resume=resume, progress=progress, device=device,
                                   max_eval_batches=max_eval_batches)
    _check_fits(recipe, state)
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
    if last == len(recipe.stages) and last > first:
        # NOTE: the finished model also sits where every command puts its result: OUT/model/.
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
    if resume:
        first, results = _resume_point(out, plain)
        if first > 0:
            checkpoint = _checkpoint_dir(out, first - 1, kinds[first - 1])
            net, factorised = load_state(checkpoint)
            # NOTE: the plans applied so far stay in every later manifest, as in a run never stopped.
            plans = [t["plan"] for t in read_manifest(checkpoint).of_kind("prune")]
        if 0 <= teacher_at < first:
            original = load_state(_checkpoint_dir(out, teacher_at, kinds[teacher_at]))[0].eval()
    state = RunState(model=net, splits=splits, original=original, architecture=architecture,
                     seed=recipe.seed, out=out, progress=progress, plans=plans,
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
