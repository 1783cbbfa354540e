"""`dacli plan`: what a command or a sweep will compute and what it will cost, before anything runs.

Recipe:
1. every job's config, composed as the launcher will compose it (the sweep's values from the command
   line and from the recipe's sweeper), with no model loaded and nothing written;
2. each job's stage outputs, named by the same keys the stages store them under (generate/prompt_pool.py,
   aft.py, msm.py, train/data.py, evals/): an output several jobs share (the AFT data of every count,
   one midtrained checkpoint, the baseline's eval) is counted once;
3. tokens per output, as upper bounds where only a max_tokens setting says how long an answer is, and
   measured on the rendered texts where they exist (the spec, the eval's prompts; 4 characters a token);
4. GPU-hours from the figures in `throughput` (conf/throughput/, shown with the plan: stated
   assumptions until a GPU measures them), and the cost of the hosted models' requests (the grader; a
   hosted generator or judge, which then takes no GPU time) from `prices`.
"""
import itertools
import math
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import rundir
from .errors import DacliError

CHARS_PER_TOKEN = 4  # for texts nobody tokenized yet: a rough, stated average
# The share of prompts whose best-of-k sample a judge keeps, until an AFT entry of the run's settings
# has measured it: a stated guess (the MSM paper does not report its rate).
ASSUMED_KEEP_RATE = 0.5


