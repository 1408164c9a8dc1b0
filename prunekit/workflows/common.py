"""What every workflow shares: the model and data it starts from, how it measures, where it writes.

``build`` turns a model spec and a dataset name into ``(model, DataSplits)``; ``Measure`` holds
the profiling options (latency batch sizes, threads, backends) and the evaluation cap that makes
a quick try quick; ``finish`` stamps the environment and writes ``results.json``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit._modes import modes_of, restore_modes
from prunekit import data as datasets
from prunekit._clone import clone_module
from prunekit import models
from prunekit.data import DataSplits, Loaders
from prunekit.data.text import BYTES, ByteTokenizer
from prunekit.errors import ConfigError, DataError, MissingDependencyError, PrunekitError
from prunekit.importance.stats import ModelInputs
from prunekit.io import MANIFEST_FILE, MODEL_DIR, WEIGHTS_FILE, read_manifest, save, save_json, save_weights
from prunekit.io import model_folder as io_model_folder
from prunekit.measure import Profile, evaluate, profile
from prunekit.measure.latency import DEFAULT_BACKENDS, exports_kept, exports_reused

__all__ = [
    "Measure",
    "build",
    "calibration_batches",
    "capped",
    "capped_splits",
    "check_device",
    "check_finite",
    "check_split",
    "check_fits",
    "check_model_name",
    "check_not_int8",
    "compare_models",
    "copy_tokenizer",
    "dense_weights",
    "environment",
    "finish",
    "has_weights",
    "is_rank_zero",
    "is_saved_folder",
    "load_model",
    "measure_profile",
    "source_architecture",
    "task_of",
    "with_teacher",
    "example_of",
    "eval_data",
    "sizes_of",
    "tokenizer_of",
    "block_size_for",
    "hf_folder",
    "save_result",
    "model_folder",
    "evidence_of",
    "finish_with_report",
    "wants_evidence",
    "write_run_report",
    "Staged",
    "staged",
]


@dataclass(frozen=True)
class Measure:
    """How a workflow measures a model.

    ``batch_sizes``, ``threads``, ``backends`` and ``min_time_s`` are the latency protocol of
    :func:`prunekit.measure.profile`; ``max_eval_batches`` caps every accuracy evaluation (the
    profile's, ``eval``'s and the per-epoch validation) at that many batches of
    ``eval_batch_size`` (None: the whole split).
    """

    batch_sizes: tuple[int, ...] = (1, 64)
    threads: int = 2
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    min_time_s: float = 1.0
    max_eval_batches: int | None = None
    eval_batch_size: int = 512


def is_rank_zero() -> bool:
    """True unless this is a non-zero rank of a torchrun/DDP job (only rank 0 writes and prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def environment() -> dict[str, Any]:
    """Where the numbers were measured: versions, processor and thread count."""
    return {
        "prunekit": _version(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _version() -> str:
    from prunekit.version import __version__

    return __version__


def finish(results: dict[str, Any], out_dir: str | os.PathLike[str] | None, *,
           shown_in: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Add the environment; with ``out_dir`` (rank 0) write ``results.json`` and record its path
    (in ``shown_in``, where a staged run's files end up, when given)."""
    results["environment"] = environment()
    if out_dir is not None and is_rank_zero():
        file = Path(out_dir) / "results.json"
        results["results_file"] = str(Path(shown_in or out_dir) / file.name)
        save_json(results, file)
    return results


@dataclass(frozen=True)
class Staged:
    """A run's files while it writes them: into ``folder`` (hidden in ``out``), to be moved into
    ``out`` when the run ends well (:func:`staged`)."""

    folder: Path
    out: Path

    def final(self, path: str | os.PathLike[str]) -> str:
        """Where ``path`` (in ``folder``) will be once the run's files are in ``out``."""
        return str(self.out / Path(path).relative_to(self.folder))


@contextlib.contextmanager
def staged(out_dir: str | os.PathLike[str] | None) -> Iterator[Staged | None]:
    """Write a run's files into a hidden folder of ``out_dir`` and move them in only when the block
    ends well (:func:`prunekit.workflows.outputs.staged_output`): a failed or interrupted save or
    report leaves ``out_dir`` as it was. None (write nothing) without ``out_dir`` or off rank 0."""
    if out_dir is None or not is_rank_zero():
        yield None
        return
    from prunekit.workflows.outputs import staged_output

    with staged_output(Path(out_dir)) as folder:
        yield Staged(folder, Path(out_dir))


def wants_evidence(splits: Any, task: Any, out_dir: str | os.PathLike[str] | None) -> bool:
    """Whether a run saves per-class and attribution evidence: it writes a folder and scores a
    classifier on image data."""
    return out_dir is not None and is_rank_zero() and isinstance(splits, DataSplits) \
        and getattr(task, "name", None) == "classification"


def evidence_of(before: nn.Module, after: nn.Module, splits: Any, task: Any,
                out_dir: str | os.PathLike[str] | None, **parts: Any) -> dict[str, Any] | None:
    """What the report shows beyond results.json (``prunekit.report.collect_evidence``; ``parts``:
    ``plan``, ``scores``, ``example_inputs``, ``ignore``); None when nothing is written."""
    if out_dir is None or not is_rank_zero():
        return None
    from prunekit.report import collect_evidence

    labelled = wants_evidence(splits, task, out_dir)
    return collect_evidence(before, after, dataset=eval_data(splits) if labelled else None,
                            num_classes=splits.num_classes if labelled else None, **parts)


def write_run_report(out_dir: str | os.PathLike[str] | None, evidence: dict[str, Any] | None = None) -> str | None:
    """(Rank 0, with ``out_dir``, after results.json) save ``evidence.json`` and write the run's
    ``report.html`` and ``report.md``; returns the HTML file's path. A report that cannot be drawn is
    a one-line warning saying why and how to redraw it: the run's results and model stand."""
    if out_dir is None or not is_rank_zero():
        return None
    if evidence is not None:
        save_json(evidence, Path(out_dir) / "evidence.json")
    import shlex

    from prunekit.io.files import TEMP_PREFIX

    folder = Path(out_dir)
    shown = folder.parent if folder.name.startswith(TEMP_PREFIX) else folder  # NOTE: a staged run's files move up
    redraw = f"prunekit report {shlex.quote(str(shown))}"
    try:
        from prunekit.report import write_report

        return str(write_report(out_dir))
    except MissingDependencyError as exc:  # NOTE: the run's results stand; the page needs the extra
        warnings.warn(f"{exc} (the run's results.json and evidence.json are written; run `{redraw}` once it "
                      f"is installed).", stacklevel=2)
    except Exception as exc:  # NOTE: matplotlib, a font or a disk can fail the page; never the run it reports
        why = " ".join(str(exc).split())
        why = why if len(why) <= 240 else why[:240] + "..."
        warnings.warn(f"the report could not be drawn ({type(exc).__name__}: {why}); the run's results and model "
                      f"are saved. Fix that, then run `{redraw}` to draw it.", stacklevel=2)
    return None


def finish_with_report(results: dict[str, Any], out_dir: str | os.PathLike[str] | Staged | None,
                       evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`finish`, then :func:`write_run_report` (its path as ``results["report"]``); into a
    :class:`Staged` run's folder, with the paths where its files end up."""
    folder, shown = (out_dir.folder, out_dir.out) if isinstance(out_dir, Staged) else (out_dir, None)
    results = finish(results, folder, shown_in=shown)
    if (report := write_run_report(folder, evidence)) is not None:
        results["report"] = out_dir.final(report) if isinstance(out_dir, Staged) else report
    return results


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a torch.device, failing in one line when it is unknown or absent here."""
    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: '{device}' is not a torch device. Pass cpu, cuda or cuda:1.") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{device}' was asked for, but this machine has no CUDA device. "
                          f"Pass --device cpu.")
    return target


def model_folder(spec: str) -> str:
    """``spec``, or ``spec/model`` when ``spec`` is a command's output folder: the folder an earlier
    command wrote stands for the model it saved."""
    return str(io_model_folder(spec)) if Path(spec).is_dir() else spec


def is_saved_folder(spec: str) -> bool:
    """True when ``spec`` is a folder prunekit saved (its weights come with it)."""
    return (Path(model_folder(spec)) / MANIFEST_FILE).is_file()


def has_weights(spec: str, weights: str | None) -> bool:
    """Whether the model starts trained: ``weights`` were given, ``spec`` is a saved folder, or an
    ``hf:`` folder that holds weights."""
    if weights is not None or is_saved_folder(spec):
        return True
    folder = hf_folder(spec)
    return folder is not None and any(folder.glob("*.safetensors"))


def hf_folder(spec: str) -> Path | None:
    """The local folder an ``hf:`` spec names (its config's folder), else None."""
    if not spec.startswith("hf:"):
        return None
    path = Path(spec[3:]).expanduser()
    return path if path.is_dir() else path.parent


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "tokenizer.model")


def tokenizer_of(spec: str) -> str | None:
    """The folder holding the model's tokenizer: an ``hf:`` folder, or a saved folder that kept one."""
    folder = hf_folder(spec) or Path(model_folder(spec))
    return str(folder) if any((folder / name).is_file() for name in _TOKENIZER_FILES[:2]) else None


TRAIN_BLOCK = 128  # tokens per training block of a text file, unless the model's context is shorter


def block_size_for(spec: str) -> int:
    """Tokens per block of text data: ``TRAIN_BLOCK``, capped at the model's context length (its
    config's ``n_positions`` / ``max_position_embeddings``) so no block runs past its positions."""
    folder = hf_folder(spec) or Path(model_folder(spec))
    config = folder / "config.json"
    if not config.is_file():
        return TRAIN_BLOCK
    import json

    fields = json.loads(config.read_text())
    limits = [v for k in ("n_positions", "max_position_embeddings") if isinstance(v := fields.get(k), int) and v > 0]
    return min([TRAIN_BLOCK, *limits])


def task_of(data: Any, task: Any = None) -> Any:
    """The Task to score with: ``task`` (a Task or name), else the one the data says it fits (text
    gives causal_lm), else classification."""
    from prunekit import tasks

    return tasks.resolve(task or getattr(data, "task", None) or "classification")


def with_teacher(task: Any, net: nn.Module, spec: str | None = None) -> Any:
    """``task``, with the dense model as the teacher an embedding task scores against (cosine): the
    source a saved folder was made from, else ``net`` itself (the dense model of this run)."""
    if getattr(task, "name", None) != "embedding" or getattr(task, "teacher", None) is not None:
        return task
    teacher = net
    if spec is not None and is_saved_folder(spec):
        source = read_manifest(Path(model_folder(spec))).source
        try:
            teacher = models.from_source(source) if source else net
        except PrunekitError as exc:
            raise ConfigError(f"task embedding: '{spec}' is scored by cosine to the dense model it came "
                              f"from, which cannot be built ({exc}). Keep the source model where it was "
                              f"saved from, or pass the dense model's spec as --model.") from None
    task.teacher = teacher
    return task


def example_of(data: DataSplits | Loaders, task: Any, batch_size: int = 1) -> Any:
    """The first ``batch_size`` inputs of the data: what tracing and latency run the model on."""
    if isinstance(data, DataSplits):
        return _example_split(data).tensors[0][:batch_size].clone()
    inputs = task.inputs(next(iter(data.train)))
    return tuple(x[:batch_size] for x in inputs) if len(inputs) > 1 else inputs[0][:batch_size]


def _example_split(data: DataSplits) -> TensorDataset:
    """Where example inputs come from: the test split, else (empty: tiny data, a saved dataset with
    train and validation only) the first split that holds samples."""
    return next((split for split in (data.test, data.val, data.train) if len(split)), data.test)


def eval_data(data: DataSplits | Loaders) -> Any:
    """What profiles score the metric on: the test split, else the validation split (data without
    test samples; a text file's held-out blocks); image data with neither is a one-line error."""
    if isinstance(data, DataSplits):
        if not len(data.test):
            check_split(data, "val", data.name, "scoring the model (it has no test samples)")
            return data.val
        return data.test
    return data.test if data.test is not None else data.val


_MORE_SAMPLES = ("Fix: pass more samples (a file or folder split for you holds out 10 % for val and 20 % for "
                 "test, rounded), or give that split yourself (an .npz's x_val, y_val / x_test, y_test; a saved "
                 "dataset's validation / test split).")


def check_split(splits: Any, split: str, data: str, needed_for: str, fix: str | None = None) -> None:
    """Fail in one line when ``split`` of image or array data holds no samples but ``needed_for``
    uses it (a split nothing uses may be empty); ``fix`` (default: give more samples or the split)."""
    if not isinstance(splits, DataSplits) or len(getattr(splits, split)):
        return
    sizes = ", ".join(f"{len(getattr(splits, name))} {name}" for name in ("train", "val", "test"))
    raise DataError(f"data '{data}': its {split} split is empty ({sizes} samples); {needed_for} needs it. "
                    f"{fix or _MORE_SAMPLES}")


def sizes_of(data: DataSplits | Loaders | None) -> dict[str, int]:
    """The sizes a new model takes from image data (class count, input channels); none for text."""
    if isinstance(data, DataSplits):
        return {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}
    return {}


def load_model(spec: str, *, num_classes: int | None = None, in_channels: int | None = None,
               weights: str | None = None, task: str | None = None, seed: int = 0) -> nn.Module:
    """The model ``spec`` names: a registry name, a folder prunekit saved, or (with
    ``prunekit.models.resolve``) any spec it accepts, for ``task`` (None: classification). New
    weights are initialised from ``seed`` without touching the global RNG."""
    sizes = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_saved_folder(spec):
            # NOTE: a saved folder carries its own widths and classes; sizes from the data do not apply.
            return models.resolve(model_folder(spec), weights=weights)
        return models.resolve(spec, task=task, weights=weights, **sizes)


def source_architecture(spec: str, splits: Any = None,
                        in_channels: int | None = None) -> dict[str, Any]:
    """What rebuilding the dense model needs (``prunekit.models.create(**architecture)``): a saved
    folder's own record (without the dense weights it names), else the registry name sized for the data."""
    if is_saved_folder(spec):
        source = read_manifest(Path(model_folder(spec))).source or {}
        kwargs = {k: v for k, v in dict(source.get("kwargs") or {}).items() if k != "weights"}
        return {"model": source.get("spec"), **kwargs}
    if splits is not None:
        return {"model": spec, **sizes_of(splits)}
    return {"model": spec, **({"in_channels": in_channels} if in_channels is not None else {})}


BASELINE_FILE = "baseline.safetensors"  # the dense weights a run trained itself, beside its model/


def dense_weights(weights: str | None, net: nn.Module, trained_here: Any) -> nn.Module | str | None:
    """What a cut model's manifest names as its dense weights (``save_result(dense=...)``): the
    ``weights`` given, else ``net`` when this run trained it (written as ``BASELINE_FILE``), else
    nothing (the source builds its own: a saved folder, an ``hf:`` folder)."""
    return weights if weights is not None else net if trained_here else None


def dense_of(spec: str | None, weights: str | None, net: nn.Module, trained_here: Any) -> nn.Module | str | None:
    """``save_result(dense=...)`` for a run on ``spec``: :func:`dense_weights`; for the user's own
    module (no spec) ``net`` itself, the dense module ``prunekit.load(..., model=)`` takes back."""
    return dense_weights(weights, net, trained_here) if spec is not None else net


def starts_trained(spec: str | None, weights: str | None) -> bool:
    """Whether a run's model needs no baseline: the user's own module comes trained, a spec as
    :func:`has_weights` says."""
    return spec is None or has_weights(spec, weights)


def architecture_of(spec: str | None, splits: Any, in_channels: int | None = None) -> dict[str, Any] | None:
    """:func:`source_architecture` of a spec; None for the user's own module (nothing to rebuild it from)."""
    return source_architecture(spec, splits, in_channels) if spec is not None else None


SPLIT_SEED = 0  # the seed every command splits a file or folder into train/val/test with


def split_seed_of(recorded: Mapping[str, Any], spec: str | None = None) -> int:
    """The seed data is split with for a model whose manifest's ``data`` is ``recorded``: its
    ``split_seed``, else :data:`SPLIT_SEED` (folders written before it was recorded, other specs).

    The split is a property of the data, not of a run: it never follows ``--seed``, so a model is
    scored later on the very test samples its training run held out."""
    value = recorded.get("split_seed", SPLIT_SEED)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"model '{spec}': its manifest's data record has split_seed {value!r}; expected a whole "
                        f"number >= 0 (the seed its data was split with). Fix: correct or remove 'split_seed' "
                        f"in its manifest.json (without it the data is split with seed {SPLIT_SEED}).")
    return value


def data_record(splits: Any, split_seed: int = SPLIT_SEED) -> dict[str, Any] | None:
    """What a saved model was made for (the manifest's ``data``): the data's name, one sample's
    shape, its class names, the seed a file or folder is split into train/val/test with
    (``split_seed``: later commands split it alike) and how its inputs were standardised (``mean``,
    ``std``, ``pixel_scale``: other data is standardised alike for this model); None for data that
    is not tensors of one shape (text blocks) but for text read as UTF-8 bytes (``tokenizer: bytes``:
    no tokenizer is saved beside the model, so its data is read alike next time without
    ``--tokenizer bytes``)."""
    if isinstance(splits, Loaders) and isinstance(splits.info.get("tokenizer"), ByteTokenizer):
        return {"name": splits.name, "tokenizer": BYTES}
    if not isinstance(splits, DataSplits):
        return None
    record: dict[str, Any] = {"name": splits.name, "input_shape": list(splits.input_shape),
                              "class_names": list(splits.class_names), "split_seed": split_seed}
    if splits.mean and splits.std:
        record.update(mean=list(splits.mean), std=list(splits.std), pixel_scale=splits.pixel_scale)
    return record


def made_for(spec: str) -> dict[str, Any]:
    """The manifest's ``data`` record of a saved folder ``spec`` (empty for anything else)."""
    if not is_saved_folder(spec):
        return {}
    return dict(read_manifest(Path(model_folder(spec))).data or {})


def save_result(net: nn.Module, out: str | os.PathLike[str] | Staged, spec: str | None, *, splits: Any = None,
                in_channels: int | None = None, task: str | None = None, transforms: Sequence[Any] = (),
                sparse: bool = False, dense: nn.Module | str | None = None,
                metrics: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Save ``net`` as ``out/model/`` (one format: ``prunekit.load`` and ``--model OUT`` read it),
    with ``metrics`` (what was measured of it: ``{"profile": ...}``) in its manifest.

    The manifest names the dense source ``spec`` sized for the data (a saved folder passes on its
    own source and earlier transforms), then ``transforms`` in the order applied. ``dense``: the
    dense model's trained weights (a file, or the dense module, written as ``out/baseline.safetensors``),
    recorded in the source, so the comparisons that rebuild the dense model (``quantize``, ``export``)
    score trained weights; a saved folder with no transforms yet is its own dense weights. Without a
    spec (the user's own module), ``dense`` (the module) is the original ``prunekit.load(..., model=)``
    takes back. A :class:`Staged` ``out`` is written into its folder, with the paths (returned, and
    of the dense weights in the manifest) where the files end up.
    """
    final: Callable[[Path], str] = out.final if isinstance(out, Staged) else str
    out = out.folder if isinstance(out, Staged) else Path(out)
    files = _save_result(net, out, final, spec, splits=splits, in_channels=in_channels, task=task,
                         transforms=transforms, sparse=sparse, dense=dense, metrics=metrics)
    return {"model": final(files), "weights": final(files / WEIGHTS_FILE), "manifest": final(files / MANIFEST_FILE)}


def _save_result(net: nn.Module, out: Path, final: Callable[[Path], str], spec: str | None, *, splits: Any,
                 in_channels: int | None, task: str | None, transforms: Sequence[Any], sparse: bool,
                 dense: nn.Module | str | None, metrics: Mapping[str, Any] | None) -> Path:
    """:func:`save_result`'s work: the model folder written in ``out``."""
    earlier: list[Any] = []
    # NOTE: a saved folder's data was split (by build) with the seed it records; the new folder records it too
    record = data_record(splits, split_seed_of(made_for(spec), spec) if spec is not None else SPLIT_SEED)
    if spec is None:
        if not isinstance(dense, nn.Module):
            raise ConfigError("save_result: the user's own module is saved against its dense module; pass dense=.")
        return save(net, out / MODEL_DIR, original=dense, transforms=list(transforms), sparse=sparse,
                    overwrite=True, data=record, metrics=metrics)
    if is_saved_folder(spec):
        folder = Path(model_folder(spec))
        manifest = read_manifest(folder)
        source, earlier = manifest.source, list(manifest.transforms)
        record = record or manifest.data
        if source and not earlier and "weights" not in source.get("kwargs", {}):
            # NOTE: a trained dense folder (prunekit train --out): its weights are the source's; kept as
            # BASELINE_FILE where this save replaces that folder (--model OUT --out OUT --overwrite)
            trained = str((folder / WEIGHTS_FILE).absolute())
            if Path(final(out / MODEL_DIR)).resolve() == folder.resolve():
                shutil.copyfile(trained, out / BASELINE_FILE)
                trained = str(Path(final(out / BASELINE_FILE)).absolute())
            source = {**source, "kwargs": {**source.get("kwargs", {}), "weights": trained}}
    else:
        sizes = sizes_of(splits)
        if in_channels is not None:
            sizes["in_channels"] = in_channels
        if isinstance(dense, nn.Module):
            dense = final(save_weights(dense, out / BASELINE_FILE))
        # NOTE: only an hf: spec builds a different class per task; other specs ignore it.
        source = models.source_of(spec, task=task if hf_folder(spec) else None, weights=dense, **sizes)
    folder = save(net, out / MODEL_DIR, source=source, transforms=[*earlier, *transforms],
                  sparse=sparse, overwrite=True, data=record, metrics=metrics)
    copy_tokenizer(tokenizer_of(spec), folder)
    return folder


def copy_tokenizer(source: str | None, folder: Path) -> None:
    """Keep the model's tokenizer beside it, so the saved folder is a whole Hugging Face folder
    (``AutoTokenizer.from_pretrained``) and text data can be tokenised for ``--model OUT``."""
    if source is None or Path(source).resolve() == folder.resolve():
        return
    for name in _TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, folder / name)


def check_model_name(spec: str) -> None:
    """Fail on a misspelt model name, or a ``file.py:factory`` whose file is not there, before seconds
    of data loading (``run --check`` too); other specs are checked on use."""
    from prunekit.errors import path_error

    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py") and not Path(head).expanduser().is_file():
        raise path_error(Path(head).expanduser(), f"a Python file defining {tail}(), as model spec '{spec}' says",
                         "Check the path (relative paths start at the current folder).")
    if not (is_saved_folder(spec) or ":" in spec or "/" in spec or os.sep in spec):
        models.MODELS.get(spec)


def check_not_int8(spec: str) -> None:
    """Refuse a folder ``prunekit quantize --backend torch`` wrote: it loads as torchao's int8 module,
    which ``eval`` runs but which cannot be pruned, trained, quantised again, saved or exported."""
    if not is_saved_folder(spec):
        return
    folder = Path(model_folder(spec))
    if not any(t.get("backend") == "torch" for t in read_manifest(folder).of_kind("quantize")):
        return
    made_from = _quantized_from(folder)
    raise ConfigError(f"--model '{spec}' is an int8 model (prunekit quantize --backend torch wrote it); prunekit "
                      f"only evaluates such a model (prunekit eval), it cannot prune, train, quantise, profile or "
                      f"export it. Pass the fp32 folder it was made from{f' ({made_from!r})' if made_from else ''} "
                      f"as --model instead (quantize --backend torch profiles fp32 against int8).")


def _quantized_from(folder: Path) -> str | None:
    """The --model the quantize run that wrote ``folder`` was given (its results.json), if it says."""
    import json

    results = folder.parent / "results.json" if folder.name == MODEL_DIR else folder / "results.json"
    try:
        made_from = json.loads(results.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return made_from if isinstance(made_from, str) else None


Model = str | nn.Module  # NOTE: a spec, or the user's own module (used as it is: trained, sized)
Data = str | DataSplits | Loaders  # NOTE: a name or path, or the user's data objects


def name_of(model: Model) -> str:
    """How results name ``model``: its spec, or its class for the user's own module."""
    return model if isinstance(model, str) else type(model).__name__


def spec_of(model: Model) -> str | None:
    """The spec ``model`` is, None for the user's own module (nothing to rebuild it from)."""
    return model if isinstance(model, str) else None


def build(model: Model, data: Data, *, data_dir: str | None = None, weights: str | None = None,
          task: str | None = None, seed: int = 0, int8_ok: bool = False,
          tokenizer: str | None = None, block_size: int | None = None,
          image_size: int | tuple[int, int] | None = None) -> tuple[nn.Module, Any]:
    """Load ``data`` and the model ``model`` names, sized for it (class count and input channels of
    image data; an image folder's images resized to ``image_size``). Text is tokenised with
    ``tokenizer`` (a saved tokenizer's folder, or ``"bytes"``),
    else with the model's own, and gives :class:`Loaders` of ``block_size``-token blocks (default:
    ``TRAIN_BLOCK``, or fewer where the model records fewer positions).

    ``model`` may be the user's own ``nn.Module`` (a copy is used: theirs is never changed) and
    ``data`` a :class:`DataSplits` or :class:`Loaders` of their DataLoaders; both are checked
    against each other as specs are.

    An int8 folder (``quantize --backend torch``) is refused before the data loads, unless ``int8_ok``
    (``eval``, which only runs the model)."""
    spec = _checked_model(model)
    if spec is not None:
        check_model_name(spec)
        if not int8_ok:
            check_not_int8(spec)
    recorded = made_for(spec) if spec is not None else {}
    data_name = _checked_data(data)
    split_seed = split_seed_of(recorded, spec)

    def load_data(size: int) -> DataSplits | Loaders:
        if not isinstance(data, str):
            return data
        # NOTE: split with the data's split seed, never the run's ``seed``: a run with --seed 5 and a later
        # eval of its folder must hold out the same test samples (the run's seed only shuffles and inits)
        loaded = datasets.load(data, data_dir=data_dir, seed=split_seed,
                               tokenizer=tokenizer or (tokenizer_of(spec) if spec is not None else None)
                               or recorded.get("tokenizer"),
                               block_size=size, image_size=image_size, fallback_size=_image_size_of(spec, recorded))
        return _shuffled_by(loaded, seed)

    loaded = load_data(block_size or (block_size_for(spec) if spec is not None else TRAIN_BLOCK))
    asked = task is not None
    if task is None:
        task = getattr(loaded, "task", None)
    if isinstance(loaded, DataSplits):
        check_finite(loaded, data_name, source=data if isinstance(data, str) else None)
    # NOTE: labelled arrays and images are scored as classification: an hf: folder must build its
    # classifier (AutoModelForImageClassification), not the bare AutoModel a task of None picks
    built_for = task if task is not None or not isinstance(loaded, DataSplits) else "classification"
    net: nn.Module
    if isinstance(model, nn.Module):
        net = clone_module(model)
    else:
        net = load_model(model, weights=weights, task=built_for, seed=seed, **sizes_of(loaded))
    if isinstance(loaded, DataSplits):
        if isinstance(data, str) and recorded.get("mean") and recorded.get("std"):
            # NOTE: a saved model reads inputs standardised as its training data was, not as this data's
            # own statistics would standardise them (evaluating on a few images of one class moved them)
            loaded = loaded.standardised_as(recorded["mean"], recorded["std"], recorded.get("pixel_scale"))
        loaded = in_model_order(net, loaded, name_of(model), data_name, recorded.get("class_names"))
        check_fits(net, loaded, name_of(model), data_name)
    elif isinstance(data, str) and (shorter := _shorter_blocks(net, loaded, block_size)) is not None:
        loaded = load_data(shorter)
    if asked or not isinstance(loaded, DataSplits):
        # NOTE: a task the user names is checked on image data too: a mismatch fails here, not mid-training.
        blocks = loaded.info.get("block_size") if isinstance(loaded, Loaders) else None
        fix = ("Pass inputs the model accepts." if blocks is None else
               f"Its text came in blocks of {blocks} tokens: if the model reads fewer positions, pass "
               f"--block-size N (block_size=N), N at most its position count.")
        _check_task_fits(net, loaded, task_of(loaded, task), fix=fix)
    return net, loaded


def _shuffled_by(loaded: DataSplits | Loaders, seed: int) -> DataSplits | Loaders:
    """``loaded``, its text blocks' training order drawn from the run's ``seed`` (the loader was made
    with the split seed; the blocks it holds out do not depend on a seed)."""
    generator = getattr(loaded.train, "generator", None) if isinstance(loaded, Loaders) else None
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    return loaded


def _check_task_fits(net: nn.Module, data: DataSplits | Loaders, task: Any, *, fix: str) -> None:
    """``models.check_task_fits`` on :func:`example_of`'s inputs; a model that fails on them but runs
    once given the keyword inputs its batches also carry (a required attention mask) is told what
    was left out and how to pass it."""
    try:
        models.check_task_fits(net, task, example_of(data, task), fix=fix)
    except ConfigError:
        missing, first = _needed_keywords(net, data, task)
        if not missing:
            raise
        tuples = (", or yield (inputs..., labels) tuples so that every input is positional"
                  if getattr(task, "name", None) in ("classification", "custom") else "")
        raise ConfigError(f"{type(net).__name__}.forward needs {' and '.join(missing)}, which the batches pass by "
                          f"keyword, but prunekit traces, profiles and exports a model on the batches' first "
                          f"input alone ({first}). Give {missing[0]} a default in forward ({missing[0]}=None)"
                          f"{tuples}.") from None


def _needed_keywords(net: nn.Module, data: DataSplits | Loaders, task: Any) -> tuple[list[str], str]:
    """The keyword inputs of the first training batch without which ``net`` fails on it (none where
    it fails with them too), and what the batch's first input is called."""
    if isinstance(data, DataSplits):
        return [], ""
    batch = next(iter(data.train))
    inputs, keywords = task.inputs(batch), {k: v[:1] for k, v in _keyword_inputs(task, batch).items()}
    if not keywords:
        return [], ""
    modes = modes_of(net)
    net.eval()
    try:
        with torch.no_grad():
            net(*(x[:1] for x in inputs), **keywords)
    except Exception:  # NOTE: the model is the user's; any error means the inputs still do not fit
        return [], ""
    finally:
        restore_modes(modes)
    named = [k for k, v in batch.items() if v is inputs[0]] if isinstance(batch, Mapping) else []
    return list(keywords), named[0] if named else "its positional input"


def _checked_model(model: Any) -> str | None:
    if isinstance(model, str):
        return model
    if isinstance(model, nn.Module):
        return None
    raise ConfigError(f"model must be a spec (a name, a path, hf:FOLDER, file.py:factory, a saved folder) or "
                      f"an nn.Module; got {type(model).__name__}. Pass e.g. 'resnet20' or your module.")


def _checked_data(data: Any) -> str:
    """``data``'s name; anything but a name, a path, DataSplits or Loaders is a one-line error."""
    if isinstance(data, str):
        return data
    if isinstance(data, (DataSplits, Loaders)):
        return data.name
    raise ConfigError(f"data must be a dataset name or path, a prunekit.DataSplits, or prunekit.data.Loaders; got "
                      f"{type(data).__name__}. Wrap your DataLoaders: Loaders(name='mine', train=train_loader, "
                      f"val=val_loader, test=test_loader, task='classification').")


def _shorter_blocks(net: nn.Module, loaded: Loaders, asked: int | None) -> int | None:
    """The block size text must be cut to for ``net``: its recorded position count where the blocks
    are longer and no size was asked for; a size asked for that is longer is refused."""
    blocks, found = loaded.info.get("block_size"), models.context_length(net)
    if not isinstance(blocks, int) or found is None or found[0] >= blocks:
        return None
    limit, where = found
    if asked is not None:
        raise ConfigError(f"block_size {asked} is longer than the {limit} positions the model reads "
                          f"({where}); pass --block-size {limit} or less.")
    return limit


def check_finite(splits: DataSplits, data: str, source: str | None = None) -> None:
    """Refuse data whose inputs hold NaN or inf (every loss would be NaN), naming where they are as
    the user can find them: the rows of a ``.npz`` ``source`` as the file numbers them, else the
    split and its sample. An empty split holds nothing to refuse."""
    # NOTE: an empty train split has no statistics (NaN); that is no NaN input
    spread = len(splits.train) > 0 and not all(math.isfinite(v) for v in (*splits.mean, *splits.std))
    found = [(split, bad) for split in ("train", "val", "test") if (bad := _non_finite(getattr(splits, split))).any()]
    if not found and not spread:
        return
    fix = "Replace them (e.g. numpy.nan_to_num) or drop those samples, then pass the data again."
    rows = _npz_non_finite(source) if source is not None else []
    if rows:
        key, count, total, first = rows[0]
        also = "".join(f"; {c} of {t} rows of '{k}' too (the first is row {f})" for k, c, t, f in rows[1:])
        raise DataError(f"data '{data}': {count} of {total} rows of its array '{key}' hold NaN or inf inputs (the "
                        f"first is row {first}){also}. {fix}")
    if spread:
        # NOTE: the train split's mean and std standardise every split: one NaN there made every sample
        # NaN, so counting samples now would blame them all
        raise DataError(f"data '{data}': its train split holds NaN or inf inputs (its per-channel mean or std is "
                        f"not finite, so no sample can be told apart after standardising; find them with "
                        f"numpy.isfinite on the raw inputs). {fix}")
    split, bad = found[0]
    first = int(bad.nonzero()[0, 0])
    raise DataError(f"data '{data}': {int(bad.sum())} of {len(bad)} samples of its {split} split hold NaN or inf "
                    f"inputs (the first is sample {first}, counted within that split in the order it was read). {fix}")


def _non_finite(split: TensorDataset) -> torch.Tensor:
    """Which samples of ``split`` hold a NaN or inf input (none of an empty split, or integer inputs)."""
    inputs = split.tensors[0]
    if not inputs.is_floating_point() or not inputs.numel():
        return torch.zeros(len(inputs), dtype=torch.bool)
    return ~torch.isfinite(inputs).reshape(len(inputs), -1).all(1)


def _npz_non_finite(source: str) -> list[tuple[str, int, int, int]]:
    """``(array, bad rows, rows, first bad row)`` of each input array of a ``.npz`` file that holds NaN
    or inf, as the file numbers its rows; empty for anything else (or a file that cannot be read here)."""
    path = Path(source).expanduser()
    if path.suffix.lower() != ".npz" or not path.is_file():
        return []
    import numpy as np

    found = []
    try:
        with np.load(path, allow_pickle=False) as arrays:
            for key in (k for k in ("x", "x_train", "x_val", "x_test") if k in arrays.files):
                values = arrays[key]
                if values.dtype.kind not in "fc" or not values.size or values.ndim < 1:
                    continue
                bad = ~np.isfinite(values.reshape(len(values), -1)).all(1)
                if bad.any():
                    found.append((key, int(bad.sum()), len(values), int(bad.nonzero()[0][0])))
    except (OSError, ValueError):  # NOTE: only a better message is lost; the caller still refuses the data
        return []
    return found


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _image_size_of(spec: str | None, recorded: dict[str, Any]) -> tuple[int, int] | None:
    """The (h, w) the model ``spec`` was made for: a saved folder's data record, a registry
    model's input size; None where unknown."""
    shape = recorded.get("input_shape")
    if shape is None and spec is not None and spec in models.MODELS:
        shape = models.input_shape(spec)
    if isinstance(shape, (list, tuple)) and len(shape) == 3:
        return int(shape[1]), int(shape[2])
    return None


def in_model_order(net: nn.Module, splits: DataSplits, spec: str, data: str,
                   recorded: Sequence[str] | None = None) -> DataSplits:
    """``splits`` labelled in the order of the classes ``net`` names (a Hugging Face classifier's
    ``id2label``, else ``recorded``: a saved folder's class names), so a trained head is scored
    against its own classes, not sorted folder names.

    Class names that are not the data's are warned about (the outputs are then taken in the data's
    order); a model that names none gets the data's names (``save_pretrained`` then records them).
    """
    names = models.label_names(net) or (tuple(recorded) if recorded else None)
    if not splits.class_names:
        return splits
    if names is None:
        config: Any = getattr(net, "config", None)
        if isinstance(getattr(config, "id2label", None), dict) and len(config.id2label) == splits.num_classes:
            config.id2label = dict(enumerate(splits.class_names))
            config.label2id = {name: i for i, name in enumerate(splits.class_names)}
        return splits
    ordered = splits.in_class_order(names)
    if ordered is not None:
        return ordered
    warnings.warn(f"model '{spec}' names its outputs {_listed(names)} but data '{data}' has the classes "
                  f"{_listed(splits.class_names)}: output i is taken as the data's class i. If the model "
                  f"was trained on these classes, name the data's classes (folders) as the model does.", stacklevel=3)
    return splits


def _listed(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return f"({shown}{f', ... {len(names)} in all' if len(names) > most else ''})"


def torch_scorer(data: Any, task: Any, measure: Measure) -> Callable[[nn.Module], dict[str, float]]:
    """Metrics of a PyTorch module on ``data`` (capped as ``measure`` says)."""
    if isinstance(data, TensorDataset):
        data = capped(data, measure.max_eval_batches, measure.eval_batch_size)
        return lambda net: dict(evaluate(net, data, task=task, batch_size=measure.eval_batch_size))
    return lambda net: dict(evaluate(net, data, task=task, max_batches=measure.max_eval_batches))


def selection_data(splits: Any) -> Any:
    """Where choices are made (int8 layers kept fp32, the cut within a metric budget): the validation
    split; the test split only reports."""
    val = getattr(splits, "val", None)
    return val if val is not None and (not isinstance(splits, DataSplits) or len(val)) else eval_data(splits)


def check_fits(net: nn.Module, splits: DataSplits, spec: str, data: str) -> None:
    """Run ``net`` once on two samples of ``splits``: an input it cannot take, or an output width
    other than the class count, fails here, naming what the model expects and what the data gives."""
    x = _example_split(splits).tensors[0][:2].clone()
    given = _shape(splits.input_shape)
    expects = ""
    if spec in models.MODELS:
        expects = f" (it is built for {_shape(models.input_shape(spec, in_channels=splits.input_shape[0]))} inputs)"
    modes = modes_of(net)
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)
    except PrunekitError:
        raise
    except Exception as exc:  # NOTE: a shape error can come from any layer, as any exception type.
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"model '{spec}' does not fit data '{data}': one batch of its {given} inputs "
                          f"fails in the forward pass{expects}: {type(exc).__name__}: {reason}. Pick a "
                          f"model made for {given} inputs (`prunekit models` lists input sizes) or data "
                          f"of the size the model expects.") from None
    finally:
        restore_modes(modes)
    width = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 2 else None
    if width is not None and width != splits.num_classes:
        raise ConfigError(f"model '{spec}' gives {width} outputs per sample but data '{data}' has "
                          f"{splits.num_classes} classes. Pass a model with {splits.num_classes} outputs "
                          f"(a registry name is sized for the data; a saved folder keeps its own head) "
                          f"or data with {width} classes.")


def capped(dataset: TensorDataset, max_batches: int | None, batch_size: int) -> TensorDataset:
    """The first ``max_batches * batch_size`` samples of ``dataset`` (all of it for None)."""
    if max_batches is None:
        return dataset
    if max_batches < 1:
        raise ConfigError(f"max_eval_batches must be >= 1 (or None for the whole split); got "
                          f"{max_batches}. Pass e.g. --max-eval-batches 4.")
    rows = max_batches * batch_size
    return TensorDataset(*(t[:rows] for t in dataset.tensors))


def capped_splits(splits: Any, measure: Measure) -> Any:
    """``splits`` with its validation and test sets capped as ``measure`` says (training untouched);
    other data is capped where it is scored (``measure_profile``)."""
    if measure.max_eval_batches is None or not isinstance(splits, DataSplits):
        return splits
    cap = (measure.max_eval_batches, measure.eval_batch_size)
    return replace(splits, val=capped(splits.val, *cap), test=capped(splits.test, *cap))


def reusing_exports(workflow: Callable[..., Any]) -> Callable[..., Any]:
    """``workflow`` run inside :func:`~prunekit.measure.latency.exports_reused`: its before and after
    profiles and their A/A controls export each model to ONNX once."""
    @functools.wraps(workflow)
    def run(*args: Any, **kwargs: Any) -> Any:
        with exports_reused():
            return workflow(*args, **kwargs)

    return run


def measure_profile(net: nn.Module, example: Any, name: str, measure: Measure,
                    dataset: Any = None, task: Any = None) -> Profile:
    """:func:`prunekit.measure.profile` with ``measure``'s protocol and evaluation cap (on the CPU);
    ``dataset`` is scored by ``task`` (default classification)."""
    max_batches = None
    if isinstance(dataset, TensorDataset):
        dataset = capped(dataset, measure.max_eval_batches, measure.eval_batch_size)
    elif dataset is not None:
        max_batches = measure.max_eval_batches
    with exports_kept():  # NOTE: reused by the A/A control of a workflow that is reusing_exports
        return profile(net, example, name=name, batch_sizes=tuple(measure.batch_sizes),
                       threads=measure.threads, backends=tuple(measure.backends),
                       min_time_s=measure.min_time_s, dataset=dataset, task=task, max_batches=max_batches)


def compare_models(before_net: nn.Module, after_net: nn.Module, before: Profile, after: Profile, example: Any,
                   measure: Measure) -> tuple[str, list[dict[str, Any]]]:
    """The before/after table, its latency ratios measured against an A/A control in this run (the
    dense model timed twice, interleaved with the result; ratios inside that noise read "within
    noise"); and the controls as JSON data for results.json."""
    from dataclasses import asdict

    from prunekit.measure import compare
    from prunekit.measure.latency import aa_controls

    # NOTE: only what both profiles measured (a backend that failed there, e.g. ONNX Runtime not
    # installed or a model it cannot export, is left out here too).
    timed = [b for b in measure.backends if before.latency_for(b, measure.batch_sizes[0])
             and after.latency_for(b, measure.batch_sizes[0])]
    controls = aa_controls(before_net, after_net, example, backends=tuple(timed),
                           batch_sizes=tuple(measure.batch_sizes), threads=measure.threads,
                           min_time_s=measure.min_time_s / 8) if timed else ()
    return compare(before, after, controls=controls), [asdict(c) for c in controls]


def calibration_batches(splits: Any, count: int, size: int = 64, task: Any = None) -> list[Any]:
    """The first ``count`` training batches, for data-driven methods: (inputs, labels) of image data;
    of other data its model inputs (``task.inputs`` and ``task.keyword_inputs``): the tensor where
    that is all, else :class:`~prunekit.importance.stats.ModelInputs`, which keeps several inputs
    and an attention mask together (a plain tuple would read as (inputs, labels))."""
    if not isinstance(splits, DataSplits):
        task = task_of(splits, task)
        return [_model_inputs(task, b) for b in itertools.islice(iter(splits.train), count)]
    x, y = splits.train.tensors
    return [(x[i:i + size], y[i:i + size]) for i in range(0, min(len(x), count * size), size)]


def _keyword_inputs(task: Any, batch: Any) -> dict[str, torch.Tensor]:
    """The keyword tensors of ``batch`` the task passes beside its positional inputs (a mask)."""
    keywords = getattr(task, "keyword_inputs", None)
    found = keywords(batch) if callable(keywords) else {}
    return {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}


def _model_inputs(task: Any, batch: Any) -> Any:
    """Every model input of ``batch``, without its labels: a tensor, or ModelInputs."""
    inputs, keywords = task.inputs(batch), _keyword_inputs(task, batch)
    return inputs[0] if len(inputs) == 1 and not keywords else ModelInputs(inputs, keywords)
