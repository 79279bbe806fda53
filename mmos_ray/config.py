"""The one config system: pydantic models, one section per stage, loaded from one YAML per experiment.

    from mmos_ray.config import load_config
    cfg = load_config("configs/quickstart.yaml", ["sample.generation.temperature=0.7"])

Sections follow the pipeline (`paths, sample, verify, minimize, mix, train, eval, serve`); each stage
function receives only its own section plus `paths`. Unknown keys and bad values fail at load time with
the dotted path of the key and the fix (`sample.temprature: unknown key (did you mean 'temperature'?)`).
The defaults of `ExperimentConfig` are the local quickstart (`configs/quickstart.yaml` mirrors them), so
`mmos run` with no config runs that.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mmos_ray.core.errors import did_you_mean
from mmos_ray.core.problems import DATASETS, get_dataset, get_split
from mmos_ray.core.prompts import stop_strings
from mmos_ray.core.tir import RoundRules
from mmos_ray.storage import RunLayout, location
from mmos_ray.engines.base import SamplingParams, vllm_available


class ConfigError(ValueError):
    """A config that cannot be used. The message names the file, the key's dotted path and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(Section):
    data_dir: Path | None = Field(None, description="benchmark files; default $MMOS_DATA_DIR or ../shared/data")
    runs_dir: Path | str = Field(Path("runs"), description="each run writes runs/<name>/NN_<stage>/; a folder, "
                                 "or a URI (s3://bucket/runs) kept as written")
    models_dir: Path = Field(Path("models"), description="cache of the built-in models (tiny, smollm2)")
    hub_datasets: bool = Field(False, description="read benchmarks from the Hugging Face hub (needs network)")
    hub_models: bool = Field(False, description="allow model names that are Hugging Face hub ids (needs network)")

    @field_validator("runs_dir", mode="before")
    @classmethod
    def _path_or_uri(cls, value: Any) -> Path | str:
        return location(value)  # a Path would collapse s3://b into s3:/b


class SourceConfig(Section):
    """One problem source: a dataset split, optionally only its first `limit` problems; or, with `path`, a
    file in that dataset's record format (`dataset: generated` for what `mmos generate` wrote)."""

    dataset: str
    path: Path | None = Field(None, description="a JSONL/JSON/Parquet file of problems instead of the data folder's")
    split: str | None = Field(None, description="with `path`: the name the file's problems go by "
                              "(default: the file's name without extension)")
    limit: int | None = Field(None, ge=1)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}")
        return name

    @field_validator("split")
    @classmethod
    def _known_split(cls, split: str | None, info: ValidationInfo) -> str | None:
        dataset = info.data.get("dataset")
        if split is None or dataset is None or info.data.get("path") is not None:
            return split
        splits = DATASETS[dataset].splits
        if split not in splits:
            raise ValueError(f"dataset {dataset!r} has no split {split!r}{did_you_mean(split, splits)}; "
                             f"splits: {', '.join(splits)}")
        return split

    @model_validator(mode="after")
    def _file_given(self) -> "SourceConfig":
        if self.path is None and DATASETS[self.dataset].from_files:
            raise ValueError(f"dataset {self.dataset!r} is read from a file: add `path: FILE` (what `mmos generate` "
                             "wrote)")
        return self

    def resolved_split(self) -> str:
        if self.path is not None:
            return self.split or self.path.stem
        return get_split(get_dataset(self.dataset), self.split)[0]

    @property
    def name(self) -> str:
        """How the benchmark is named in outputs: `dataset/split`."""
        return f"{self.dataset}/{self.resolved_split()}"

OVERRIDES = "overrides of the top-level `generation` section (only the keys set here)"


