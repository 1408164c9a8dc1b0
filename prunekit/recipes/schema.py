"""The recipe file, validated into typed stages (pydantic): what a run does, as plain data.

A recipe names a model and data and lists stages in order; each stage is a one-key mapping from
its kind to its options::

    model: resnet20
    data: fashion-mnist
    stages:
      - train: {epochs: 2}
      - prune: {schedule: [{target: {ratio: 0.2}, importance: l1, finetune_epochs: 1},
                           {target: {ratio: 0.5}, importance: l2, finetune_epochs: 1}]}
      - finetune: {epochs: 1, distill: {temperature: 4.0, alpha: 0.7}}
      - evaluate: {}

Every stage's options are the keyword arguments of one library call with the same names (see
``prunekit.recipes.stages``). Training options are :class:`~prunekit.recover.TrainConfig`'s fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    field_validator,
    model_validator,
)

from prunekit.recover.config import TrainConfig
from prunekit.structured.allocate import AUTO_RULE, valid_round_to
from prunekit.structured.target import Target

__all__ = ["Recipe", "ModelSpec", "DataSpec", "STAGE_KINDS", "option_names", "stage_kind", "stage_options"]

_STRICT = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(BaseModel):
    """``prunekit.models.resolve(name, weights=...)``: the same specs as the CLI's ``--model``;
    classes and input channels follow image data."""

    model_config = _STRICT
    name: str = Field(description="a model spec: a registry name (resnet20), timm:NAME, hf:FOLDER, "
                                  "path/to/file.py:factory, package.module:factory or a saved folder")
    weights: str | None = Field(None, description="safetensors file of trained weights")


class DataSpec(BaseModel):
    """``prunekit.data.load(name, data_dir=...)``: the same data as the CLI's ``--data``."""

    model_config = _STRICT
    name: str = Field("fashion_mnist", description="a registered dataset, a .npz file, an image folder, "
                                                   "a datasets.save_to_disk folder or a text file")
    data_dir: str | None = Field(None, description="folder holding the dataset's files")
    image_size: int | tuple[int, int] | None = Field(
        None, description="resize every image of an image folder to N x N or [H, W] (the CLI's --image-size)")


class Distill(BaseModel):
    """Knowledge distillation from the model as it was before the recipe's first compressing stage
    (prune, gates, sparsify, decompose): the trained model when the recipe starts with ``train``."""

    model_config = _STRICT
    temperature: float = Field(4.0, gt=0, description="softening temperature T")
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the teacher's term")


class TrainOptions(TrainConfig):
    """``train``: TrainConfig's fields (epochs, lr, optimizer, ...)."""


class FinetuneOptions(TrainConfig):
    """``finetune``: TrainConfig's fields, plus optional distillation from the original model."""

    distill: Distill | None = Field(None, description="distil from the original model")


class DistillOptions(TrainConfig):
    """``distill``: fine-tune with distillation (``finetune`` with ``distill`` set)."""

    temperature: float = Field(4.0, gt=0, description="softening temperature T")
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the teacher's term")


class PruneStep(BaseModel):
    """One step of a pruning schedule: prune to ``target`` (relative to the stage's input model)
    with ``importance``, then fine-tune ``finetune_epochs``."""

    model_config = _STRICT
    target: Target
    importance: str | None = Field(None, description="importance for this step (default: the stage's)")
    finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning after this step")


def _round_to(value: Any) -> int | str:
    if valid_round_to(value):
        return value
    raise ValueError(f"must be 'auto' or a whole number >= 1; got {value!r}. Use 8 to keep widths "
                     f"multiples of 8, 1 for exact widths, auto for {AUTO_RULE}")


RoundTo = Annotated[int | str, PlainValidator(_round_to)]
_ROUND_TO = f"kept widths rounded up to this multiple; 'auto': {AUTO_RULE}"


