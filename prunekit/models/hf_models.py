"""``hf:PATH`` models: a local Hugging Face folder or config.json -> the matching ``AutoModel...``.

The task picks the class: "causal_lm" -> ``AutoModelForCausalLM``; "classification" ->
``AutoModelForImageClassification`` or ``AutoModelForSequenceClassification``, whichever the
config's model type has (image first); "embedding", "custom" or no task -> ``AutoModel``. Weights
are read from the folder's safetensors only (``local_files_only=True``, ``use_safetensors=True``);
a folder with no weights, or a config.json named directly, gives a randomly initialised model. transformers is an
optional extra (``pip install 'prunekit[hf]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, DataError, DataNotFoundError, require

__all__ = ["TASK_CLASSES", "create", "model_class_name"]

TASK_CLASSES: dict[str | None, tuple[str, ...]] = {
    "causal_lm": ("AutoModelForCausalLM",),
    "classification": ("AutoModelForImageClassification", "AutoModelForSequenceClassification"),
    "embedding": ("AutoModel",),
    "custom": ("AutoModel",),
    None: ("AutoModel",),
}
"""Task name -> the ``AutoModel...`` classes tried, in order; the first that knows the config wins."""

_MAPPINGS = {  # NOTE: the transformers table that says which config types a class supports.
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING",
    "AutoModelForImageClassification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING",
    "AutoModel": "MODEL_MAPPING",
}
# NOTE: prunekit's option names, as the CLI passes them, mapped to Hugging Face config fields.
_CONFIG_NAMES = {"num_classes": "num_labels", "in_channels": "num_channels"}
_TORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def create(path_text: str, *, spec: str, task: str | None = None, options: Mapping[str, Any] | None = None,
           folder_weights: bool = True) -> nn.Module:
    """Build the model in ``path_text`` (a folder with config.json, or a config.json file).

    ``options`` override config fields (``num_classes`` -> ``num_labels``, ``in_channels`` ->
    ``num_channels``); a name the config does not have is an error. ``folder_weights=False``
    ignores the folder's weights (random init of the config).
    """
    transformers = require("transformers", extra="hf", feature=f"Model spec '{spec}'")
    folder, config_file = _locate(path_text, spec)
    config = _read_config(transformers, config_file, spec, dict(options or {}))
    class_name = model_class_name(config, task, spec=spec)
    model_class = getattr(transformers, class_name)
    from_folder = folder_weights and Path(path_text).expanduser().is_dir()
    weights = _weight_files(folder, spec) if from_folder else []
    try:
        if not weights:
            return model_class.from_config(config)
        return model_class.from_pretrained(str(folder), config=config, local_files_only=True,
                                           use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        hint = (" The folder holds manifest.json: load the prunekit result by naming the folder without "
                "'hf:'." if (folder / "manifest.json").is_file() else "")
        raise DataError(f"Model spec '{spec}': {class_name} could not load '{folder}' "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Expected "
                        f"weights saved by save_pretrained for this config.{hint}") from exc


def model_class_name(config: Any, task: str | None, *, spec: str = "hf:") -> str:
    """The ``AutoModel...`` class for ``task`` that supports ``config``'s model type."""
    if task not in TASK_CLASSES:
        known = ", ".join(repr(t) for t in TASK_CLASSES if t)
        raise ConfigError(f"Model spec '{spec}': unknown task {task!r} for a Hugging Face model; expected "
                          f"one of {known} (or none).")
    from transformers.models.auto import modeling_auto
    candidates = TASK_CLASSES[task]
    for name in candidates:
        if type(config) in getattr(modeling_auto, _MAPPINGS[name]):
            return name
    kind = getattr(config, "model_type", type(config).__name__)
    raise ConfigError(f"Model spec '{spec}': the task '{task}' does not fit model type '{kind}': "
                      f"transformers has no {' or '.join(candidates)} for it. Pick another task "
                      f"(e.g. 'embedding'), or a model made for '{task}'.")


def _locate(path_text: str, spec: str) -> tuple[Path, Path]:
    """(folder, config file) for a folder or a config.json path; clear errors for anything else."""
    path = Path(path_text).expanduser().absolute()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise DataNotFoundError(f"Model spec '{spec}': folder '{path}' has no config.json; expected a "
                                    f"Hugging Face model folder (as save_pretrained writes) or a config.json file.")
        return path, config
    if path.is_file():
        if path.suffix != ".json":
            raise ConfigError(f"Model spec '{spec}': '{path}' is not a folder or a .json config; expected "
                              f"hf:path/to/folder or hf:path/to/config.json.")
        return path.parent, path
    raise DataNotFoundError(f"Model spec '{spec}': no such folder or file '{path}'; expected a local "
                            f"Hugging Face folder with config.json (prunekit never downloads). Check the path.")


def _read_config(transformers: Any, config_file: Path, spec: str, options: dict[str, Any]) -> Any:
    overrides = {_CONFIG_NAMES.get(k, k): v for k, v in options.items()}
    if not config_file.read_text(encoding="utf-8", errors="replace").strip():
        raise DataError(f"Model spec '{spec}': '{config_file}' is empty; expected a Hugging Face config "
                        f"(JSON with a 'model_type').")
    try:
        config, unused = transformers.AutoConfig.from_pretrained(
            str(config_file), local_files_only=True, return_unused_kwargs=True, **overrides)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"Model spec '{spec}': '{config_file}' is not a usable Hugging Face config "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Expected "
                        f"JSON with a known 'model_type', as save_pretrained writes.") from exc
    if unused:
        raise ConfigError(f"Model spec '{spec}': the config has no fields {sorted(unused)} to set; pass only "
                          f"fields of {type(config).__name__}.")
    return config


def _weight_files(folder: Path, spec: str) -> list[Path]:
    """The folder's safetensors files; torch-only weights are refused (they could hold pickle)."""
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    torch_files = [name for name in _TORCH_WEIGHTS if (folder / name).is_file()]
    if torch_files:
        raise DataError(f"Model spec '{spec}': '{folder}' holds {torch_files[0]} but no .safetensors; prunekit "
                        f"reads Hugging Face weights from safetensors only. Convert it: load it where you "
                        f"trust it, then model.save_pretrained(folder) writes model.safetensors.")
    return []
