"""``one_shot``: prune a trained model in one pass over calibration data, block by block."""

from __future__ import annotations

import copy
import fnmatch
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError
from prunekit.registry import Entry
from prunekit.sparsity.oneshot.calibrate import (
    Call, as_call, block_output, block_stacks, call_order, capture_block_inputs, collect_stats, find_blocks,
    output_layer, run_call, with_carried,
)
from prunekit.sparsity.oneshot.layers import (
    get_matrix, is_supported, matrix_shape, set_matrix, unsupported_reason,
)
from prunekit.sparsity.oneshot.methods import METHODS
from prunekit.sparsity.patterns import Pattern, pattern_sparsity, sparsity_of
from prunekit.sparsity.report import tied_names
from prunekit.sparsity.sparsifier import check_selectors

__all__ = ["one_shot", "OneShotResult", "LayerReport"]


@dataclass(frozen=True)
class LayerReport:
    """One pruned layer: its name, ``W[out, in]`` shape, fraction of zeros in the weight its forward
    uses, relative reconstruction error ``‖WX − ŴX‖/‖WX‖`` on its calibration inputs (nan when it
    never ran on them: magnitude prunes it anyway), seconds spent solving, and the other names of
    its weight (tied weights, e.g. ``transformer.wte.weight``), which hold the same zeros."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    error: float
    seconds: float
    tied: tuple[str, ...] = ()


@dataclass(frozen=True)
class OneShotResult:
    """What ``one_shot`` did: the pruned model, one report per layer, wall time in seconds, the
    achieved sparsity over the pruned layers (zeros in the weights their forward uses), the block
    lists used (``"encoder.block, decoder.block"``; None: the whole model as one block) and the
    layers skipped, each with the reason."""

    model: nn.Module
    layers: tuple[LayerReport, ...]
    seconds: float
    method: str
    pattern: str
    sparsity: float
    blocks: str | None
    skipped: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (everything except the model)."""
        return {
            "method": self.method, "pattern": self.pattern, "sparsity": self.sparsity,
            "seconds": self.seconds, "blocks": self.blocks, "skipped": list(self.skipped),
            "layers": [asdict(r) for r in self.layers],
        }


