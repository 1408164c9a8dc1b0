"""Optuna strategies: NSGA-II (evolutionary, Deb et al. 2002), TPE (Bergstra et al. 2011) and a
Gaussian-process sampler (Bayesian optimisation), over the same categorical space.

Every dimension is one categorical parameter; each trial is one configuration scored by the
evaluator, with the objectives (metric maximised, costs minimised) as the trial's values and the
constraint excess set on the trial (``trial.set_constraint``, feasible when <= 0). The study
lives in ``storage`` (an SQLite file under the search's state folder by default), so a killed
search resumes where it stopped: trials already completed are read back, not re-run. Samplers
are seeded and trials run one after another, so the same seed gives the same configurations.

With ``workers > 1`` the trials run in that many processes on the one stored study
(:func:`prunekit.search.study.optimize`) until it holds ``budget`` COMPLETE trials in total; each
worker builds its own evaluator from ``factory`` (a :class:`~prunekit.search.study.Factory` whose
function returns :func:`trial_objective` of that evaluator), and this process then reads the
trials back as the search's records. The order trials finish in depends on the workers, so a
parallel search is resumable but not reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError, require
from prunekit.search.evaluator import BudgetSpent, Evaluator, Record
from prunekit.search.space import Config

__all__ = ["nsga2", "tpe", "gp", "trial_objective", "PARALLEL"]

PARALLEL = ("nsga2", "tpe", "gp")  # NOTE: the strategies whose trials several workers can share


def _open_study(name: str, storage: str | None, directions: list[str], sampler: Any, *, root: Path | None) -> Any:
    """The study called ``name``: in memory without ``storage`` or ``root``; else created or resumed by
    :func:`prunekit.search.study.open_study` (SQLite ``root/study.db`` or a PostgreSQL URL, with
    heartbeats, so a killed worker's trial is retried)."""
    import optuna

    if storage is None and root is None:
        return optuna.create_study(study_name=name, directions=directions, sampler=sampler)  # type: ignore[arg-type]
    from prunekit.search.study import open_study

    if root is None:
        root = Path.cwd()  # NOTE: unused with a storage URL; open_study only puts SQLite files there
    else:
        root.mkdir(parents=True, exist_ok=True)
    return open_study(name, storage, directions, sampler, root=root)


def trial_objective(evaluator: Evaluator, objectives: Sequence[str]) -> Callable[[Any], Sequence[float]]:
    """The Optuna objective over ``evaluator``'s space: a trial's categorical choices are one
    configuration, scored by ``evaluator``; the record goes in the trial's user attributes."""
    import optuna

    space = evaluator.space

    def objective(trial: Any) -> Sequence[float]:
        config = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in space.dimensions}
        cuts = sorted(space.cuts(config))
        config.update({d.name: c for d, c in zip([d for d in space.dimensions if d.kind == "cut"], cuts)})
        if not space.valid(config):  # NOTE: two equal cut points: not a partition
            trial.set_constraint("cut_order", 1.0)
            raise optuna.TrialPruned()
        record = evaluator(config)
        trial.set_user_attr("config", record.config)
        trial.set_user_attr("values", record.values)
        trial.set_user_attr("feasible", record.feasible)
        trial.set_user_attr("fidelity", record.fidelity)
        trial.set_constraint("excess", evaluator.violation(record.values))
        return tuple(record.values[o] for o in objectives)
    return objective


def _read(study: Any, evaluator: Evaluator) -> None:
    """The study's COMPLETE trials as the evaluator's records (each configuration and fidelity once),
    remembered under the key the evaluator itself uses (``fidelity|config``), so a trial already in
    its memory (a saved state's) is neither counted again nor scored again."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "config" not in trial.user_attrs:
            continue
        # NOTE: trials stored before the fidelity was kept were scored at the evaluator's own (the
        # search's settings, checked on resume, include it)
        fidelity = int(trial.user_attrs.get("fidelity", evaluator.fidelity))
        key = f"{fidelity}|{_key(trial.user_attrs['config'])}"
        if key not in evaluator.memo:
            record = Record(trial.user_attrs["config"], trial.user_attrs["values"], trial.user_attrs["feasible"],
                            fidelity)
            evaluator.history.append(record)
            evaluator.memo[key] = record.values["metric"]
            evaluator.evaluations += 1


def _run(evaluator: Evaluator, sampler: Any, *, objectives: Sequence[str], state: dict[str, Any], save: Any,
         name: str, storage: str | None, root: Path | None, seed: int, workers: int = 1,
         factory: Any = None, progress: bool = False, start: Sequence[Config] = ()) -> None:
    import optuna

    directions = ["maximize" if d == "max" else "minimize" for d in evaluator.directions(objectives).values()]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(name, storage, directions, sampler, root=root)
        if not study.get_trials(deepcopy=False):  # NOTE: a resumed study has had them already
            for config in start:
                study.enqueue_trial(dict(config))
        _read(study, evaluator)
        limit = evaluator.budget if evaluator.budget is not None else 50
        if workers > 1:
            from prunekit.search.study import optimize

            optimize(study, factory, limit, workers=workers, seed=seed, progress=progress)
            _read(study, evaluator)
        else:
            from prunekit.search.study import quiet_interrupts

            objective = trial_objective(evaluator, objectives)
            tries = 0
            while evaluator.evaluations < limit and tries < 4 * limit:
                tries += 1
                try:
                    with quiet_interrupts():
                        study.optimize(objective, n_trials=1, catch=())
                except BudgetSpent:
                    break
        state["study"] = name
        save(state)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _key(config: dict[str, Any]) -> str:
    from prunekit.search.evaluator import key_of

    return key_of(config)


def _strategy(make: Callable[[int], Any], label: str) -> Callable[..., None]:
    def run(evaluator: Evaluator, *, seed: int, state: dict[str, Any], save: Any,
            objectives: Sequence[str] = ("metric",), storage: str | None = None, root: Path | None = None,
            study_name: str | None = None, workers: int = 1, factory: Any = None, progress: bool = False,
            start: Sequence[Config] = ()) -> None:
        require("optuna", pip_name="optuna")
        from prunekit.search.study import Factory, check_workers

        check_workers(workers, f"search ({label}): workers")
        if workers > 1 and (not isinstance(factory, Factory) or (storage is None and root is None)):
            raise ConfigError(f"search ({label}): {workers} workers need a stored study (state_dir or storage) and "
                              f"a prunekit.search.study.Factory that rebuilds the evaluator in each worker; got "
                              f"factory={factory!r}, storage={storage!r}, state_dir={root!r}. Pass both, or workers=1.")
        _run(evaluator, make(seed), objectives=objectives, state=state, save=save,
             name=study_name or f"prunekit-{label}-{seed}", storage=storage, root=root, seed=seed,
             workers=workers, factory=factory, progress=progress, start=start)
    run.__name__ = label
    run.__doc__ = f"Optuna's {label} sampler over the space (module docstring)."
    return run


def _nsga2(seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def _tpe(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)


def _gp(seed: int) -> Any:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=6)


nsga2 = _strategy(_nsga2, "nsga2")
tpe = _strategy(_tpe, "tpe")
gp = _strategy(_gp, "gp")