def _checked_options(options: type[Any], value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``value`` unchanged once ``options`` (the library's own options class) accepts it: a stage's
    free-form ``options`` are checked by the rules of the step they go to, before any work."""
    from prunekit.config import parse_config

    if value is not None:
        parse_config(options, value)
    return value


class PruneOptions(BaseModel):
    """``prune``: StructuredPruner's arguments, or a ``schedule`` of steps (ratio rising, importance switching)."""

    model_config = _STRICT
    target: Target | None = Field(None, description="ratio removed, or macs/params/latency kept")
    importance: str = Field("l2", description="how channels are scored (`prunekit prune --help` lists them)")
    scope: Literal["local", "global"] = "local"
    round_to: RoundTo = Field("auto", description=_ROUND_TO)
    ignore: list[str] = Field(default_factory=list, description="module names never cut")
    steps: int = Field(1, ge=1, description="reach the target in this many steps")
    finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning after pruning (and between steps)")
    schedule: list[PruneStep] | None = Field(None, description="explicit steps (instead of target/steps)")
    options: dict[str, Any] | None = Field(None, description="PrunerOptions (layer ratios, caps)")
    calibration_batches: int = Field(4, ge=1, description="training batches for data-driven importance")
    finetune: TrainConfig | None = Field(None, description="training options of the fine-tuning between "
                                         "and after steps (epochs: finetune_epochs); default: those of "
                                         "the recipe's last train/finetune stage")
    allocation: Literal["search"] | None = Field(None, description="'search': apply the allocation the "
                                                 "previous search stage chose (no target or schedule)")
    max_metric_drop: float | None = Field(None, ge=0, description="lose at most this much of the validation "
                                          "metric (0.01: one accuracy point): the target is the deepest cut "
                                          "allowed; each try is fine-tuned finetune_epochs (prune --max-metric-drop)")
    tries: int = Field(5, ge=1, description="cuts tried under max_metric_drop: the target, then a bisection")

    @field_validator("options")
    @classmethod
    def _pruner_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from prunekit.structured.pruner import PrunerOptions

        return _checked_options(PrunerOptions, value)

    @model_validator(mode="after")
    def _one_way(self) -> PruneOptions:
        if self.allocation == "search":
            if self.target is not None or self.schedule is not None:
                raise ValueError("a prune stage with allocation: search applies the search stage's widths; "
                                 "remove its 'target' and 'schedule'")
            return self
        if self.max_metric_drop is not None and self.target is None:
            raise ValueError("a prune stage with max_metric_drop needs a 'target' (the deepest cut allowed), "
                             "e.g. target: {macs: 0.25}")
        if (self.target is None) == (self.schedule is None):
            raise ValueError("a prune stage needs exactly one of 'target' (with optional 'steps') or "
                             "'schedule' (a list of {target, importance, finetune_epochs}); "
                             "e.g. target: {macs: 0.5}")
        return self


class GatesOptions(TrainConfig):
    """``gates``: train Hard Concrete gates to a MACs budget for ``epochs``, then harden them."""

    target: Target = Field(description="the MACs budget, e.g. {macs: 0.5} (half the dense MACs)")
    warmup_steps: int = Field(0, ge=0, description="steps over which the budget falls to the target")
    init_log_alpha: float = Field(3.0, description="initial gate log-alpha (3: fully open)")
    init_importance: str | None = Field(None, description="data-free importance that spreads the initial "
                                                          "log-alphas (l2, l1, bn_scale); null: all equal")
    ignore: list[str] = Field(default_factory=list, description="module names never gated")
    round_to: RoundTo = Field("auto", description=_ROUND_TO)
    gate_lr: float | None = Field(0.1, gt=0,
                                  description="Adam learning rate of the gates (null: the stage's optimizer)")
    distill: Distill | None = Field(None, description="distil from the original model while the gates train")


class SparsifyOptions(TrainConfig):
    """``sparsify``: ``prunekit.sparsity.sparsify_model`` — masks (one-shot or on a schedule while
    fine-tuning ``epochs``) or one-shot calibration (wanda, sparsegpt); zeros kept during fine-tuning."""

    epochs: int = Field(0, ge=0, description="fine-tuning epochs under the masks (gradual: >= 1)")
    importance: Literal["magnitude", "random", "taylor", "movement"] = Field(
        "magnitude", description="how weights are scored for the masks")
    method: Literal["wanda", "sparsegpt"] | None = Field(
        None, description="a one-shot calibration algorithm instead of masks from importance")
    sparsity: float | None = Field(0.5, ge=0, lt=1, description="fraction of weights set to zero")
    pattern: str = Field("unstructured", description="unstructured, N:M (2:4) or blocks (4x4)")
    scope: Literal["layer", "global"] = "layer"
    schedule: Literal["one_shot", "gradual", "iterative"] = "one_shot"
    ramp: float = Field(0.75, gt=0, le=1, description="fraction of fine-tuning over which sparsity ramps")
    updates: int = Field(20, ge=1, description="mask updates during the ramp")
    ignore: list[str] = Field(default_factory=list, description="module names left dense")
    calibration_batches: int = Field(8, ge=1, description="training batches for calibration methods")

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        from prunekit.sparsity import Pattern

        Pattern.parse(value)  # NOTE: the library's parser: its error names what it takes
        return value

    @model_validator(mode="after")
    def _sparsifier_takes(self) -> SparsifyOptions:
        from prunekit.sparsity import Sparsifier

        # NOTE: the Sparsifier's own rules (pattern, sparsity against it, scope), checked before any work
        Sparsifier(self.sparsity, pattern=self.pattern, importance=self.importance, scope=self.scope
                   ).validate_params()
        return self


class DecomposeStageOptions(BaseModel):
    """``decompose``: ``prunekit.decompose.decompose`` (method, and one of rank / energy / target), or
    ``allocation: search``: the ranks the previous search stage chose (``search: {ranks: true}``)."""

    model_config = _STRICT
    method: Literal["auto", "svd", "asvd", "tucker", "cp"] = "auto"
    rank: int | float | list[int] | Literal["vbmf"] | None = Field(None, description="rank, fraction or vbmf")
    energy: float | None = Field(None, gt=0, le=1, description="fraction of squared singular values kept")
    target: Target | None = Field(None, description="the MACs budget, e.g. {macs: 0.5}; ranks chosen to meet it")
    include: list[str] | None = Field(None, description="module-name patterns to consider")
    ignore: list[str] = Field(default_factory=list, description="module-name patterns to leave alone")
    calibration_batches: int = Field(8, ge=1, description="training batches for asvd")
    options: dict[str, Any] | None = Field(None, description="DecomposeOptions (force, cp iterations, ...)")
    allocation: Literal["search"] | None = Field(None, description="'search': factorise each layer at the method "
                                                 "and rank the previous search stage chose (no other option)")

    @field_validator("options")
    @classmethod
    def _decompose_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from prunekit.decompose import DecomposeOptions

        return _checked_options(DecomposeOptions, value)

    @model_validator(mode="after")
    def _one_way(self) -> DecomposeStageOptions:
        if self.allocation == "search":
            given = [k for k in ("method", "rank", "energy", "target", "include", "ignore", "calibration_batches",
                                 "options") if k in self.model_fields_set]
            if given:
                raise ValueError(f"a decompose stage with allocation: search applies the search stage's methods "
                                 f"and ranks; remove its {', '.join(repr(k) for k in given)}")
        return self


class EvaluateOptions(BaseModel):
    """``evaluate``: the task's metrics (accuracy and loss, perplexity...) on one split, with a
    profile (latency optional); ``test`` falls back to ``val`` for data without a test split."""

    model_config = _STRICT
    split: Literal["train", "val", "test"] = "test"
    latency: bool = Field(False, description="also measure latency (PyTorch and ONNX Runtime)")


class ExportOptions(BaseModel):
    """``export``: weights + layout record (``prunekit.load``), and optionally ONNX."""

    model_config = _STRICT
    onnx: bool = Field(True, description="also write model.onnx")


class QatOptions(TrainConfig):
    """``qat``: quantisation-aware fine-tuning for ``epochs`` (TrainConfig's fields): torchao's PT2E
    QAT flow, or fake-quantised weights where the model does not trace; a later ``quantize`` stage
    writes the int8 file. The first ``fp32_epochs`` of them train in fp32 (delayed quantisation)."""

    fp32_epochs: int = Field(0, ge=0, description="of the epochs, how many train in fp32 before fake "
                                                  "quantisation starts (a freshly pruned model recovers first)")

    @model_validator(mode="after")
    def _some_quantised(self) -> QatOptions:
        if self.fp32_epochs >= self.epochs:
            raise ValueError(f"fp32_epochs ({self.fp32_epochs}) must be below epochs ({self.epochs}): at least "
                             f"one epoch trains under fake quantisation. Lower fp32_epochs or raise epochs.")
        return self


class QuantizeOptions(BaseModel):
    """``quantize``: int8 of the current model, an ONNX file by ONNX Runtime or a PyTorch module by torchao
    (``prunekit quantize``'s options)."""

    model_config = _STRICT
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="activation calibration")
    calibration_batches: int = Field(8, ge=1, description="training batches observed for activation ranges")
    per_channel: bool = Field(True, description="one weight scale per output channel")
    dynamic: bool = Field(False, description="dynamic int8 of MatMul/Gemm (transformers) instead of static QDQ")
    max_metric_drop: float | None = Field(None, ge=0, description="keep the most damaging layers fp32 until "
                                                                  "the validation metric drops by at most this")
    backend: Literal["onnxruntime", "torch"] = Field("onnxruntime", description="who quantises and runs the int8 "
                                                     "model: ONNX Runtime (int8 ONNX files) or PyTorch via torchao")
    compile: bool = Field(False, description="torch backend: run the int8 model through torch.compile (static "
                                             "int8 needs it)")

    @model_validator(mode="after")
    def _backend_takes(self) -> QuantizeOptions:
        from prunekit.workflows.quantize import check_backend

        check_backend(self.backend, dynamic=self.dynamic, compile=self.compile, method=self.method,
                      max_metric_drop=self.max_metric_drop, recipe=True)
        return self


class SensitivityOptions(BaseModel):
    """``sensitivity``: the proxy metric after cutting each channel group (each ratio) and each residual
    block alone; writes ``sensitivity.json`` in the run folder (``prunekit.search.sensitivity``)."""

    model_config = _STRICT
    ratios: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)],
                                description="fractions of each group removed, each in (0, 1)")
    importance: str = Field("l2", description="which channels go first (a data-free importance)")
    depth: bool = Field(True, description="also remove each residual block alone")
    ranks: bool | list[str] = Field(False, description="also factorise each layer alone at each ratio of its rank "
                                    "removed: true (svd for Linear and 1x1 convs, tucker for k x k) or method names")
    bn_batches: int = Field(2, ge=0, description="training batches that re-estimate BatchNorm")
    val_samples: int = Field(1024, ge=1, description="validation samples the proxy is computed on")


