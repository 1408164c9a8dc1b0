"""Models written the way people write their own, pruned by prunekit and by Torch-Pruning.

Run by hand (not in CI):

    .venv/bin/python benchmarks/coverage_user.py          # writes benchmarks/COVERAGE_user.md

Each model of ``_user_models.ZOO`` (nanoGPT, Meta's Llama code, a tutorial ViT, YOLOv8-style,
U-Net, ConvNeXt-V2 with GRN, ESPCN, a Conformer, an LSTM and a fastText classifier; then torch's own
nn.TransformerEncoder and nn.Transformer, a top-2 mixture of experts, einsum attention with RoPE, a
channel shuffle with SE, FiLM on two inputs, a TCN with weight norm, a BiGRU, a message-passing GNN,
a Perceiver's latents, MobileViT-style patches, a multi-task model with a dict output, DETR-style learned
queries, a spectral-normed GAN discriminator, a Siamese pair, space-to-depth, capsules, an LSTMCell
loop, masked_fill, involution; then an attention U-Net gate, an FPN, SE with expand_as, a DenseNet loop,
a ConvLSTM, an MLP-Mixer, a tied autoencoder, PointNet, Res2Net, a namedtuple output; then a text CNN,
MBConv, a spatial transformer, a VAE, WaveNet, a deformable conv, Swin written out, a CLIP-style dual
encoder, DLRM, raw-parameter layers, a DCGAN generator, a temporal shift, GhostNet, MixConv, an
orthogonal parametrization; then attention written BLOOM-, fairseq- and Annotated-Transformer style,
packed sequences, a diffusion U-Net, a VQ-VAE, a batch dict input, a TorchScript submodule, BiFPN;
then Meta's Llama code with as many key/value heads as heads and with one, grouped- and multi-query
attention by expand and reshape with 8 heads of 8, SKNet, nn.Bilinear, a Fourier neural operator, a
CRNN, PixelCNN's masked convs, StyleGAN2's modulated conv, the Set Transformer; random init) is pruned
at ratio 0.5 with its outputs kept:

- prunekit: the default path, ``StructuredPruner({"ratio": 0.5}).fit_transform`` (verified against
  the masked model); then the pruned model runs on an input of other sizes, and ``prunekit.save``
  -> ``prunekit.load`` gives the same outputs.
- Torch-Pruning: ``MetaPruner`` with L2 group magnitude at ratio 0.5, the output layers ignored and
  ``nn.MultiheadAttention`` head counts given, as its README shows; then the same two inputs.

"runs" means the forward succeeds and every output has the original's shape; nothing checks
Torch-Pruning's values (it has no verification), so a cut that runs may still compute wrong things.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from _user_models import ZOO  # noqa: E402

TABLE = Path(__file__).parent / "COVERAGE_user.md"


def _call(model: nn.Module, x: Any) -> tuple[torch.Tensor, ...]:
    """The model's output tensors, in order (a tuple, a dict of heads, or one tensor)."""
    from torch.utils._pytree import tree_flatten

    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
    return tuple(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _runs(model: nn.Module, x: Any, want: tuple[torch.Tensor, ...]) -> str:
    try:
        got = _call(model.eval(), x)
    except Exception as exc:  # noqa: BLE001 (any failure is the answer)
        return f"no ({type(exc).__name__})"
    shapes = [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    return "yes" if shapes else "no (output shape)"


def _outputs(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the model's outputs (the last Linear, an LM head, a conv head)."""
    names = {"lm_head", "output", "head", "fc", "fc2", "out", "tail", "head4", "head5", "cls", "seg"}
    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
    found = [m for n, m in model.named_modules() if n.rpartition(".")[2] in names and isinstance(m, layers)]
    return found or [[m for m in model.modules() if isinstance(m, layers)][-1]]


def run_prunekit(name: str) -> dict[str, Any]:
    import prunekit
    from prunekit.measure import count_macs
    from prunekit.structured import StructuredPruner

    build, example, other = ZOO[name]
    model, x, y = build().eval(), example(), other()
    want_x, want_y = _call(model, x), _call(model, y)
    record: dict[str, Any] = {"params": _params(model)}
    pruner = StructuredPruner({"ratio": 0.5})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruned = pruner.fit_transform(model, x)
    except Exception as exc:  # noqa: BLE001
        return {**record, "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    record["fallback"] = [str(w.message)[:160] for w in caught if "failed verification" in str(w.message)]
    record["kept"] = _params(pruned) / record["params"]
    inputs = x if isinstance(x, tuple) else (x,)
    record["macs"] = count_macs(pruned, inputs) / count_macs(model, inputs)
    record["runs_x"], record["runs_y"] = _runs(pruned, x, want_x), _runs(pruned, y, want_y)
    frozen = [r for g in pruner.graph_.groups if not g.prunable for r in g.reasons
              if not r.startswith("model output")]
    record["frozen"] = sorted(set(frozen))
    with tempfile.TemporaryDirectory() as folder:
        try:
            loaded = prunekit.load(prunekit.save(pruned, Path(folder) / "m", original=build()), model=build())
            same = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(_call(loaded, y), _call(pruned, y)))
            record["round_trip"] = "yes" if same else "no (outputs differ)"
        except Exception as exc:  # noqa: BLE001
            record["round_trip"] = f"no ({type(exc).__name__})"
    return record


def run_torch_pruning(name: str) -> dict[str, Any]:
    import torch_pruning as tp

    build, example, other = ZOO[name]
    model, x, y = build().eval(), example(), other()
    want_x, want_y = _call(model, x), _call(model, y)
    record: dict[str, Any] = {"params": _params(model)}
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    try:
        pruner = tp.pruner.MetaPruner(model, x,
                                      importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
                                      ignored_layers=_outputs(model), num_heads=heads)
        pruner.step()
    except Exception as exc:  # noqa: BLE001
        return {**record, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"}
    record["kept"] = _params(model) / record["params"]
    record["runs_x"], record["runs_y"] = _runs(model, x, want_x), _runs(model, y, want_y)
    return record


def _one(tool: str, name: str) -> dict[str, Any]:
    """Each tool and model in a fresh process (Torch-Pruning changes the model in place and may hang)."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import coverage_user as c; "
            f"print('RESULT' + json.dumps(c.run_{tool}({name!r})))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "ran past 600 s"}
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:160]}
    return json.loads(line[len("RESULT"):])


def _p(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def write_table(rows: dict[str, tuple[dict[str, Any], dict[str, Any]]], commit: str) -> str:
    lines = ["# Models written the way people write their own: prunekit and Torch-Pruning", "",
             f"Generated by `.venv/bin/python benchmarks/coverage_user.py` at commit {commit} (torch {torch.__version__}, "
             "CPU). Random init; ratio 0.5 in every group, the model's outputs kept. *prunekit*: the default "
             "`StructuredPruner({'ratio': 0.5}).fit_transform` (verified against the masked dense model), then an "
             "input of other sizes, then `prunekit.save` -> `prunekit.load`. *Torch-Pruning*: `MetaPruner` with "
             "L2 group magnitude, the output layers ignored, `nn.MultiheadAttention` head counts given. *runs*: the "
             "forward succeeds with the original's output shapes (Torch-Pruning's values are not checked: it "
             "has no verification). Torch-Pruning is used through its generic API only; its options for a "
             "particular model (custom pruners, `unwrapped_parameters`, per-layer head counts of hand-written "
             "attention) were not tried, so a failure here is what a user meets first, not a hard limit.", "",
             "| model | params | prunekit: params kept | MACs kept | runs (example / other sizes) | save -> load "
             "| Torch-Pruning: params kept | runs (example / other sizes) | prunekit: groups kept whole (why) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (pk, tpr) in rows.items():
        params = pk.get("params") or tpr.get("params")
        if "error" in pk:
            pk_cells = [f"**failed: {pk['error']}**", "—", "—", "—"]
        else:
            fallback = " (fallback: a group kept whole after verification refused it)" if pk.get("fallback") else ""
            pk_cells = [_p(pk["kept"]) + fallback, _p(pk["macs"]), f"{pk['runs_x']} / {pk['runs_y']}", pk["round_trip"]]
        tp_cells = ([f"failed: {tpr['error']}", "—"] if "error" in tpr else
                    [_p(tpr["kept"]), f"{tpr['runs_x']} / {tpr['runs_y']}"])
        frozen = "; ".join(pk.get("frozen", [])[:3]) or "—"
        lines.append(f"| {name} | {params:,} | " + " | ".join(pk_cells + tp_cells) + f" | {frozen} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    rows = {}
    for name in ZOO:
        rows[name] = (_one("prunekit", name), _one("torch_pruning", name))
        print(f"{name:<28} prunekit {rows[name][0].get('kept', rows[name][0].get('error'))}   "
              f"torch_pruning {rows[name][1].get('kept', rows[name][1].get('error'))}", flush=True)
    TABLE.write_text(write_table(rows, commit))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
