"""Options shared by several commands, and options generated from a config model's fields.

Generating ``--epochs``/``--lr``/... from :class:`~prunekit.recover.TrainConfig` keeps the CLI, the
Python object and (later) the YAML recipe stage describing exactly the same parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

__all__ = [
    "add_config_options",
    "add_device_option",
    "add_eval_options",
    "add_model_options",
    "add_output_options",
    "add_ranks_option",
    "add_pipeline_options",
    "add_profile_options",
    "backends",
    "claimed",
    "config_from_args",
    "image_size",
    "int_list",
    "measure_from_args",
    "positive_int",
    "print_written",
]


def add_model_options(parser: argparse.ArgumentParser, *, data_required: bool = True,
                      task: bool = False) -> None:
    """--model, --weights, --data, --data-dir (and --task for the commands that score any task)."""
    parser.add_argument("--model", required=True, metavar="SPEC",
                        help="a registry name (`prunekit models` lists them), timm:NAME, hf:FOLDER "
                             "(a local Hugging Face folder), path/to/file.py:factory or "
                             "package.module:factory (this runs your code), or a folder an earlier "
                             "command wrote (e.g. runs/r20-half)")
    if task:
        parser.add_argument("--task", default=None, metavar="NAME",
                            help="what the metric is: classification, causal_lm, embedding (default: "
                                 "what the data fits; a text file means causal_lm, else classification)")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="weights to start from: a .safetensors file written by `prunekit train` "
                             "(for torchvision models also a local .pth or a weights name found in "
                             "the torch hub cache; nothing is downloaded)")
    data_help = ("dataset: a registered name (fashion-mnist, digits), an .npz file, an image folder "
                 "(one sub-folder per class), a datasets.save_to_disk folder, or a text file (tokenised "
                 "with the model's own tokenizer, or --tokenizer)")
    parser.add_argument("--data", metavar="NAME|PATH", default="fashion-mnist" if data_required else None,
                        help=data_help + (" (default: fashion-mnist)" if data_required else
                                          "; when given, accuracy is measured too"))
    parser.add_argument("--tokenizer", metavar="FOLDER|bytes", default=None,
                        help="how a text file is tokenised: a folder holding a saved tokenizer, or 'bytes' "
                             "(its UTF-8 bytes as token ids, a vocabulary of 256, for a model of your own "
                             "without a tokenizer) (default: the model's own, from an hf: or saved folder)")
    parser.add_argument("--block-size", type=int, default=None, metavar="N",
                        help="tokens per sample of a text file (default: 128, or the model's position "
                             "count where its config records a smaller one)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="N|HxW",
                        help="resize every image of an image folder to N x N (or H x W) pixels; needed when "
                             "its images differ in size (default: their common size)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder with the Fashion-MNIST IDX files (default: $PRUNEKIT_DATA, "
                             "else /usr/share/datasets/fashion-mnist from Debian's "
                             "dataset-fashion-mnist package)")


def add_pipeline_options(parser: argparse.ArgumentParser, *, finetune_help: str) -> None:
    """--baseline-epochs, --finetune-epochs, --no-progress: the steps every compress command shares."""
    parser.add_argument("--baseline-epochs", type=int, default=1, metavar="N",
                        help="epochs of baseline training when no --weights are given (default: 1, "
                             "a quick baseline; pass --weights from `prunekit train` for a real one)")
    parser.add_argument("--finetune-epochs", type=int, default=1, metavar="N",
                        help=f"epochs of fine-tuning {finetune_help} (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_output_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--out (where results.json, checkpoints and weights go) and --overwrite."""
    parser.add_argument("--out", metavar="DIR", default=default,
                        help="output folder for results.json (and checkpoints/weights when training)"
                             + (f"; default: {default}" if default else "")
                             + "; a folder holding earlier results is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into --out even when it holds earlier results (they are replaced)")