def _check_args(sparsity: float, blocksize: int, percdamp: float) -> None:
    if not isinstance(sparsity, (int, float)) or math.isnan(sparsity) or not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"one_shot: 'sparsity' must be a fraction in [0, 1) of weights set to zero; got "
                          f"{sparsity!r}. Pass e.g. sparsity=0.5.")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ConfigError(f"one_shot: 'blocksize' must be a positive int (columns per SparseGPT block); got "
                          f"{blocksize!r}. The paper uses 128.")
    if not isinstance(percdamp, (int, float)) or not percdamp >= 0:
        raise ConfigError(f"one_shot: 'percdamp' must be >= 0 (dampening as a fraction of mean(diag H)); got "
                          f"{percdamp!r}. The paper uses 0.01.")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Shell-style patterns; a plain name also selects everything under it."""
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip(".") + ".") for p in patterns)


def _own_weights(named: Sequence[tuple[str, nn.Module]], inside: Sequence[str] | None, include: Sequence[str] | None,
                 ignore: Sequence[str]) -> list[str]:
    """``"name: reason"`` for each selected module holding weight matrices of its own beside its child
    layers (MultiheadAttention's ``in_proj_weight``): one_shot leaves those dense, so it says so."""
    found = []
    for name, module in named:
        own = [n for n, p in module.named_parameters(recurse=False) if p.dim() > 1 and "weight" in n]
        if not own or is_supported(module) or not any(c != "parametrizations" for c, _ in module.named_children()):
            continue  # NOTE: a leaf without support is reported by _select itself
        selected = (_matches(name, include) if include is not None
                    else inside is None or name.startswith(tuple(inside)))
        if selected and not _matches(name, ignore):
            found.append(f"{name}: {type(module).__name__}'s own {', '.join(own)} left dense: one_shot prunes "
                         "Linear, Conv1D and Conv2d layers")
    return found


def _select(model: nn.Module, inside: Sequence[str] | None, include: Sequence[str] | None, ignore: Sequence[str],
            head: str | None, skipped: list[str]) -> dict[str, nn.Module]:
    """The layers to prune: by default every supported layer inside the blocks (or, without blocks,
    every one but ``head``, the classifier); ``include``/``ignore`` filter by name."""
    named = [(n, m) for n, m in model.named_modules() if n and "parametrizations" not in n.split(".")]
    own = _own_weights(named, inside, include, ignore)
    skipped += own
    # NOTE: every conv is a candidate, so an unsupported one (transposed, grouped) is reported.
    layer_like = [(n, m) for n, m in named if is_supported(m) or isinstance(m, nn.modules.conv._ConvNd)]
    if include is not None:
        # NOTE: leaves only; a parametrized layer's ``parametrizations`` child does not count.
        chosen = [(n, m) for n, m in named if _matches(n, include)
                  and not any(c != "parametrizations" for c, _ in m.named_children())]
    elif inside is not None:
        chosen = [(n, m) for n, m in layer_like if n.startswith(tuple(inside))]
    else:
        chosen = layer_like
        if head is not None:
            skipped.append(f"{head}: it gives the model's output (the last Linear the forward calls), so it is "
                           "taken as the classifier head (name it in include= to prune it)")
            chosen = [(n, m) for n, m in chosen if n != head]
    layers: dict[str, nn.Module] = {}
    for name, module in chosen:
        if _matches(name, ignore):
            continue
        reason = unsupported_reason(module)
        if reason is None:
            layers[name] = module
        elif is_supported(module) or isinstance(module, nn.modules.conv._ConvNd) or (
                include is not None and any(fnmatch.fnmatchcase(name, p) for p in include)):
            # NOTE: only layers named explicitly (or convs) are reported, not every LayerNorm under a prefix.
            skipped.append(f"{name}: {reason}")
    if not layers:
        known = [n for n, m in named if unsupported_reason(m) is None][:12]
        names = {n for n, _ in chosen} | {s.split(":")[0] for s in own}
        selected = [s for s in skipped if s.split(":")[0] in names]
        if selected:
            raise ConfigError(f"one_shot: none of the selected layers can be pruned: {'; '.join(selected)}. "
                              f"Prunable layers include: {', '.join(known) or 'none'}.")
        raise ConfigError(
            f"one_shot: no layer to prune matched include={list(include) if include is not None else None}, "
            f"ignore={list(ignore)}; expected Linear, Conv1D or Conv2d layers. Prunable layers include: "
            f"{', '.join(known) or 'none'}. Fix the name patterns."
        )
    return layers


def _check_pattern(layers: Mapping[str, nn.Module], pattern: Pattern) -> None:
    for name, module in layers.items():
        rows, cols = matrix_shape(module)
        if pattern.kind == "nm" and cols % pattern.m:
            raise ConfigError(f"one_shot: layer '{name}' has W[out, in] = [{rows}, {cols}]; an {pattern} pattern "
                              f"needs 'in' divisible by {pattern.m}. Leave it out with ignore=['{name}'] or use "
                              "'unstructured'.")
        if pattern.kind == "nm" and isinstance(module, nn.Conv2d) and module.in_channels % pattern.m:
            raise ConfigError(f"one_shot: Conv2d '{name}' has {module.in_channels} input channels; an {pattern} "
                              f"pattern groups {pattern.m} consecutive input channels at each kernel position, so "
                              f"needs them divisible by {pattern.m}. Leave it out with ignore=['{name}'] or use "
                              "'unstructured'.")
        if pattern.kind == "block" and (rows % pattern.block[0] or cols % pattern.block[1]):
            raise ConfigError(f"one_shot: layer '{name}' has W[out, in] = [{rows}, {cols}], not divisible by the "
                              f"{pattern} block. Leave it out with ignore=['{name}'] or choose another block.")


def _relative_error(before: torch.Tensor, after: torch.Tensor, gram: torch.Tensor) -> float:
    """``‖(W − Ŵ)X‖ / ‖WX‖`` from the Gram matrix ``XXᵀ``: ``tr(ΔW G ΔWᵀ) / tr(W G Wᵀ)``."""
    delta = before - after
    num = ((delta @ gram) * delta).sum().item()
    den = ((before @ gram) * before).sum().item()
    return math.sqrt(max(num, 0.0) / den) if den > 0 else 0.0


@dataclass
class _Job:
    entry: Entry
    sparsity: float
    pattern: Pattern
    blocksize: int
    percdamp: float
    backup: dict[str, dict[str, torch.Tensor]] | None
    skipped: list[str]
    bar: Any


def _write(module: nn.Module, pruned: torch.Tensor) -> str | None:
    """Write ``pruned`` into ``module``. A parametrized weight must then be exactly ``pruned`` as the
    forward computes it; where the parametrization cannot hold it (spectral_norm, orthogonal,
    weight_norm with a row all zero) the weight is put back and the reason returned."""
    if not parametrize.is_parametrized(module, "weight"):
        set_matrix(module, pruned)
        return None
    saved = {n: p.detach().clone() for n, p in module.named_parameters()}
    dtype = module.weight.dtype
    expected = pruned.to(dtype).float()
    tol = max(1e-4, 8 * torch.finfo(dtype).eps)
    failure = "the weight its forward computes from them is not the pruned one"
    try:
        set_matrix(module, pruned)
        used = get_matrix(module)
        if torch.equal(used == 0, expected == 0) and torch.allclose(
                used, expected, rtol=tol, atol=tol * float(expected.abs().max().clamp_min(1e-30))):
            return None
    except Exception as error:  # NOTE: a parametrization's right_inverse may refuse any value.
        failure = f"{type(error).__name__}: {error}"
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(saved[n])
    kinds = ", ".join(type(p).__name__ for p in module.parametrizations["weight"])
    return (f"its weight is computed by a parametrization ({kinds}) that cannot hold the pruned weight exactly "
            f"({failure}); remove it first with torch.nn.utils.parametrize.remove_parametrizations(module, "
            "'weight')")


def _prune_block(block: nn.Module, calls: list[Call], layers: dict[str, nn.Module], job: _Job) -> list[LayerReport]:
    """Calibrate and prune ``layers`` of ``block``, one group at a time for sequential methods."""
    groups = [list(layers)]
    if job.entry.meta["sequential"] and len(layers) > 1:
        groups = call_order(block, {m: n for n, m in layers.items()}, calls[0])
    reports = []
    for group in groups:
        stats = collect_stats(block, {n: layers[n] for n in group}, calls)
        for name in group:
            if name not in stats and job.entry.meta.get("needs_data", True):
                job.skipped.append(f"{name}: never ran on the calibration data (its weight may be used without "
                                   "calling the layer, as nn.MultiheadAttention's out_proj); method='magnitude' "
                                   "prunes it without data")
                continue
            job.bar.set_postfix_str(name, refresh=False)
            module, start = layers[name], time.perf_counter()
            weight = get_matrix(module)
            pruned = job.entry.factory(weight, stats.get(name), sparsity=job.sparsity, pattern=job.pattern,
                                       blocksize=job.blocksize, percdamp=job.percdamp)
            seconds = time.perf_counter() - start
            if job.backup is not None:
                job.backup[name] = {n: p.detach().clone() for n, p in module.named_parameters()}
            if (reason := _write(module, pruned)) is not None:
                job.skipped.append(f"{name}: {reason}")
                continue
            error = _relative_error(weight, pruned, stats[name].gram) if name in stats else math.nan
            reports.append(LayerReport(name, tuple(weight.shape), float((pruned == 0).float().mean()),
                                       error, seconds))
    return reports


def _head(model: nn.Module, call: Call) -> str | None:
    """The classifier head of a model without blocks: the last Linear/Conv1D its forward calls."""
    linears = {m: n for n, m in model.named_modules() if n and is_supported(m) and not isinstance(m, nn.Conv2d)}
    if not linears:
        return None
    # NOTE: when no Linear runs on the first batch, fall back to the last one declared.
    return output_layer(model, linears, call) or list(linears.values())[-1]


def _run(model: nn.Module, calls: list[Call], include: Sequence[str] | None, ignore: Sequence[str],
         job: _Job, progress: bool) -> tuple[list[LayerReport], str | None]:
    candidates = find_blocks(model)
    stacks, loose = block_stacks(model, candidates, calls[0]) if candidates else ([], [])
    if candidates and not stacks:
        job.skipped.append(f"{candidates[0][0] or 'the ModuleList'}: its blocks do not feed each other, so the "
                           "model was calibrated as one block")
    elif include is None:
        job.skipped += [f"{name}: its blocks did not run one after the other on the calibration data, so its "
                        "layers were not pruned (name them in include= to prune them)" for name in loose]
    prefixes = [f"{name}." if name else "" for name, _ in stacks]
    head = _head(model, calls[0]) if not stacks and include is None else None
    layers = _select(model, prefixes if stacks else None, include, ignore, head, job.skipped)
    _check_pattern(layers, job.pattern)
    reports: list[LayerReport] = []
    if not stacks:
        with tqdm(total=1, desc=f"one-shot {job.entry.name}", disable=not progress) as job.bar:
            reports += _prune_block(model, calls, layers, job)
            job.bar.update()
        return reports, None
    done: set[str] = set()
    with tqdm(total=sum(len(b) for _, b in stacks), desc=f"one-shot {job.entry.name}",
              disable=not progress) as job.bar:
        # NOTE: stacks go in the order they run (encoder, then decoder), so a later stack's inputs
        # are captured from the model whose earlier stacks are already pruned.
        for (_, blocks), prefix in zip(stacks, prefixes):
            inner = {i: {n: m for n, m in layers.items() if n.startswith(f"{prefix}{i}.")} for i in range(len(blocks))}
            done.update(n for group in inner.values() for n in group)
            last = max((i for i, group in inner.items() if group), default=-1)
            captured = capture_block_inputs(model, blocks, calls) if last >= 0 else []
            for i, block in enumerate(blocks):
                if i > last:
                    break
                if inner[i]:
                    reports += _prune_block(block, captured, inner[i], job)
                if i < last:
                    captured = [with_carried(c, block_output(run_call(block, c))) for c in captured]
                job.bar.update()
        # NOTE: layers named outside the blocks (a pooler, a head) are calibrated on the whole
        # model afterwards, so they see the pruned blocks' outputs.
        outside = {n: m for n, m in layers.items() if n not in done}
        if outside:
            reports += _prune_block(model, calls, outside, job)
    return reports, ", ".join(name for name, _ in stacks)


def _measured(model: nn.Module, reports: list[LayerReport]) -> list[LayerReport]:
    """The reports with the zeros counted in the weights the forward now uses and tied names added;
    a warning for every tied weight, which holds the same zeros under another name."""
    found = []
    for report in reports:
        module = model.get_submodule(report.name)
        names = [f"{report.name}.{n}" for n, _ in module.named_parameters()
                 if n == "weight" or n.startswith("parametrizations.weight.")]
        tied = tuple(t for others in tied_names(model, names).values() for t in others)
        if tied:
            warnings.warn(f"one_shot: pruning '{report.name}' also zeroes {', '.join(repr(t) for t in tied)}: the "
                          "same tensor (tied weights). Untie them first to keep it dense, or leave the layer out.",
                          stacklevel=3)
        zeros = float((get_matrix(module) == 0).float().mean())
        found.append(replace(report, sparsity=zeros, tied=tied))
    return found


def one_shot(model: nn.Module, calibration: Iterable[torch.Tensor | Mapping[str, torch.Tensor] | tuple], *,
             method: str = "wanda", sparsity: float | Any | None = None, pattern: str | Pattern = "unstructured",
             include: Sequence[str] | None = None, ignore: Sequence[str] = (), blocksize: int = 128,
             percdamp: float = 0.01, inplace: bool = False, progress: bool = False) -> OneShotResult:
    """Prune ``model`` in one shot from calibration batches: magnitude, Wanda or SparseGPT.

    The model's repeated blocks (``encoder.layer``, ``transformer.h``, ``model.layers``: every
    outermost ModuleList whose blocks feed each other, so an encoder-decoder's ``encoder.block`` and
    ``decoder.block`` both) are processed in order: the first block's inputs are captured for every
    batch, each block's layers are calibrated and pruned, and the block is re-run to give the next
    block its (pruned) inputs. Block lists go in the order they run, so a decoder is calibrated on
    the pruned encoder's output. A model without such blocks is one block.
    Within a block, SparseGPT prunes the layers in the order they run, layers that read the same
    input (q, k, v) together, each group calibrated on the outputs of the groups already pruned;
    Wanda and magnitude calibrate all of a block's layers in one pass, as Wanda's paper does.

    Args:
        model: the trained model; with ``inplace=False`` (default) it is deep-copied first and never
            changed. With ``inplace=True`` it is pruned in place, and if anything fails every layer
            already pruned gets its original weight back.
        calibration: batches of model inputs: Tensors (positional input), Mappings (keyword inputs,
            e.g. ``input_ids``/``attention_mask``) or DataLoader tuples ``(inputs, targets)``, of
            which only ``inputs`` is used. A lone Tensor or Mapping is one batch. All batches are kept
            in memory. Magnitude pruning uses them only to report each layer's error, and also
            prunes the selected layers the calibration pass never calls.
        method: a name in ``METHODS``: "magnitude", "wanda" or "sparsegpt".
        sparsity: fraction of each layer's weights set to zero, in [0, 1) (a float or a
            ``Target(ratio=...)``); default 0.5. N:M patterns fix it at ``1 - N/M`` and refuse
            another value.
        pattern: "unstructured", N:M such as "2:4" (along the input dim; for a Conv2d, M consecutive
            input channels at each kernel position), or blocks "1x4".
        include, ignore: name patterns (shell-style; a name also selects what is under it); an
            entry matching no module is refused. Default: every Linear/Conv1D/Conv2d inside the
            blocks, or without blocks every layer but the classifier head (the last Linear the
            forward calls).
        blocksize, percdamp: SparseGPT's column block size and Hessian dampening.
        progress: show a tqdm bar over the blocks.
    """
    start = time.perf_counter()
    include = [include] if isinstance(include, str) else include
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    entry = METHODS.get(method)
    pattern = Pattern.parse(pattern)
    sparsity = pattern_sparsity(sparsity_of(sparsity, owner="one_shot"), pattern, owner="one_shot")
    sparsity = 0.5 if sparsity is None else sparsity
    _check_args(sparsity, blocksize, percdamp)
    for what, names in (("include", include or ()), ("ignore", ignore)):
        check_selectors(model, list(names), what, owner="one_shot", matches=lambda n, m, s: _matches(n, [s]),
                        types=False)
    if pattern.kind == "block" and entry.name == "sparsegpt":
        raise ConfigError(f"one_shot: sparsegpt supports 'unstructured' and N:M patterns, not '{pattern}'. "
                          "Use method='wanda' or 'magnitude' for block sparsity.")
    target = model if inplace else copy.deepcopy(model)
    param = next(target.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(calibration, (torch.Tensor, Mapping)):
        calibration = [calibration]  # one batch, not an iterable of rows or of keys
    calls = [as_call(batch, target, device) for batch in calibration]
    if not calls:
        raise ConfigError("one_shot: the calibration data is empty; expected at least one batch of model inputs. "
                          "Pass e.g. 128 samples from the training set.")
    job = _Job(entry, float(sparsity), pattern, blocksize, float(percdamp), {} if inplace else None, [], None)
    modes = modes_of(target)
    target.eval()
    try:
        reports, blocks = _run(target, calls, include, ignore, job, progress)
    except BaseException:
        if job.backup:
            with torch.no_grad():
                for name, saved in job.backup.items():
                    module = target.get_submodule(name)
                    for param_name, value in saved.items():
                        module.get_parameter(param_name).copy_(value)
        raise
    finally:
        restore_modes(modes)
    reports = _measured(target, reports)
    total = sum(r.shape[0] * r.shape[1] for r in reports)
    zeros = sum(r.sparsity * r.shape[0] * r.shape[1] for r in reports)
    return OneShotResult(target, tuple(reports), time.perf_counter() - start, entry.name, str(pattern),
                         zeros / total if total else 0.0, blocks, tuple(job.skipped))