class SearchStageOptions(BaseModel):
    """``search``: ``prunekit.workflows.search.search_model`` — per-group widths (and blocks, and layers'
    ranks) under the target with a strategy; writes ``pareto.json``; a following ``prune: {allocation:
    search}`` applies the widths and blocks, a ``decompose: {allocation: search}`` the ranks."""

    model_config = _STRICT
    target: Target = Field(description="the budget, e.g. {macs: 0.25} (a quarter of the dense MACs kept)")
    strategy: Literal["greedy", "backtracking", "nsga2", "tpe", "gp", "rl", "gates", "local", "random"] = "greedy"
    trials: int = Field(40, ge=1, description="proxy evaluations (the search's budget)")
    objectives: list[str] = Field(default_factory=lambda: ["metric", "macs"],
                                  description="Pareto objectives: metric and any of macs, params, latency")
    levels: list[float] = Field(default_factory=lambda: [round(1.0 - 0.1 * i, 1) for i in range(10)],
                                description="kept fractions each group may take")
    round_to: int = Field(1, ge=1, description="kept widths in steps of this many channels")
    depth: bool = Field(False, description="also search which residual blocks to remove")
    ranks: bool | list[str] = Field(False, description="also search each factorisable layer's decomposition: "
                                    "true (svd for Linear and 1x1 conv, tucker for k x k conv) or method names "
                                    "([svd, cp]); fractions of full rank from levels")
    widths: bool = Field(True, description="search the groups' widths (false: every width kept; ranks or "
                                           "depth alone)")
    bn_batches: int = Field(2, ge=0, description="training batches that re-estimate BatchNorm")
    val_samples: int = Field(1024, ge=1, description="validation samples the proxy is computed on")
    proxy_steps: int = Field(0, ge=0, description="fine-tune batches before every proxy evaluation (0: BatchNorm "
                                                  "re-estimation only)")
    finetune_steps: int = Field(0, ge=0, description="fine-tune batches in the proxy's second rung")
    latency_model: Literal["table", "measured"] = Field(
        "table", description="how a latency objective is priced: table (layers timed alone, summed) or "
                             "measured (each configuration's whole model timed, PyTorch)")
    latency_batch_size: int = Field(1, ge=1, description="the batch size latency is timed at (1: one request at a "
                                                         "time); a target's batch_size says it too")
    workers: int = Field(1, description="processes sharing one Optuna study (nsga2, tpe, gp); each rebuilds "
                                        "the current model from OUT/search-state/model/")
    storage: str | None = Field(None, description="the study's Optuna storage (nsga2, tpe, gp): a postgresql:// "
                                                  "or sqlite:/// URL; default: OUT/search-state/study.db")

    @field_validator("workers", mode="before")
    @classmethod
    def _whole_workers(cls, value: Any) -> Any:
        from prunekit.search.study import check_workers

        check_workers(value, "workers")  # NOTE: the CLI's check: no bools, strings or fractions
        return value

    @property
    def timed_batch(self) -> int:
        """The batch size latency is timed at: the target's ``batch_size`` where it gives one."""
        return self.target.batch_size if "batch_size" in self.target.model_fields_set else self.latency_batch_size

    @model_validator(mode="after")
    def _budget_kind(self) -> SearchStageOptions:
        if self.target.kind not in ("macs", "params", "latency"):
            raise ValueError(f"a search stage's target is macs, params or latency kept; got {self.target.kind}")
        both = {"batch_size"} <= self.target.model_fields_set and "latency_batch_size" in self.model_fields_set
        if both and self.target.batch_size != self.latency_batch_size:
            raise ValueError(f"the target's batch_size ({self.target.batch_size}) and latency_batch_size "
                             f"({self.latency_batch_size}) both say the batch latency is timed at; give one")
        from prunekit.search.strategies.optuna_samplers import PARALLEL
        from prunekit.workflows.search import check_dimensions, check_parallel

        check_parallel(self.strategy, self.workers, recipe=True)
        check_dimensions(self.strategy, ranks=self.ranks, widths=self.widths, depth=self.depth,
                         objectives=self.objectives, constraints={self.target.kind: self.target.value},
                         latency_model=self.latency_model, latency_batch_size=self.timed_batch, recipe=True)
        if self.storage is not None:
            if self.strategy not in PARALLEL:
                raise ValueError(f"storage holds an Optuna study, which only {', '.join(PARALLEL)} keep; got "
                                 f"strategy '{self.strategy}'. Use strategy: tpe (or nsga2, gp), or remove storage.")
            _check_storage(self.storage)
        return self