def add_ranks_option(parser: Any, *, help: str) -> None:
    """--ranks [METHOD,...]: True alone (svd for Linear and 1x1 conv, tucker for k x k) or the method
    names as given; False without it (read by :func:`prunekit.search.ranks.rank_methods`)."""
    parser.add_argument("--ranks", nargs="?", const=True, default=False, metavar="METHOD[,METHOD...]", help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device: where training and evaluation run."""
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help="where training and evaluation run: cpu, cuda, cuda:1 (default: where the "
                             "model is, the CPU); pruning, profiling and saving run on the CPU")


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    """--max-eval-batches: a cap on every accuracy evaluation, so a quick try is quick."""
    if "--max-eval-batches" in parser._option_string_actions:
        return  # NOTE: TrainConfig's field of the same name is this option: one flag caps both.
    parser.add_argument("--max-eval-batches", type=int, default=None, metavar="N",
                        help="evaluate accuracy on only the first N batches of 512 (validation, test "
                             "and profiles; default: the whole split)")


def image_size(text: str) -> int | tuple[int, int]:
    """Parse "32" into 32 and "32x48" into (32, 48) for argparse."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW such as 32 or 32x48; got '{text}'") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW of positive sizes such as 32 or 32x48; got '{text}'")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def positive_int(text: str) -> int:
    """Parse "2" into 2 for argparse; 0, negative and non-integer counts are refused."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 such as 2; got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 such as 2; got '{text}'")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Parse "1,64" into (1, 64) for argparse."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,64; got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,64; got '{text}'")
    return values


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """--batch-sizes, --threads, --fused, --no-onnx."""
    parser.add_argument("--batch-sizes", type=int_list, default=(1, 64), metavar="N[,N...]",
                        help="batch sizes at which latency is measured (default: 1,64)")
    parser.add_argument("--threads", type=positive_int, default=2, metavar="N",
                        help="intra-op threads for PyTorch and ONNX Runtime (default: 2)")
    parser.add_argument("--fused", action="store_true",
                        help="also measure PyTorch with every Conv/Linear -> BatchNorm pair folded "
                             "(the deployed form; ONNX Runtime folds at load by itself)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="skip the ONNX Runtime latency (PyTorch eager only)")
    parser.add_argument("--min-time-s", type=float, default=1.0, metavar="S",
                        help="seconds of timed calls per latency measurement, at least 5 calls "
                             "(default: 1.0; 0 for a quick look)")


def backends(args: argparse.Namespace) -> tuple[str, ...]:
    """The latency backends the profile options ask for, in table order."""
    return ("torch",) + (("torch-fused",) if args.fused else ()) + (() if args.no_onnx else ("onnxruntime",))


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def _scalar_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def measure_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~prunekit.workflows.Measure` the profile and evaluation options describe."""
    from prunekit.workflows import Measure

    # NOTE: options a command lacks keep Measure's own defaults (one place for them).
    given = {k: getattr(args, k) for k in ("threads", "min_time_s", "max_eval_batches") if hasattr(args, k)}
    if hasattr(args, "batch_sizes"):
        given["batch_sizes"] = tuple(args.batch_sizes)
    if hasattr(args, "no_onnx"):
        given["backends"] = backends(args)
    return Measure(**given)


@contextlib.contextmanager
def claimed(args: argparse.Namespace, out: str | None) -> Iterator[None]:
    """Check ``out`` before any work and hold it while the command runs (rank 0 only; nothing for
    commands that write nothing): earlier results need --overwrite (or --resume), a second run into
    the same folder is refused."""
    from prunekit.workflows.common import is_rank_zero
    from prunekit.workflows.outputs import claim

    if out is None or getattr(args, "check", False) or not is_rank_zero():
        yield
        return
    with claim(out, command=args.command, overwrite=getattr(args, "overwrite", False),
               resume=getattr(args, "resume", False)):
        yield


def print_written(results: dict[str, Any], what: str = "") -> None:
    """Say where the results (and ``what`` else) went, or how to keep them."""
    file = results.get("results_file")
    if file is None:
        print("nothing written (pass --out DIR to keep results.json" + (f" and {what}" if what else "") + ")")
    else:
        print(f"results: {file}" + (f"  {what}" if what else ""))
    if results.get("report"):
        print(f"report: {results['report']} (open it in a browser; report.md beside it)")


def add_config_options(parser: argparse.ArgumentParser, model: type[BaseModel],
                       skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per field of ``model``, with its description as help."""
    group = parser.add_argument_group(f"{model.__name__} (same keys as the recipe stage)")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        if flag in parser._option_string_actions:
            continue  # NOTE: already an option of the command (e.g. --max-eval-batches); one flag, one dest.
        help_text = (field.description or name.replace("_", " ")) + f" (default: {field.default})"
        annotation = _scalar_type(field.annotation)
        choices = _choices(annotation)
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif choices is not None:
            group.add_argument(flag, dest=name, choices=choices, default=None, help=help_text)
        else:
            kind = annotation if annotation in (int, float, str) else str
            group.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(),
                               help=help_text)


def config_from_args(args: argparse.Namespace, model: type[BaseModel], **overrides: Any) -> Any:
    """Build ``model`` from the options the user gave; unset options keep the model's defaults."""
    values = {name: getattr(args, name) for name in model.model_fields
              if getattr(args, name, None) is not None}
    values.update(overrides)
    from prunekit.config import parse_config

    return parse_config(model, values)