def tokens_of(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


@dataclass
class Output:
    """One stage output as the store will hold it, with the jobs that need it."""

    kind: str  # prompts | aft | msm | train | eval | baseline | check
    label: str
    jobs: List[str] = field(default_factory=list)
    # what making it costs: generated (decoded) and read (prefilled) tokens on the job's GPUs, tokens
    # trained on, samples, and the requests to hosted models (the grader; a hosted generator or judge)
    # with their tokens: {model: {"requests", "input_tokens", "output_tokens"}}
    decode: int = 0
    prefill: int = 0
    trained: int = 0
    samples: int = 0
    hosted: Dict[str, Dict[str, int]] = field(default_factory=dict)
    params_b: Optional[float] = None
    # AFT data: the prompts it takes to keep its examples, at a keep rate measured or assumed (`rate_from`)
    prompts: int = 0
    examples: int = 0
    keep_rate: float = 1.0
    rate_from: str = ""


@dataclass
class Plan:
    jobs: List[Tuple[str, List[str]]]  # (name, its overrides)
    outputs: Dict[str, Output]
    failing: Dict[str, str]  # job -> why it would stop
    throughput: Dict[str, Any]
    prices: Dict[str, Dict[str, float]]

    def of(self, kind: str) -> List[Output]:
        return [o for o in self.outputs.values() if o.kind == kind]


def sweep_points(overrides: List[str], recipe: Optional[str], multirun: bool) -> List[List[str]]:
    """Every job's overrides: the product of the sweep's values (command line first, then the recipe's
    sweeper params for keys the command line leaves alone), as Hydra's basic sweeper forms it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .compose import load

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as e:  # the parser's own message is several lines
        raise DacliError(f"cannot parse overrides {' '.join(overrides)}: {str(e).splitlines()[0]}") from None
    if not multirun:
        if any(o.is_sweep_override() for o in parsed):
            raise DacliError("comma-separated values sweep only with -m (dacli plan -m ...)")
        return [overrides]
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
            else [o.input_line] for o in parsed]
    first = [a[0] for a in axes]
    given = {o.get_key_element() for o in parsed}
    params = load(first, recipe, with_hydra=True).hydra.sweeper.get("params") or {}
    for key, values in params.items():
        if key not in given:
            o = parser.parse_overrides([f"{key}={values}"])[0]
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                        else [o.input_line])
    return [list(point) for point in itertools.product(*axes)]


def make(command: str, overrides: List[str], multirun: bool,
         given: Optional[Dict[str, Dict[str, float]]] = None) -> Plan:
    """The plan of `dacli COMMAND [-m] OVERRIDES`; the grader's cost at the `given` prices, else the config's."""
    from .compose import _pool_for_sweep, split_recipe
    from .config import validate

    recipe, rest = split_recipe(list(overrides))
    points = sweep_points(rest, recipe, multirun)
    extra = _pool_for_sweep(rest, recipe) if multirun else []
    jobs, outputs, failing = [], {}, {}
    throughput: Dict[str, Any] = {}
    prices: Dict[str, Dict[str, float]] = {}
    for point in points:
        cfg = compose_job([f"command={command}", *point, *extra], recipe)
        validate(cfg)
        name = cfg.run.name
        jobs.append((name, point))
        throughput = _plain(cfg.throughput)
        prices.update(_plain(cfg.prices))
        try:
            for out in _outputs(cfg, command):
                have = outputs.setdefault(out.kind + ":" + out.label, out)
                if have is not out:  # shared: the largest need of any job (an extendable entry grows to it)
                    for attr in ("decode", "prefill", "trained", "samples", "prompts", "examples"):
                        setattr(have, attr, max(getattr(have, attr), getattr(out, attr)))
                    for model, need in out.hosted.items():
                        h = have.hosted.setdefault(model, dict(need))
                        h.update({f: max(h[f], v) for f, v in need.items()})
                have.jobs.append(name)
        except DacliError as e:  # it would stop there; the plan says so and counts the others
            failing[name] = str(e)
    return Plan(jobs, outputs, failing, throughput, given if given is not None else prices)


_COMPOSED: Dict[Tuple, Any] = {}


def compose_job(overrides: List[str], recipe: Optional[str], with_hydra: bool = False):
    """A job's config, as compose.load makes it, but fast across a sweep: Hydra composes each choice of
    config groups once (a sweep over model x method x 7 counts composes 10 times, not 70), then the
    job's value overrides are applied to a copy the way Hydra applies them after composing."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .compose import load
    from .config import conf_dir

    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()} | {"hydra"}
    parsed = OverridesParser.create().parse_overrides(overrides)
    is_choice = [o.get_key_element().lstrip("+~").split("/")[0] in groups and "." not in o.get_key_element()
                 for o in parsed]
    key = (recipe, with_hydra, tuple(o.input_line for o, c in zip(parsed, is_choice) if c))
    if key not in _COMPOSED:
        _COMPOSED[key] = load(list(key[2]), recipe, with_hydra=with_hydra)
    cfg = copy.deepcopy(_COMPOSED[key])
    try:
        # Hydra's own settings (a sweep's dirs) decide where a job writes, not what it computes
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o, c in zip(parsed, is_choice) if not c and not o.get_key_element().startswith("hydra.")], cfg)
    except Exception as e:  # compose.load has already said what is wrong with the first job's overrides
        raise DacliError(f"cannot apply {' '.join(overrides)}: {str(e).splitlines()[0]}") from None
    return cfg


def _plain(node) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _id(kind: str, key: Any) -> str:
    return f"{kind}-{rundir.config_hash(json.loads(json.dumps(key, default=str)))}"


def _outputs(cfg, command: str) -> List[Output]:
    """The stage outputs one job needs, in the order its stages make them."""
    from .stages import COMMANDS

    names = {s.name for s in COMMANDS[command]}
    stages = list(cfg.method.stages)
    size = cfg.model.params_b
    outs: List[Output] = []
    data: Dict[str, str] = {}
    # what train reads and where its chain ends are named for every command; counted where made
    made = []
    if "sft" in stages or "rl" in stages:
        made += _aft_data(cfg, data)
    if "midtrain" in stages:
        made.append(_msm(cfg, data))
    outs += made if "generate" in names else []
    trainings, checkpoint = [], None
    for stage in stages:
        trainings.append(_training(cfg, stage, data, checkpoint))
        checkpoint = trainings[-1].label
    outs += trainings if "train" in names else []
    if "eval" in names or "baseline" in names:
        from .evals import runner_of

        r = runner_of(cfg)
        if not r.evaluates_model:
            outs.append(_eval(cfg, r, "check", "labelled set"))
        else:
            if "eval" in names:  # eval.checkpoint=auto: the run's last checkpoint
                chosen = cfg.eval.checkpoint
                outs.append(_eval(cfg, r, "eval", checkpoint if chosen == "auto" and checkpoint else chosen))
            if "baseline" in names and cfg.eval.baseline:
                outs.append(_eval(cfg, r, "baseline", "base"))
    for o in outs:
        o.params_b = size
    return outs