def _check_storage(url: str) -> None:
    """A database URL Optuna's studies can live in (sqlite or postgresql), checked before any stage runs."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        backend = None
    if backend not in ("sqlite", "postgresql"):
        # NOTE: only the scheme of a URL: the rest may hold a password
        shown = f"a '{url.partition(':')[0]}:' URL" if ":" in url else repr(url)
        raise ValueError(f"storage must be a postgresql:// or sqlite:/// database URL; got {shown}. Use e.g. "
                         f"postgresql://user:password@host:5432/database, or remove it for SQLite in "
                         f"OUT/search-state.")


_OPTIONS: dict[str, type[BaseModel]] = {
    "train": TrainOptions, "prune": PruneOptions, "sparsify": SparsifyOptions, "gates": GatesOptions,
    "finetune": FinetuneOptions, "distill": DistillOptions, "decompose": DecomposeStageOptions,
    "evaluate": EvaluateOptions, "export": ExportOptions, "qat": QatOptions,
    "quantize": QuantizeOptions, "sensitivity": SensitivityOptions, "search": SearchStageOptions,
}
STAGE_KINDS: tuple[str, ...] = tuple(_OPTIONS)


def _item(kind: str, options: type[BaseModel]) -> type[BaseModel]:
    """A one-key mapping ``{kind: options}`` as a pydantic model (the union member for ``kind``)."""
    fields = {kind: (options, ... if kind in ("gates", "search") else Field(default_factory=options))}
    from pydantic import create_model

    return create_model(f"{kind.capitalize()}Stage", __config__=_STRICT, **fields)  # type: ignore[call-overload]


_ITEMS = {kind: _item(kind, options) for kind, options in _OPTIONS.items()}


def _tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Stage = Annotated[Union[tuple(Annotated[item, Tag(kind)] for kind, item in _ITEMS.items())],  # type: ignore[misc]  # noqa: UP007
                  Discriminator(_tag, custom_error_type="stage_kind",
                                custom_error_message=f"each stage is one key naming its kind, one of: "
                                                     f"{', '.join(STAGE_KINDS)}")]


def _none_to_empty(value: Any) -> Any:
    """``- evaluate:`` (no options) reads as ``None`` in YAML: treat it as ``{}``."""
    if isinstance(value, dict) and len(value) == 1:
        key, options = next(iter(value.items()))
        if options is None:
            return {key: {}}
    return value


class Recipe(BaseModel):
    """A whole recipe file."""

    model_config = _STRICT
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    task: str | None = Field(None, description="what the metric and loss are: classification, causal_lm, "
                                               "embedding (default: what the data fits; text: causal_lm)")
    seed: int = Field(0, ge=0, description="seed of every stage (stage i uses seed + i)")
    out: str | None = Field(None, description="output folder (the CLI's --out overrides it)")
    profile_latency: bool = Field(False, description="measure latency in the profile after each stage")
    stages: list[Stage] = Field(min_length=1)  # type: ignore[valid-type]

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | None) -> str | None:
        from prunekit import tasks

        if value is not None and value not in tasks.names():
            raise ValueError(f"unknown task {value!r}; expected one of {', '.join(tasks.names())} (or leave "
                             f"it out: the data says)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("model"), str):
            data["model"] = {"name": data["model"]}
        if isinstance(data.get("data"), str):
            data["data"] = {"name": data["data"]}
        if isinstance(data.get("stages"), list):
            data["stages"] = [_none_to_empty(s) for s in data["stages"]]
        return data


def option_names(kind: str) -> tuple[str, ...]:
    """The option keys a stage of ``kind`` takes (``prunekit run --help`` lists them)."""
    return tuple(_OPTIONS[kind].model_fields)


def stage_kind(stage: BaseModel) -> str:
    """The kind of a validated stage (``"prune"``)."""
    return next(iter(type(stage).model_fields))


def stage_options(stage: BaseModel) -> BaseModel:
    """The options object of a validated stage."""
    return getattr(stage, stage_kind(stage))