class GenerationConfig(Section):
    """How a model generates one tool-integrated trajectory: sampling, rounds, prompt and what the model is
    shown of a program's output. The top-level `generation` section is shared; `sample.generation`,
    `eval.generation` and `serve.generation` override only the keys they set (resolved at load time), so a
    model is sampled, evaluated and served with the same observation format unless a section says otherwise."""

    temperature: float = Field(0.6, ge=0, le=2, description="0 = greedy (the paper samples at 0.9)")
    top_p: float = Field(0.95, gt=0, le=1, description="used when temperature > 0")
    max_tokens: int = Field(256, ge=1, description="new tokens per generation round (the paper uses 1024)")
    max_rounds: int = Field(2, ge=1, le=16, description="tool-call rounds per trajectory (the paper allows 4)")
    seed: int = 0
    prompt: Literal["train", "fewshot"] = Field("fewshot", description="train: the MMOS SFT format; "
                                                "fewshot: instructions + worked examples, for untuned models")
    observation: Literal["full", "compat"] = Field("full", description="full: all output, head+tail cut at "
                                                   "observation_chars; compat: ToRA's last line cut at 100")
    observation_chars: int = Field(512, ge=16)

    def rules(self) -> RoundRules:
        return RoundRules(max_rounds=self.max_rounds, observation=self.observation,
                          observation_chars=self.observation_chars)

    def sampling(self, seed: int | None, max_tokens: int | None = None) -> SamplingParams:
        """The engine's parameters for one round (`seed` already offset for the round)."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p if self.temperature > 0 else 1.0,
                              max_tokens=max_tokens or self.max_tokens, seed=seed, stop=stop_strings(self.prompt))


class EngineConfig(Section):
    """Which LLM engine runs a model, and how big its context is."""

    model: str | None = Field(None, description="'tiny', 'smollm2', a model folder, or a hub id (paths.hub_models)")
    backend: Literal["auto", "vllm", "hf"] = Field("auto", description="auto: vLLM when installed, else HF "
                                                   "transformers")
    max_model_len: int = Field(4096, ge=256, description="prompt + generated tokens of a whole trajectory")

    def resolved_backend(self) -> str:
        return self.backend if self.backend != "auto" else ("vllm" if vllm_available() else "hf")


class AdaptiveConfig(Section):
    """Sample in waves until a problem has `target_distinct` distinct correct programs (or `max_samples`)."""

    enabled: bool = False
    wave_size: int = Field(4, ge=1, description="samples per problem per wave")
    target_distinct: int = Field(4, ge=1, description="stop sampling a problem once it has this many distinct "
                                 "correct programs (canonical forms): its minimal set is saturated")
    max_samples: int = Field(64, ge=1, description="cap per problem")
    grader: Literal["compat", "strict"] = "compat"


SAMPLE_ENGINE = {"model": "smollm2"}


def _keeps_defaults(field: str, defaults: dict[str, Any]):
    """A validator: a nested section given in a config updates the field's `defaults` instead of replacing
    them (`sample: {engine: {backend: hf}}` keeps the default model)."""

    def merge(cls, value: Any) -> Any:
        return {**defaults, **value} if isinstance(value, dict) else value

    return field_validator(field, mode="before")(classmethod(merge))


class SampleConfig(Section):
    engine: EngineConfig = Field(default_factory=lambda: EngineConfig(**SAMPLE_ENGINE))
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description=OVERRIDES)
    sources: list[SourceConfig] = Field(default_factory=lambda: [
        SourceConfig(dataset="mawps", split=split, limit=12) for split in ("singleop", "addsub", "multiarith")])
    num_samples: int = Field(8, ge=1, description="sampled paths per problem, k (the paper uses 100)")
    num_engines: int = Field(1, ge=1, description="engine actors (one per GPU; on CPU one per 1-2 cores)")
    batch_size: int = Field(32, ge=1, description="rows per engine call (Ray Data batch)")
    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per program (the paper's 5 s)")
    sandbox_actors: int | None = Field(None, ge=1, description="default: the CPUs the engines leave free, >= 1")
    custom_resources: Literal["auto", "on", "off"] = Field(
        "auto", description="engine actors ask for the cluster's `engine` resource, sandbox actors for `sandbox`: "
        "auto: when a node (or a node type the cluster reports) offers it; on: always (an autoscaler then starts "
        "such workers); off: never")
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)

    _engine_defaults = _keeps_defaults("engine", SAMPLE_ENGINE)

    @model_validator(mode="after")
    def _has_model(self) -> "SampleConfig":
        if not self.engine.model:
            raise ValueError("sample.engine.model is required: 'tiny', 'smollm2', a model folder or a hub id")
        return self


class VerifyConfig(Section):
    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per program")
    grader: Literal["compat", "strict"] = "compat"
    num_workers: int | None = Field(None, ge=1, description="verify actors; default: one per CPU")
    batch_size: int = Field(256, ge=1, description="trajectories per actor call")
    custom_resources: Literal["auto", "on", "off"] = Field(
        "auto", description="verify actors ask for the cluster's `sandbox` resource: auto: when a node (or a "
        "node type the cluster reports) offers it; on: always (an autoscaler then starts such workers); off: never")


class MinimizeConfig(Section):
    k: int = Field(3, ge=0, description="diverse paths kept per problem besides the main path")
    selection: Literal["diverse", "random"] = Field("diverse", description="diverse: greedy farthest-point "
                                                    "by edit distance; random: the seeded random baseline")
    key: Literal["canonical", "mmos"] = Field("canonical", description="canonical: our key over all blocks; "
                                              "mmos: the original MMOS key (rationale + first block + first output)")
    sweep: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 5, 10],
                             description="k values whose set sizes the manifest reports (any k is rank <= k)")
    seed: int = 42


class MixConfig(Section):
    rates: dict[str, float] = Field(default_factory=dict, description="per source ('gsm8k/train'): fraction "
                                    "(<=1) or row count (>1); sources not named keep everything")
    decontaminate: bool = True
    decontaminate_against: list[str] | None = Field(["gsm8k/test", "svamp/test", "mawps/singleeq"], description="evaluation splits ('svamp/test'); "
                                                    "default: every evaluation split in the data directory")
    ngram: int = Field(13, ge=3, description="word n-gram length for decontamination")
    seed: int = 0


class TrainConfig(Section):
    base_model: str = Field("smollm2", description="'tiny', 'smollm2', a model folder, or a hub id (paths.hub_models)")
    data: Path | None = Field(None, description="SFT file (Parquet or JSONL with prompt, completion); default: "
                              f"this run's {RunLayout.MIX}/{RunLayout.SFT}")
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: Literal[2, 3] = 2
    offload_optimizer: bool = Field(False, description="ZeRO optimizer state on the CPU (for models that do "
                                    "not fit otherwise; DeepSpeedCPUAdam)")
    bf16: bool | Literal["auto"] = Field("auto", description="auto: on GPUs that support it; fp32 on CPU")
    gradient_checkpointing: bool = False
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU)")
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    global_batch_size: int = Field(2, ge=1, description="examples (packed rows) per optimizer step, all workers")
    micro_batch_size: int = Field(1, ge=1, description="rows per forward pass per worker")
    epochs: int = Field(4, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    max_length: int = Field(512, ge=16, description="tokens per example (truncated) and per packed row")
    packing: bool = Field(False, description="several examples per row, no attention across them")
    mask_outputs: bool = Field(False, description="no loss on interpreter outputs either (besides the prompt)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints; 0: only at the end")
    seed: int = 0


class EvalConfig(Section):
    benchmarks: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(dataset="svamp", limit=24),
                                                                   SourceConfig(dataset="mawps", split="singleeq", limit=24)])
    models: list[Literal["base", "trained"]] = Field(default_factory=lambda: ["base", "trained"],
                                                     description="the run's base model and/or the model stage 05 trained")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="engine.model: a model to evaluate "
                                 "instead of eval.models (its folder or name); null: the run's models")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description=OVERRIDES)
    base_prompt: Literal["train", "fewshot"] | None = Field(None, description="prompt for the base model; "
                                                            "null: generation.prompt")
    trained_prompt: Literal["train", "fewshot"] = Field("train", description="prompt for the trained model "
                                                        "(train: the SFT format it learned)")
    num_samples: int = Field(2, ge=1, description="1 with temperature 0 = greedy pass@1; n > 1 adds maj@k, pass@k")
    batch_size: int = Field(32, ge=1)
    grader: Literal["compat", "strict"] = "compat"


class AutoscalingConfig(Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="requests in progress per replica to aim for")


# /v1/solve serves the trained model: its SFT prompt, greedy unless the config or the request says otherwise;
# rounds, tokens and the observation format are the shared section's (those the model was sampled with).
SERVE_GENERATION = {"prompt": "train", "temperature": 0.0}


class ServeConfig(Section):
    engine: EngineConfig = Field(default_factory=EngineConfig, description="engine.model: a model folder or "
                                 "name; null: the model stage 05 trained")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(**SERVE_GENERATION),
                                         description=OVERRIDES + "; the defaults of /v1/solve's requests")
    model_id: str | None = Field(None, description="the name clients send as `model`; default: the folder's name")
    vllm_server: Literal["auto", "ray_llm", "replica"] = Field(
        "auto", description="who runs vLLM: ray_llm (Ray Serve LLM), replica (our deployment, the engine in "
        "its process); auto: ray_llm on GPU, replica on CPU (lower latency there)")
    host: str = Field("127.0.0.1", description="0.0.0.0 exposes the server to the network: set an api_key")
    dashboard: bool = Field(False, description="the local Ray that `mmos serve` starts runs Ray's dashboard "
                            "(127.0.0.1:8265); off by default: on a small CPU machine its processes take CPU "
                            "from the engine (benchmarks/serve_latency.py)")
    port: int = Field(8000, ge=1, le=65535)
    api_key: str | None = Field(None, description="required as `Authorization: Bearer KEY`; default: "
                                "$MMOS_SERVE_API_KEY, and no key when that is unset")
    replicas: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="engine replicas")
    max_concurrent: int = Field(16, ge=1, description="requests in progress per HTTP replica")
    max_queued: int = Field(64, ge=0, description="requests waiting per HTTP replica; beyond: 429")
    queue_timeout_s: float = Field(30.0, gt=0, description="waited longer for a slot: 503")
    retry_after_s: int = Field(1, ge=1, description="the Retry-After header of 429 and 503")
    max_request_bytes: int = Field(65536, ge=1024)
    max_request_tokens: int = Field(1024, ge=1, description="the most tokens one request (one /v1/solve round) "
                                    "may ask for")
    max_n: int = Field(8, ge=1, description="the most choices per request")
    sandbox_workers: int = Field(2, ge=1, description="fork servers per HTTP replica for /v1/solve's programs")

    _generation_defaults = _keeps_defaults("generation", SERVE_GENERATION)


STAGE_GENERATION = ("sample", "eval", "serve")  # the sections with a `generation` of their own


class ExperimentConfig(Section):
    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9_.-]+$")
    paths: PathsConfig = Field(default_factory=PathsConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="shared by sample, eval "
                                         "and serve; each may override keys in its own `generation`")
    sample: SampleConfig = Field(default_factory=SampleConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    minimize: MinimizeConfig = Field(default_factory=MinimizeConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _resolve_generation(self) -> "ExperimentConfig":
        """Each stage's `generation` becomes the shared section updated with the keys the stage set itself."""
        for section in (getattr(self, name) for name in STAGE_GENERATION):
            own = section.generation.model_dump(exclude_unset=True)
            resolved = self.generation.model_copy(update=own)
            section.__dict__["generation"] = resolved  # no re-validation: both sides are valid already
        return self

    @property
    def layout(self) -> RunLayout:
        """Where this run's stage folders and files are (`paths.runs_dir/<name>/`, a folder or a URI)."""
        return RunLayout.of_run(self.paths.runs_dir, self.name)

    @property
    def run_dir(self) -> Path:
        """The run's local folder, where the stages read and write."""
        layout = self.layout
        if not layout.is_local:
            raise ConfigError(f"paths.runs_dir={self.paths.runs_dir}: runs on object storage are not supported yet; "
                              "set paths.runs_dir to a local folder or a shared mount of the bucket")
        return layout.root


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (None = the built-in quickstart) and apply dotted `key=value` overrides."""
    data: dict[str, Any] = {}
    if path:
        data = _read_yaml(Path(path))
        data.setdefault("name", Path(path).stem)
    for override in overrides or []:
        _apply_override(data, override)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, Path(path) if path else None, overrides or [])) from None


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, in pipeline order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def section_hash(*sections: BaseModel, extra: str = "") -> str:
    """A short stable hash of config sections (and `extra`, e.g. the upstream stage's hash)."""
    payload = json.dumps([extra, *(s.model_dump(mode="json") for s in sections)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; the shipped ones are in configs/")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (paths, sample, ...), "
                          f"got {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], override: str) -> None:
    """`a.b.c=value` (value parsed as YAML; list items by index: `eval.benchmarks.0.limit=5`)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. sample.generation.temperature=0.7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node: Any = data
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {override}: {'.'.join(parts[:i])} is a list of {len(node)} items; "
                                  f"{part!r} is not an index into it")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {override}: {'.'.join(parts[:i])} is a value, not a section")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = _default_container(parts[: i + 1], override)
            node = node[part]


def _default_container(parts: list[str], override: str) -> Any:
    """A copy of the default at a dotted path, so that `eval.benchmarks.0.limit=5` edits the default list.

    An unknown path gives an empty section (validation then names the unknown key); a path through a
    plain value is an error here.
    """
    # Stage `generation` sections are overrides: copying their resolved defaults would pin every key.
    node: Any = ExperimentConfig().model_dump(mode="json", exclude={s: {"generation"} for s in STAGE_GENERATION})
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return {}
    if node is not None and not isinstance(node, (dict, list)):
        raise ConfigError(f"--set {override}: {'.'.join(parts)} is a value, not a section")
    return node if node is not None else {}


def _explain(exc: ValidationError, path: Path | None, overrides: list[str]) -> str:
    lines = [f"invalid config ({path or 'the built-in defaults'}):"]
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        dotted = ".".join(loc)
        override = next((o for o in overrides if o.split("=", 1)[0].strip() == dotted), None)
        if override:
            where = f"--set {override}: "
        else:
            line = _yaml_line(path, loc) if path else None
            where = f"{path}:{line}: " if line else ""
        if error["type"] == "extra_forbidden":
            known = _fields_at(loc[:-1])
            nested = _nested_home(loc)
            hint = f" (it lives in {nested})" if nested else did_you_mean(loc[-1], known)
            lines.append(f"  {where}{dotted}: unknown key{hint}; keys here: {', '.join(known)}")
        elif error["type"] == "value_error":
            lines.append(f"  {where}{dotted}: {error['msg'].removeprefix('Value error, ')}")
        else:
            given = error.get("input")
            shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
            lines.append(f"  {where}{dotted}: {error['msg']}{shown}")
    return "\n".join(lines)


def _nested_home(loc: list[str]) -> str | None:
    """Where a generation or engine key given directly in a stage section belongs (`sample.temperature` is
    `sample.generation.temperature`), or None."""
    if len(loc) != 2 or loc[0] not in STAGE_GENERATION:
        return None
    for name, model in (("generation", GenerationConfig), ("engine", EngineConfig)):
        if loc[1] in model.model_fields:
            return f"{loc[0]}.{name}.{loc[1]}"
    return None


def _yaml_line(path: Path, loc: list[str]) -> int | None:
    """The 1-based line of the key at `loc` in the YAML file, or of its closest present parent."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the model at a location path (list indices skipped)."""
    model: Any = ExperimentConfig
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _model_of(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `SourceConfig`, `list[SourceConfig]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
