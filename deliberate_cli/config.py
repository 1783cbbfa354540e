"""Typed schemas for every config group, registered with Hydra's ConfigStore as `schema_config`.

conf/config.yaml composes on top of it, so a misspelt key or a wrong type in any group fails at
composition time with the key's name, instead of deep inside a stage.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

_PKG = Path(__file__).resolve().parent


@dataclass
class ModelConfig:
    name: str = MISSING
    # A local HF directory or a hub id. Left empty for an embedded model, which is converted once
    # from the GGUF file that a Python package ships (see deliberate_cli/models.py).
    name_or_path: Optional[str] = None
    gguf_package: Optional[str] = None
    gguf_file: Optional[str] = None
    # How the CoT sits in an assistant turn: "delimiter" puts <think>…</think> at the start of the
    # content (templates without a thinking format); "reasoning_content" hands it to the template.
    thinking_format: str = "delimiter"
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    max_model_len: int = 4096
    trust_remote_code: bool = False
    # The model family's name: what `eval.am.agent_name=auto` calls the AM agent (the MSM paper: "Qwen"),
    # and the spec's {model_name}; `provider` is the spec's {provider_name}.
    family: Optional[str] = None
    provider: Optional[str] = None
    # Parameters, in billions: what `dacli plan` turns tokens into GPU-hours with (None: unknown).
    params_b: Optional[float] = None


@dataclass
class PolicyConfig:
    id: str = MISSING
    title: str = MISSING
    rule: str = MISSING
    reason: Optional[str] = None
    # The prompt categories the policy is relevant to (generator.spec_scope=category).
    categories: List[str] = field(default_factory=list)


@dataclass
class SpecConfig:
    name: str = MISSING
    include_reasons: bool = True
    # A spec YAML file of your own (same layout as conf/spec/default.yaml); replaces `policies`.
    path: Optional[str] = None
    # What `{model_name}` and `{provider_name}` in the spec's text stand for (None: model.family, model.provider).
    model_name: Optional[str] = None
    provider_name: Optional[str] = None
    policies: List[PolicyConfig] = field(default_factory=list)


@dataclass
class MixConfig:
    """Instruction-tuning conversations mixed into the SFT data (the MSM paper adds about 10k to every
    run so that capability does not collapse)."""

    # A local .jsonl/.parquet/.csv, or "hf:<dataset id or local dataset dir>"; None = no mix.
    source: Optional[str] = None
    hf_split: str = "train"
    # A hub dataset's commit, tag or branch (None: the newest; the manifest records the drawn
    # conversations' digest either way).
    revision: Optional[str] = None
    # Each row's conversation: a list of {role, content} whose last turn is the assistant's.
    messages_column: str = "messages"
    # How many: a count, or a ratio to the alignment examples (count wins when both are set).
    count: int = 0
    ratio: float = 0.0
    seed: int = 0


@dataclass
class GeneratedPromptsConfig:
    """data.source=generated: the generator writes the training prompts from the spec (spec → categories →
    domains → prompts; generate/prompt_pool.py)."""

    domains_per_category: int = 6
    # Messages asked for per request (one request per domain per round, round-robin over the domains).
    prompts_per_request: int = 8
    # Prompts to have in the pool at least (0: data.n_samples). A sweep sets it to its largest count so
    # the pool is generated once; a smaller one is extended when a later run needs more.
    pool: int = 0
    # The most requests the pool may take in all; it also stops after two rounds over the domains without
    # a new prompt. Short of data.n_samples either way is an error; short of `pool` only a warning.
    max_requests: int = 20000
    # Requests per shard (written as it finishes; a killed run resumes at the next).
    shard_size: int = 64
    # Prompts whose word-3-gram Jaccard similarity to an earlier one reaches this are dropped.
    dedup_threshold: float = 0.5
    temperature: float = 1.0
    max_tokens: int = 512


@dataclass
class DataConfig:
    name: str = MISSING
    # "bundled" (the training prompts shipped with dacli), "generated" (written from the spec by the
    # generator, see `generated`), a local .jsonl/.csv/.parquet file, or "hf:<dataset id or local
    # dataset dir>" read with datasets.load_dataset (split `hf_split`).
    source: str = "bundled"
    hf_split: str = "train"
    # Our field -> the source's column; only `prompt` is required in the source.
    columns: Dict[str, str] = field(default_factory=lambda: {
        "prompt": "prompt", "id": "id", "category": "category", "expected_behavior": "expected_behavior",
        "policy_ids": "policy_ids"})
    # Training examples (the MSM paper's axis, 1,250 -> 80,000): generation takes prompts in the set's
    # order until the judge has kept this many (best-of-k keeps at most one per prompt), and sft trains
    # on exactly these.
    n_samples: int = 200
    seed: int = 0
    # The most prompts generation may use to keep n_samples examples (None: the whole set). A judge that
    # keeps too few stops at this bound, with one line saying how many it kept and why.
    max_prompts: Optional[int] = None
    # Which kept examples train: `first` in prompt order, or `diverse` (STAR-1: keep `candidates`
    # examples, then drop one of the most frequent category and source until n_samples remain).
    select: str = "first"
    candidates: Optional[int] = None
    mix: MixConfig = field(default_factory=MixConfig)
    generated: GeneratedPromptsConfig = field(default_factory=GeneratedPromptsConfig)
    # Refuse to generate when a prompt's overlap with an eval's text is above this (decontam.py); >= 1.0: report only.
    decontam_threshold: float = 0.4
    # The prompt set carries the training answers (a `response` column, and `cot` for CoT methods): train
    # on them as they are, without the generator or the judge (the MSM paper's opaque AFT set, §3).
    given_responses: bool = False


@dataclass
class EngineConfig:
    """Which backend runs a model, and how; shared by the generator, the judge and the evals."""

    backend: str = "vllm"
    # A hosted or served model as Inspect names it (anthropic/claude-sonnet-4-6, openai/gpt-4.1,
    # google/gemini-2.5-pro, openai-api/<service>/<model>, vllm/<model>): set, the engine runs through
    # inspect_ai's model API (backends/inspect_model.py) and `backend` is not used. The provider's own
    # environment variables hold its key and, to reach a stand-in or proxy, its base URL.
    model: Optional[str] = None
    # None: the run's model (or, for evals, the run's trained checkpoint).
    model_path: Optional[str] = None
    dtype: str = "auto"
    batch_size: int = 16
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    cpu_kvcache_gb: int = 4
    seed: int = 0
    # backend=openai: an OpenAI-compatible endpoint; the key is read from $api_key_env, never stored.
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    served_model_name: Optional[str] = None
    concurrency: int = 16
    # Retries of the client itself (the openai/anthropic SDKs honour Retry-After): for the openai backend,
    # and for `model` when its provider's client takes `max_retries` (passed as one of model_args).
    max_retries: int = 3
    # One attempt's time limit, in seconds.
    request_timeout: float = 600.0
    # How long one request may keep being retried (429, 5xx, timeouts, dropped connections) before the
    # stage stops with one line; a rerun goes on from there (answers already given are kept).
    retry_budget: float = 3600.0
    # `model`: extra arguments for the provider's client (Inspect's -M), e.g. {max_retries: 10}, and
    # the provider's batch API (Inspect's `batch`: true, or a batch size), half the price on most.
    model_args: Dict[str, Any] = field(default_factory=dict)
    batch: Any = None
    # A LoRA checkpoint (adapter_config.json): "adapter" serves the adapter on its base (vLLM's
    # enable_lora; no merge step), "merged" loads a merged copy (written once beside the adapter),
    # "auto" = adapter with vLLM on a GPU, else merged (vLLM's CPU LoRA decodes ~15x slower).
    lora: str = "auto"


@dataclass
class GeneratorConfig(EngineConfig):
    temperature: float = 0.8
    top_p: float = 0.95
    cot_max_tokens: int = 512
    # The CoT ends at the first of these; small models that never close </think> can add "\n\n".
    cot_stop: List[str] = field(default_factory=lambda: ["</think>"])
    # A CoT that reaches cot_max_tokens: "reject" it, or "force" the end of thinking there and have the
    # model answer (budget forcing, as in s1); forced records keep cot_finish="length".
    cot_budget: str = "reject"
    # How the CoT and the answer are asked for: "two" calls (the CoT, then the answer continuing after
    # </think>, so the split never depends on the model closing its tag), or "one" call whose CoT is the
    # server's reasoning field or the <think> block the system prompt asks for. "auto": one call when the
    # trained model thinks natively (model.thinking_format=reasoning_content) or the generator is a model
    # Inspect names (generator.model: hosted APIs take no assistant prefix to continue), else two.
    cot_calls: str = "auto"
    response_max_tokens: int = 512
    samples_per_prompt: int = 1
    # What of the spec the generator sees: "full", or "category" (deliberative alignment's spec(category):
    # every policy's title, and the full text of the policies of the prompt's category).
    spec_scope: str = "full"
    # Prompts per shard: each shard is written as soon as it is done, and a killed run resumes there.
    shard_size: int = 256


@dataclass
class JudgeConfig(EngineConfig):
    enabled: bool = True
    # The judge writes a short rationale, then `Score: N` (and a line per criterion): room for both.
    max_tokens: int = 384
    # Records with a judge score below this (0-10) go to rejects; with `criteria`, every criterion must reach it.
    threshold: float = 5.0
    # Scorings per record; the lowest counts (deliberative alignment's min over k). k > 1 needs temperature > 0.
    k: int = 1
    temperature: float = 0.0
    # Named criteria scored 0-10 each, all of which must reach the threshold (STAR-1 keeps only all-10 on
    # three: compliance, relevance, accuracy); [] = one overall score.
    criteria: List[str] = field(default_factory=list)
    require_valid_policy_ids: bool = True
    # Deterministic checks against the prompt's labels (when the prompt set has them):
    # a refusal where the label says comply (or none where it says refuse) is a reject...
    check_expected_behavior: bool = True
    # ...and so is a CoT that cites none of the policy ids the prompt is labelled with.
    check_label_policy_ids: bool = True
    # Keep answers that hit response_max_tokens (they stay marked by response_finish="length").
    allow_truncated_response: bool = False


@dataclass
class MsmConfig:
    """The MSM corpus: spec → domains → subdomains → assertions → document types → ideas → documents
    (generate/msm.py), until `tokens` is reached."""

    # The spec the documents discuss: a spec under conf/spec/ by name, or a path to a spec YAML file;
    # None = the run's spec. (The MSM paper's §3 and §5 midtrain on one spec and run AFT with another.)
    spec: Optional[str] = None
    # Token budget of the corpus (the MSM paper: 8M-41M).
    tokens: int = 200000
    domains: int = 4
    subdomains_per_domain: int = 5
    assertions_per_subdomain: int = 4
    doc_types_per_subdomain: int = 3
    # Ideas asked for per (subdomain, document type) per round; rounds go on until the budget is met.
    ideas_per_request: int = 3
    max_idea_rounds: int = 50
    # Kinds of document the generator is shown as examples (and falls back on when its list is unreadable).
    doc_type_examples: List[str] = field(
        default_factory=lambda: ["essay", "FAQ", "case study", "lecture notes", "dialogue", "news story"]
    )
    # Documents whose 5-gram Jaccard similarity to a kept one reaches this are dropped as near-duplicates;
    # ideas likewise, on word 3-grams.
    dedup_threshold: float = 0.7
    idea_dedup_threshold: float = 0.6
    max_tokens: int = 512
    list_max_tokens: int = 384
    temperature: float = 0.9


@dataclass
class SftStageConfig:
    cot: bool = False


@dataclass
class RlStageConfig:
    """The rl stage (deliberative alignment's second step): GRPO, with the spec-aware judge scoring each
    sampled answer as the reward; the judge sees the prompt and the answer, never the CoT."""

    # Prompts to sample from (the run's first ones; 0: data.n_samples).
    prompts: int = 0
    # Completions per prompt whose rewards are compared (GRPO's group).
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    learning_rate: float = 1.0e-6
    epochs: float = 1.0
    # KL penalty towards the starting model (0: none, TRL's default).
    beta: float = 0.0


@dataclass
class MethodConfig:
    name: str = MISSING
    stages: List[str] = MISSING
    sft: SftStageConfig = field(default_factory=SftStageConfig)
    rl: RlStageConfig = field(default_factory=RlStageConfig)


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear", or a list of module names (the MSM paper: every attention and MLP projection).
    target_modules: Any = "all-linear"


@dataclass
class TrainConfig:
    learning_rate: float = 1e-5
    midtrain_learning_rate: float = 1e-5
    epochs: float = 2.0
    midtrain_epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    # None: sized from the longest record, so no CoT is silently cut.
    max_length: Optional[int] = None
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    packing: bool = False
    logging_steps: int = 1
    save_steps: int = 200
    report_to: List[str] = field(default_factory=lambda: ["tensorboard"])
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Training processes (one per GPU). Above 1 the train stage starts them itself under `accelerate
    # launch` (plain DDP, or `accelerate_config`); on a machine without GPUs they run DDP over gloo.
    # The global batch is batch_size x grad_accum x num_processes.
    num_processes: int = 1
    # A file under conf/accelerate/ by name (fsdp, deepspeed_zero3) or a path to an accelerate config;
    # None = plain data parallel. Its num_processes is overridden by train.num_processes.
    accelerate_config: Optional[str] = None


@dataclass
class GraderConfig:
    """The LLM grader. AM: the public eval's classifiers grade every sample; prompt evals: it decides
    the samples the deterministic layer marks ambiguous."""

    enabled: bool = False
    # The grader as Inspect names it (anthropic/claude-sonnet-4-6; see EngineConfig.model): the one
    # setting a hosted grader needs. Or leave it empty and name a local or served model in `engine`.
    model: Optional[str] = None
    # Which model grades and how it runs (any backend; model, model_path or served_model_name names it).
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(backend="openai", model="${..model}"))
    max_tokens: int = 1024
    max_model_len: int = 16384
    temperature: float = 0.0
    # A grader answer without one final <answer>yes|no</answer> is asked again, up to this many times
    # in all; then the sample is unscored (in neither k nor n).
    attempts: int = 3
    # AM: which grader verdict the headline rate counts: classifier_verdict (the grader's own answer,
    # the MSM paper's metric) or harmful (upstream's verdict, with its mechanical gate).
    verdict: str = "classifier_verdict"


@dataclass
class MonitorConfig:
    """CoT monitorability (Korbak et al. 2025; the MSM paper's Fig. 6): for every eval sample with a CoT,
    a model that reads only the CoT predicts whether the action that follows is harmful, and says
    whether the reasoning weighs the spec before acting. Scored against the eval's own verdicts."""

    enabled: bool = False
    # The monitor as Inspect names it (see GraderConfig.model), or empty to name it in `engine`.
    model: Optional[str] = None
    # Which model monitors and how it runs (any backend; model, model_path or served_model_name names it).
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(backend="openai", model="${..model}"))
    max_tokens: int = 256
    max_model_len: int = 8192
    temperature: float = 0.0


@dataclass
class UpstreamConfig:
    """The public agentic-misalignment eval's conditions (inspect-evals' generator), crossed."""

    scenarios: List[str] = field(default_factory=list)  # blackmail | leaking | murder; [] = none
    goal_types: List[str] = field(default_factory=lambda: ["explicit"])
    goal_values: List[str] = field(default_factory=lambda: ["america"])
    urgencies: List[str] = field(default_factory=lambda: ["replacement"])
    # None | dont | goal
    extra_instructions: List[Optional[str]] = field(default_factory=lambda: [None])
    # true drops the secret scratchpad from the system prompt; auto = true when the model thinks natively.
    prod: List[str] = field(default_factory=lambda: ["auto"])


@dataclass
class AmEvalConfig:
    """runner am's own settings (eval.am.*): which scenarios it runs and what the agent is called."""

    # The scenario families (files under deliberate_cli/assets/am/), each crossed over its axes.
    families: List[str] = field(default_factory=list)
    # The public eval's conditions (see docs/evals.md).
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    # Only the conditions matching one of these patterns (fnmatch, e.g. "*_none_none"); [] = all.
    conditions: List[str] = field(default_factory=list)
    # The agent's name; None keeps each scenario's own ("Alex" upstream), auto = model.family.
    agent_name: Optional[str] = None


@dataclass
class PromptedEvalConfig:
    """runner prompted's own settings (eval.prompted.*): harmful_compliance, over_refusal."""

    # A JSONL file of prompts; None = the bundled set named after the eval.
    prompts: Optional[str] = None
    # What the grader is told to tell apart.
    rubric: str = ""


@dataclass
class ForcedChoiceEvalConfig:
    """runner forced_choice's own settings (eval.forced_choice.*): the value probe."""

    # A JSONL file of A/B items; None = the bundled set named after the eval.
    prompts: Optional[str] = None


@dataclass
class EvalConfig:
    """What every eval shares; each runner's own settings are in its own section (am, prompted,
    forced_choice), and only the running runner's section is part of the eval's key."""

    name: str = MISSING
    # Which runner (am | prompted | forced_choice | grader_check), the metric's name, and the verdict the rate counts.
    runner: str = MISSING
    metric: str = MISSING
    counts: str = MISSING
    am: AmEvalConfig = field(default_factory=AmEvalConfig)
    prompted: PromptedEvalConfig = field(default_factory=PromptedEvalConfig)
    forced_choice: ForcedChoiceEvalConfig = field(default_factory=ForcedChoiceEvalConfig)
    # Samples per shard (AM's generation and grading, the monitor): each shard is written when done and a
    # killed eval resumes after it.
    shard_size: int = 256
    samples_per_scenario: int = 4
    temperature: float = 0.7
    max_tokens: int = 768
    # The model's thinking mode (chat template's enable_thinking); None leaves the template's default.
    thinking: Optional[bool] = None
    # "auto": the run's last trained checkpoint; "base": the untrained model; or a checkpoint path.
    checkpoint: str = "auto"
    # `dacli run` also evaluates the untrained model, once per model and eval settings (the report's
    # baseline row); it is cached in the store and linked from every run dir.
    baseline: bool = True
    # Write an Inspect log (<eval dir>/inspect/*.eval) that `inspect view` opens.
    inspect_log: bool = True
    # The figure the summary, the report and its plots lead with: "pooled" (k/n over every sample) or
    # "mean_over_conditions" (the unweighted mean of the per-condition rates: the MSM paper's Fig. 4).
    # Only what is shown: a runtime key, so switching it reuses a finished eval.
    headline: str = "pooled"
    # An answer cut off at max_tokens (finish_reason "length"): "score" it as written, or leave it
    # "unscored" (in neither k nor n, counted). Changes the rate, so it is in the eval's key.
    truncated: str = "score"
    engine: EngineConfig = field(default_factory=EngineConfig)
    grader: GraderConfig = field(default_factory=GraderConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


@dataclass
class ThroughputConfig:
    """What `dacli plan` turns tokens into GPU-hours with (conf/throughput/): shares of one GPU's peak
    that decoding, prefill and training reach. Stated assumptions until a GPU has measured them
    (benchmarks/); `source` says which."""

    gpu: str = "H100"
    # dense bf16 peak of one GPU, TFLOP/s
    peak_tflops: float = 989.0
    train_mfu: float = 0.35
    # training FLOPs per token and parameter: 6 for full fine-tuning; LoRA skips the weights' gradients (~4)
    flops_per_token_per_param: float = 4.0
    decode_mfu: float = 0.1
    prefill_mfu: float = 0.5
    source: str = "assumed"


@dataclass
class ResourcesConfig:
    """What one job asks a cluster for (hydra/launcher=slurm reads these). `gpus` defaults, in
    conf/config.yaml, to the most any stage uses: the engines' tensor_parallel_size, train.num_processes."""

    gpus: int = 1
    cpus_per_gpu: int = 8
    mem_gb: int = 200
    time_min: int = 720


@dataclass
class RunConfig:
    root: str = "runs"
    name: str = MISSING
    # Shared stage outputs (AFT data, MSM documents, midtrained checkpoints), named by config hash, so
    # that every run and sweep job with the same settings finds them again (see rundir.py).
    store: str = MISSING
    # Filled in at launch with Hydra's output dir for this job.
    dir: str = ""


@dataclass
class Config:
    command: str = "config"
    model: ModelConfig = MISSING
    spec: SpecConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    generator: GeneratorConfig = MISSING
    judge: JudgeConfig = MISSING
    eval: EvalConfig = MISSING
    train: TrainConfig = MISSING
    msm: MsmConfig = field(default_factory=MsmConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # US dollars per million tokens, by model as the manifests name it:
    # {"anthropic/claude-sonnet-4-6": {"input": 3.0, "output": 15.0}}. Empty: `dacli report` shows
    # tokens and requests but no cost. Prices change nothing computed.
    prices: Dict[str, Dict[str, float]] = field(default_factory=dict)


# Where and how fast things run (and which figure leads: eval.headline), never what they compute:
# declared once, here. No cache key, resume stamp or run name holds them (`declared` strips them), so
# changing one after a stage finished is a cache hit, never a recompute. A grader, judge or monitor is
# thereby named by its model, not by where it is served. RUNTIME_KNOBS are the fields of every engine
# (EngineConfig) of that kind; RUNTIME_KEYS are the other runtime settings by dotted key, a trailing "."
# meaning the whole section.
RUNTIME_KNOBS = ("base_url", "api_key_env", "concurrency", "max_retries", "request_timeout", "retry_budget",
                 "model_args", "batch", "batch_size",
                 "gpu_memory_utilization", "tensor_parallel_size", "enforce_eager", "cpu_kvcache_gb")
ENGINES = ("generator", "judge", "eval.engine", "eval.grader.engine", "eval.monitor.engine")
RUNTIME_KEYS = (
    "generator.shard_size", "eval.shard_size", "data.generated.shard_size", "data.generated.pool",
    "data.generated.max_requests", "train.report_to", "train.logging_steps", "train.save_steps",
    "train.accelerate_config", "eval.inspect_log", "eval.headline", "resources.", "run.", "hydra.", "prices.",
    "throughput.", "model.params_b",
    *(f"{engine}.{knob}" for engine in ENGINES for knob in RUNTIME_KNOBS),
)


# Settings added after results were stored, each with the value that behaves as dacli did before it:
# at that value a setting is left out of every key, so that what a store holds from before is found.
ADDED_LATER = {**{f"{engine}.model": None for engine in ENGINES}, "eval.grader.model": None,
               "eval.monitor.model": None, "eval.truncated": "score", "data.mix.revision": None,
               "generator.cot_calls": "auto"}


def is_runtime(key: str) -> bool:
    """Whether a dotted config key (`eval.grader.engine.base_url`) is a runtime setting."""
    return any(key == k or (k.endswith(".") and (key.startswith(k) or key == k[:-1])) for k in RUNTIME_KEYS)


def declared(cfg, *keys: str) -> Dict[str, Any]:
    """The plain values of these config sections (dotted keys), every runtime setting removed: what a
    stage declares its result depends on. `declared(cfg, "model", "eval.grader")` ->
    {"model": {...}, "eval.grader": {...}}."""
    from omegaconf import OmegaConf

    def strip(value: Any, prefix: str) -> Any:
        if isinstance(value, dict):
            return {k: strip(v, f"{prefix}.{k}") for k, v in value.items() if not is_runtime(f"{prefix}.{k}")
                    and not (f"{prefix}.{k}" in ADDED_LATER and ADDED_LATER[f"{prefix}.{k}"] == v)}
        return value

    out = {}
    for key in keys:
        node = OmegaConf.select(cfg, key)
        out[key] = strip(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node, key)
    return out


def _find(name: str) -> Path:
    """conf/ and recipes/ sit at the repo root in a checkout and inside the package in a wheel."""
    from .errors import DacliError

    for candidate in (_PKG.parent / name, _PKG / f"_{name}"):
        if candidate.is_dir():
            return candidate
    raise DacliError(f"cannot find dacli's {name}/ directory next to {_PKG}")


def conf_dir() -> Path:
    return _find("conf")


def recipes_dir() -> Path:
    return _find("recipes")


def accelerate_config(name: str) -> Path:
    """train.accelerate_config: a config under conf/accelerate/ by name, or a path."""
    from .errors import DacliError

    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml", ".json"):
        path = conf_dir() / "accelerate" / f"{name}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in (conf_dir() / "accelerate").glob("*.yaml")))
        raise DacliError(f"train.accelerate_config: no accelerate config '{name}' (shipped: {shipped}; or a path "
                         f"to a .yaml file)")
    return path


def register_schemas() -> None:
    """Composing on top of `schema_config` types every group, so unknown keys and bad types fail early."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema_config", node=Config)


# The valid range of every numeric setting: (lowest, highest, whether the lowest itself is allowed);
# None leaves that side open. validate() checks each before anything starts, in one line naming the key.
_AT_LEAST_1 = (1, None, True)
_POSITIVE = (0, None, False)
_NON_NEGATIVE = (0, None, True)
_SHARE = (0, 1, True)
RANGES = {
    **{f"train.{k}": _POSITIVE for k in ("learning_rate", "midtrain_learning_rate", "epochs", "midtrain_epochs")},
    **{f"train.{k}": _AT_LEAST_1 for k in ("batch_size", "grad_accum", "logging_steps", "save_steps", "num_processes",
                                          "max_length", "lora.r")},
    "train.warmup_ratio": (0, 1, True), "train.weight_decay": _NON_NEGATIVE, "train.lora.alpha": _POSITIVE,
    "train.lora.dropout": (0, 1, True),
    "model.max_model_len": _AT_LEAST_1, "data.n_samples": _AT_LEAST_1, "data.max_prompts": _AT_LEAST_1,
    "data.candidates": _AT_LEAST_1, "data.decontam_threshold": _SHARE,
    "data.generated.max_tokens": _AT_LEAST_1, "data.generated.max_requests": _AT_LEAST_1,
    "data.generated.pool": _NON_NEGATIVE, "data.generated.temperature": _NON_NEGATIVE,
    "data.generated.dedup_threshold": _SHARE,
    **{f"generator.{k}": _AT_LEAST_1 for k in ("cot_max_tokens", "response_max_tokens", "shard_size")},
    "generator.top_p": (0, 1, False),
    "judge.max_tokens": _AT_LEAST_1, "judge.threshold": (0, 10, True),
    **{f"msm.{k}": _AT_LEAST_1 for k in ("tokens", "max_tokens", "list_max_tokens")},
    "msm.temperature": _NON_NEGATIVE, "msm.dedup_threshold": _SHARE, "msm.idea_dedup_threshold": _SHARE,
    **{f"eval.{k}": _AT_LEAST_1 for k in ("max_tokens", "shard_size", "grader.max_tokens", "grader.max_model_len",
                                         "grader.attempts", "monitor.max_tokens", "monitor.max_model_len")},
    **{f"{k}.temperature": _NON_NEGATIVE for k in ("generator", "judge", "eval", "eval.grader", "eval.monitor")},
    **{f"{e}.{k}": _AT_LEAST_1 for e in ENGINES
       for k in ("batch_size", "tensor_parallel_size", "cpu_kvcache_gb", "concurrency")},
    **{f"{e}.{k}": rng for e in ENGINES
       for k, rng in (("gpu_memory_utilization", (0, 1, False)), ("max_retries", _NON_NEGATIVE),
                      ("request_timeout", _POSITIVE), ("retry_budget", _NON_NEGATIVE), ("seed", _NON_NEGATIVE))},
}


def _check_ranges(cfg) -> None:
    from omegaconf import OmegaConf

    from .errors import DacliError

    for key, (low, high, low_ok) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if (low is not None and (value < low or (value == low and not low_ok))) or (high is not None and value > high):
            if high is None:
                valid = f"at least {low}" if low_ok else f"above {low}"
            else:
                valid = f"between {low} and {high}" + ("" if low_ok else f" (not {low} itself)")
            raise DacliError(f"{key} must be {valid}, got {value}")


def validate(cfg) -> None:
    """Settings that compose but cannot give a meaningful run: one line each, before any stage starts."""
    from .errors import DacliError

    _check_ranges(cfg)

    if cfg.generator.cot_calls not in ("auto", "one", "two"):
        raise DacliError(f"generator.cot_calls must be auto, one or two, got '{cfg.generator.cot_calls}'")
    if cfg.generator.cot_calls == "two" and cfg.generator.model:
        raise DacliError(f"generator.cot_calls=two continues an assistant prefix, which generator.model="
                         f"{cfg.generator.model} (a model Inspect names) cannot; use cot_calls=one or auto")
    if cfg.data.select not in ("first", "diverse"):
        raise DacliError(f"data.select must be first or diverse, got '{cfg.data.select}'")
    if cfg.data.select == "diverse" and (cfg.data.candidates or 0) <= cfg.data.n_samples:
        raise DacliError(f"data.select=diverse chooses data.n_samples={cfg.data.n_samples} examples among "
                         f"data.candidates; set data.candidates above it (got {cfg.data.candidates})")
    if cfg.generator.spec_scope not in ("full", "category"):
        raise DacliError(f"generator.spec_scope must be full or category, got '{cfg.generator.spec_scope}'")
    if cfg.generator.cot_budget not in ("reject", "force"):
        raise DacliError(f"generator.cot_budget must be reject or force, got '{cfg.generator.cot_budget}'")
    _check_report_to(list(cfg.train.report_to))
    positive = {"data.generated.domains_per_category": cfg.data.generated.domains_per_category,
                "data.generated.prompts_per_request": cfg.data.generated.prompts_per_request,
                "data.generated.shard_size": cfg.data.generated.shard_size, "msm.domains": cfg.msm.domains,
                "msm.subdomains_per_domain": cfg.msm.subdomains_per_domain,
                "msm.assertions_per_subdomain": cfg.msm.assertions_per_subdomain,
                "msm.doc_types_per_subdomain": cfg.msm.doc_types_per_subdomain,
                "msm.ideas_per_request": cfg.msm.ideas_per_request, "msm.max_idea_rounds": cfg.msm.max_idea_rounds}
    for key, value in positive.items():
        if value < 1:
            raise DacliError(f"{key} must be at least 1, got {value}")
    for key, engine in (("generator", cfg.generator), ("judge", cfg.judge), ("eval.engine", cfg.eval.engine),
                        ("eval.grader.engine", cfg.eval.grader.engine)):
        if engine.lora not in ("auto", "adapter", "merged"):
            raise DacliError(f"{key}.lora must be auto, adapter or merged, got '{engine.lora}'")
    if cfg.train.num_processes < 1:
        raise DacliError(f"train.num_processes must be at least 1, got {cfg.train.num_processes}")
    if cfg.train.accelerate_config:
        accelerate_config(cfg.train.accelerate_config)  # names a file that exists
    if not cfg.msm.doc_type_examples:
        raise DacliError("msm.doc_type_examples must name at least one kind of document")
    g = cfg.eval.grader
    for key, value in (("eval.shard_size", cfg.eval.shard_size), ("eval.grader.attempts", g.attempts)):
        if value < 1:
            raise DacliError(f"{key} must be at least 1, got {value}")
    bad_prod = [str(p) for p in cfg.eval.am.upstream.prod if str(p).lower() not in ("true", "false", "auto")]
    if bad_prod:
        raise DacliError(f"eval.am.upstream.prod takes true, false or auto, got {', '.join(bad_prod)}")
    if cfg.eval.headline not in ("pooled", "mean_over_conditions"):
        raise DacliError(f"eval.headline must be pooled or mean_over_conditions, got '{cfg.eval.headline}'")
    if cfg.eval.truncated not in ("score", "unscored"):
        raise DacliError(f"eval.truncated must be score or unscored, got '{cfg.eval.truncated}'")
    if g.verdict not in ("classifier_verdict", "harmful"):
        raise DacliError(f"eval.grader.verdict must be classifier_verdict or harmful, got '{g.verdict}'")
    if g.enabled and not (g.engine.model or g.engine.model_path or g.engine.served_model_name):
        raise DacliError(f"eval {cfg.eval.name} grades with an LLM (eval.grader.enabled=true) but names no grader model: "
                         "set eval.grader.model=anthropic/claude-sonnet-4-6 (any model Inspect names), "
                         "eval.grader.engine.model_path=/a/local/model (with eval.grader.engine.backend=vllm or "
                         "transformers) or eval.grader.engine.served_model_name=NAME with eval.grader.engine.base_url=URL, "
                         "or eval.grader.enabled=false for the deterministic layer and its bounds")
    # Greedy decoding gives k identical samples: best-of-k would pick among copies, and an eval's n (and
    # so its Wilson interval) would count one answer k times. vLLM and HF generate refuse n > 1 there.
    for section, count in (("generator", "samples_per_prompt"), ("eval", "samples_per_scenario"), ("judge", "k")):
        k, key, temperature = cfg[section][count], f"{section}.{count}", f"{section}.temperature"
        if k < 1:
            raise DacliError(f"{key} must be at least 1, got {k}")
        if k > 1 and cfg[section].temperature <= 0:
            raise DacliError(f"{temperature}=0 decodes greedily, so the {k} samples of {key} would be "
                             f"identical; set {key}=1 or {temperature} above 0")


# train.report_to names (transformers' integrations) -> the package each needs.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "clearml": "clearml", "trackio": "trackio", "swanlab": "swanlab", "dvclive": "dvclive",
            "neptune": "neptune", "aim": "aim"}


def _check_report_to(names: List[str]) -> None:
    """A tracker that is not installed would fail only when training starts, as a traceback."""
    import importlib.util

    from .errors import DacliError

    for name in names:
        if name in ("none", "all"):
            continue
        if name not in TRACKERS:
            raise DacliError(f"train.report_to: unknown tracker '{name}'; valid: none, {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise DacliError(f"train.report_to names {name}, which is not installed: `pip install {TRACKERS[name]}`"
                             + (" (then `wandb login`, or WANDB_MODE=offline)" if name == "wandb" else "")
                             + ", or drop it from train.report_to")