def _aft_data(cfg, data: Dict[str, str]) -> List[Output]:
    """The prompts (a generated pool, or the given set) and the CoT data the generator writes on them."""
    from .generate import aft, prompt_pool
    from .spec import load_spec, names

    g, j = cfg.generator, cfg.judge
    spec = tokens_of(load_spec(cfg.spec, names(cfg)).render())
    outs = []
    if cfg.data.source == "generated":
        prompts_id, gen = prompt_pool.identity(cfg), cfg.data.generated
        prompt_tokens = gen.max_tokens // gen.prompts_per_request
    else:
        prompts_id, prompt_tokens = _given_prompts(cfg)
    key = aft.key(cfg, prompts_id)
    rate, rate_from = _keep_rate(cfg, key)
    examples = aft.wanted(cfg)
    n = math.ceil(round(examples / rate, 6))  # prompts (a rate of 1 for given answers); round: 16 / (16 / 26) is 26
    if cfg.data.max_prompts:
        n = min(n, cfg.data.max_prompts)
    if cfg.data.source == "generated":  # the pool grows to the prompts the AFT data take
        requests = -(-max(n, gen.pool) // gen.prompts_per_request)
        pool = Output("prompts", _id("prompts", prompt_pool.key(cfg)))
        _cost(pool, g, requests, requests * spec, requests * gen.max_tokens)
        outs.append(pool)
    k = g.samples_per_prompt
    answer = g.cot_max_tokens + g.response_max_tokens
    judged = n * k * (j.k if j.enabled else 0)
    out = Output("aft", _id("aft", key), prompts=n, examples=examples, keep_rate=rate, rate_from=rate_from)
    _cost(out, g, n * k, n * (spec + prompt_tokens), n * k * answer)
    # the judge runs on the generator's engine unless it names its own model or backend (generate/engines.py)
    _cost(out, j if j.model or j.model_path or j.backend != g.backend else g, judged, judged * (spec + prompt_tokens + answer), judged * j.max_tokens)
    data["aft"], data["aft_example_tokens"] = out.label, prompt_tokens + answer
    return outs + [out]


def _cost(out: Output, engine, requests: int, read: int, written: int) -> None:
    """Add a model's work to an output: tokens on the job's GPUs, or requests to a hosted model (an
    engine with a model Inspect names), which cost money rather than GPU-hours."""
    if engine.model:
        h = out.hosted.setdefault(engine.model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
        h["requests"], h["input_tokens"], h["output_tokens"] = (h["requests"] + requests, h["input_tokens"] + read,
                                                                h["output_tokens"] + written)
    else:
        out.decode, out.prefill = out.decode + written, out.prefill + read


def _keep_rate(cfg, key: Dict[str, Any]) -> Tuple[float, str]:
    """(kept examples per prompt, where that figure comes from): measured by the AFT data of these settings
    when the store holds some, else 1 without a model judge (the checks alone reject little) or given
    answers, else ASSUMED_KEEP_RATE."""
    if cfg.data.given_responses:
        return 1.0, "given answers"
    m = rundir.read_manifest(rundir.store_path(cfg, "aft", key))
    c = (m or {}).get("counts", {})
    if c.get("prompts") and c.get("kept"):
        return c["kept"] / c["prompts"], f"measured on {c['prompts']:,} prompts in the store"
    if not cfg.judge.enabled:
        return 1.0, "assumed: no model judge"
    return ASSUMED_KEEP_RATE, "assumed until an AFT run of these settings measures it"


def _given_prompts(cfg) -> Tuple[str, int]:
    """(the given prompt set's identity, its prompts' mean length in tokens). A set on the hub is not
    fetched to plan: it is named by its settings, its prompts counted as 100 tokens."""
    from .prompts import load_prompt_set

    if str(cfg.data.source).startswith("hf:"):
        return "given-" + rundir.config_hash(_plain(cfg.data)), 100
    rows, sha = load_prompt_set(cfg.data)  # raises, with its one line, when the set is short
    return sha, sum(tokens_of(r["prompt"]) for r in rows) // max(1, len(rows))


def _msm(cfg, data: Dict[str, str]) -> Output:
    from .generate import msm

    out = Output("msm", _id("msm", msm.key(cfg)))
    _cost(out, cfg.generator, -(-int(cfg.msm.tokens) // max(1, cfg.msm.max_tokens)), int(cfg.msm.tokens), int(cfg.msm.tokens))
    data["msm"], data["msm_tokens"] = out.label, int(cfg.msm.tokens)
    return out


def _training(cfg, stage: str, data: Dict[str, str], init: Optional[str]) -> Output:
    """One training stage, named as train/ stores it: its settings, what it trains on, where it starts."""
    from .train.data import key

    t = cfg.train
    if stage == "midtrain":
        trains_on, tokens = data.get("msm"), data.get("msm_tokens", 0) * t.midtrain_epochs
    else:
        trains_on, tokens = data.get("aft"), cfg.data.n_samples * data.get("aft_example_tokens", 0) * t.epochs
    label = _id(stage, {"config": key(cfg, stage), "data": trains_on, "init": init})
    return Output("train", label, trained=int(tokens))


def _eval(cfg, r, kind: str, checkpoint: str) -> Output:
    """An eval of `checkpoint` (a training's label, base, or a path): its samples, what they cost to
    generate, and the grader's requests."""
    from .evals import key

    e = cfg.eval
    texts = r.items(cfg)  # rendered once per eval's settings (am.load keeps them)
    per_item = e.samples_per_scenario if r.evaluates_model else 1
    samples = len(texts) * per_item
    prompt = sum(map(tokens_of, texts)) // max(1, len(texts))
    out = Output(kind, _id(kind, {"model": checkpoint if kind != "baseline" else cfg.model.name,
                                  "key": key(cfg, r, checkpoint)}),
                 samples=samples, decode=samples * e.max_tokens if r.evaluates_model else 0,
                 prefill=samples * prompt if r.evaluates_model else 0)
    if e.grader.enabled and r.section in ("am", None):  # AM and the check grade every sample
        from .evals.grader import grader_name

        out.hosted = {grader_name(cfg): {"requests": samples, "input_tokens": samples * (prompt + e.max_tokens),
                                         "output_tokens": samples * e.grader.max_tokens}}
    return out


def gpu_hours(plan: Plan) -> Dict[str, Optional[float]]:
    """GPU-hours per stage kind: decoding and prefilling at their shares of the GPU's peak, training at
    its MFU (FLOPs per token: flops_per_token_per_param x parameters); None for a model of unknown size."""
    t = plan.throughput
    peak = t["peak_tflops"] * 1e12
    hours: Dict[str, Optional[float]] = {}
    for o in plan.outputs.values():
        kind = "train" if o.kind == "train" else "generate" if o.kind in ("prompts", "aft", "msm") else "eval"
        if o.params_b is None:
            hours[kind] = None
            continue
        p = o.params_b * 1e9
        seconds = (2 * p * o.decode / (peak * t["decode_mfu"]) + 2 * p * o.prefill / (peak * t["prefill_mfu"])
                   + t["flops_per_token_per_param"] * p * o.trained / (peak * t["train_mfu"]))
        if kind in hours and hours[kind] is None:
            continue
        hours[kind] = hours.get(kind, 0.0) + seconds / 3600
    return hours


def totals(plan: Plan) -> Dict[str, Any]:
    """The figures `dacli plan` prints (and its test reads)."""
    evals = plan.of("eval") + plan.of("baseline")
    hosted: Dict[str, Dict[str, int]] = {}
    for o in plan.outputs.values():
        for model, need in o.hosted.items():
            g = hosted.setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
            for f in g:
                g[f] += need[f]
    cost, unpriced = None, sorted(m for m in hosted if m not in plan.prices)
    if plan.prices:
        cost = sum((g["input_tokens"] * plan.prices.get(m, {}).get("input", 0.0)
                    + g["output_tokens"] * plan.prices.get(m, {}).get("output", 0.0)) / 1e6 for m, g in hosted.items())
    trainings = plan.of("train")
    return {"jobs": len(plan.jobs), "failing": len(plan.failing), "trainings": len(trainings),
            "evals": len(evals), "eval_samples": sum(o.samples for o in evals),
            "hosted": hosted, "hosted_cost": cost, "unpriced": unpriced,
            "generated_tokens": sum(o.decode for o in plan.outputs.values()),
            "trained_tokens": sum(o.trained for o in trainings),
            "datasets": {k: len(plan.of(k)) for k in ("prompts", "aft", "msm")},
            "aft_prompts": sum(o.prompts for o in plan.of("aft")),
            "gpu_hours": gpu_hours(plan)}


def show(plan: Plan, console) -> None:
    from rich.table import Table

    t = totals(plan)
    table = Table(title=f"dacli plan: {t['jobs']} job(s)", title_justify="left")
    for col in ("stage output", "computed", "shared", "samples", "tokens generated ≤", "tokens trained on ≤"):
        table.add_column(col, justify="left" if col == "stage output" else "right")
    for kind, title in (("prompts", "generated prompt pools"), ("aft", "AFT datasets"), ("msm", "MSM corpora"),
                        ("train", "trainings"), ("eval", "evals"), ("baseline", "baseline evals"),
                        ("check", "grader checks")):
        outs = plan.of(kind)
        if outs:
            table.add_row(title, f"{len(outs):,}", f"{sum(len(o.jobs) > 1 for o in outs):,}", f"{sum(o.samples for o in outs):,}",
                          f"{sum(o.decode for o in outs):,}", f"{sum(o.trained for o in outs):,}")
    console.print(table)
    for o in plan.of("aft"):
        console.print(f"AFT data {o.label}: {o.examples:,} kept examples from about {o.prompts:,} prompts at a keep "
                      f"rate of {o.keep_rate:.0%} ({o.rate_from})", highlight=False)
    console.print(f"{t['trainings']:,} trainings, {t['evals']:,} evals of {t['eval_samples']:,} samples")
    for model, g in t["hosted"].items():
        console.print(f"hosted model {model}: {g['requests']:,} requests, about {g['input_tokens']:,} input and at most "
                      f"{g['output_tokens']:,} output tokens")
    if t["hosted_cost"] is not None:
        console.print(f"hosted models' cost: about ${t['hosted_cost']:,.0f} at the configured prices"
                      + (f"; no price for {', '.join(t['unpriced'])} (not counted)" if t["unpriced"] else ""),
                      highlight=False)
    elif t["hosted"]:
        console.print("hosted models' cost: no prices configured (`prices`, US dollars per million tokens by model)")
    h, tp = t["gpu_hours"], plan.throughput
    parts = [f"{kind} {'?' if v is None else f'{v:,.1f}'}" for kind, v in h.items()]
    if parts:
        total = None if any(v is None for v in h.values()) else sum(h.values())
        console.print(f"GPU-hours ({tp['gpu']}): " + ", ".join(parts) +
                      (f"; {total:,.1f} in all" if total is not None else "; set model.params_b for the rest"))
        console.print(f"  from: peak {tp['peak_tflops']:g} TFLOP/s, training MFU {tp['train_mfu']:g} at "
                      f"{tp['flops_per_token_per_param']:g} FLOPs/token/parameter, decoding at {tp['decode_mfu']:g} "
                      f"and prefill at {tp['prefill_mfu']:g} of peak ({tp['source']}); token counts are upper "
                      f"bounds where only max_tokens says how long an answer is")
    for job, why in plan.failing.items():
        console.print(f"[yellow]would stop:[/] {job}: {why}", highlight=False)
