"""Gradual pruning inside prunekit.recover.train through SparsityCallback, including --resume."""

from __future__ import annotations

from pathlib import Path

import torch
from _sparsity_models import conv_mlp, splits

from prunekit.recover import TrainConfig, train
from prunekit.sparsity import Sparsifier, SparsityCallback
from prunekit.sparsity.masks import masks
from prunekit.recover import checkpoint

_CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.02, seed=1)  # 8 steps per epoch on 256 samples
_SCHEDULE = {"name": "gradual", "start": 2, "end": 14, "frequency": 4}


def _prepared() -> tuple[torch.nn.Module, Sparsifier]:
    model = conv_mlp()
    sparsifier = Sparsifier(0.75, schedule=_SCHEDULE).prepare(model)
    return model, sparsifier


def test_fit_with_the_callback_prunes_gradually_to_the_target() -> None:
    model, sparsifier = _prepared()
    seen: list[float] = []

    class Spy:
        def on_step_end(self, step: int, model: torch.nn.Module, loss: float) -> None:
            seen.append(sparsifier.sparsity_report()[1].sparsity)

    train(model, splits(), _CONFIG, progress=False, callbacks=[SparsityCallback(sparsifier), Spy()])
    schedule = sparsifier.schedule_
    numel = model.fc1.parametrizations.weight.original.numel()
    assert seen == [round(schedule.sparsity_at(t) * numel) / numel for t in range(24)]
    assert sparsifier.step_ == 23 and seen[-1] == 0.75
    sparsifier.finalize()
    assert int((model.fc1.weight == 0).sum()) == 384 and int((model.conv.weight == 0).sum()) == 48


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    straight, sparsifier = _prepared()
    train(straight, splits(), _CONFIG, progress=False, callbacks=[SparsityCallback(sparsifier)])
    first, first_sparsifier = _prepared()
    short = TrainConfig(**{**_CONFIG.model_dump(), "epochs": 1})
    train(first, splits(), short, out_dir=tmp_path, progress=False,
        callbacks=[SparsityCallback(first_sparsifier)])
    saved = checkpoint.load(tmp_path / checkpoint.FILE, torch.device("cpu"))
    saved["config"] = _CONFIG.model_dump()  # NOTE: continue the same run for more epochs
    checkpoint.save(saved, tmp_path / checkpoint.FILE)
    resumed, resumed_sparsifier = _prepared()
    train(resumed, splits(), _CONFIG, out_dir=tmp_path, resume=True, progress=False,
        callbacks=[SparsityCallback(resumed_sparsifier)])
    assert resumed_sparsifier.step_ == 23
    expected, got = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.equal(masks(resumed)["fc1.weight"].mask, masks(straight)["fc1.weight"].mask)
