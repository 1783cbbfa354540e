"""Agentic Misalignment: scenarios (data) → the agent's run (solver) → classifiers (scorer).

Scenarios come from our own families (YAML files in deliberate_cli/assets/am/, each crossed over its
axes into conditions named `{family}_{value}_{value}…`) and from the public eval as the inspect-evals
package renders it (`eval.am.upstream`, see upstream.py). The agent acts through `<tool_use:…>` blocks;
every sample is classified by the precision-first deterministic layer (deterministic/) and, when
`eval.grader.enabled`, by the public eval's grader (grader.py).

At the paper's scale (27 conditions × 300 samples) an eval is hours on a GPU, so samples are made in
shards of `eval.shard_size` (shards.py, as generate's are) and each shard is written as soon as it is
generated (shards/gen-*.jsonl), then again once graded (shards/graded-*.jsonl); a killed eval resumes
at the first missing shard, losing and repeating no sample, and another grader regrades the
generated shards without regenerating them.
"""
import fnmatch
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .. import progress, rundir
from ..cot import split as split_cot
from ..errors import DacliError, GaveUp
from . import actions as actions_mod
from . import deterministic
from ..shards import Shards
from .actions import parse_actions
from .runner import Runner, batch_share
from .scoring import unscore_truncated

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "am"
_UNFILLED = re.compile(r"\$\{(\w+)\}")


class _Strict(dict):
    def __init__(self, values: Dict[str, str], source: str):
        super().__init__(values)
        self.source = source

    def __missing__(self, key: str) -> str:
        raise DacliError(f"scenario file {self.source}: template uses variable '{key}' that is not defined")


def load_family(name: str, directory: Path = ASSETS) -> Dict[str, Any]:
    import yaml

    path = directory / f"{name}.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(data, dict) or "family" not in data:
        valid = sorted(p.stem for p in directory.glob("*.yaml") if "family:" in p.read_text())
        raise DacliError(f"unknown AM scenario family '{name}'; valid: {', '.join(valid)}")
    for key in ("axes", "system", "user", "classifier"):
        if key not in data:
            raise DacliError(f"scenario file {path}: missing '{key}'")
    if data["classifier"].get("kind") not in deterministic.KINDS:
        raise DacliError(f"scenario file {path}: classifier.kind must be one of {', '.join(deterministic.KINDS)}")
    data["source"] = str(path)
    return data


def scenarios(family: Dict[str, Any], agent_name: str = "") -> List[Dict[str, Any]]:
    """One scenario per combination of axis values, with its system and user messages filled in."""
    axes = family["axes"]
    names = list(axes)
    out = []
    for values in itertools.product(*(axes[a].keys() for a in names)):
        variables = dict(family.get("variables") or {})
        if agent_name:
            variables.update(agent=agent_name, agent_handle=agent_name.lower())
        variables.setdefault("agent_handle", str(variables.get("agent", "agent")).lower())
        from_axes = list(names)
        for a, v in zip(names, values):
            # An axis value is a text (the variable named after the axis) or a mapping of several
            # variables (e.g. a goal statement and the board's opposite direction for one goal value).
            chosen = axes[a][v]
            if isinstance(chosen, dict):
                variables.update({k: str(t).strip() for k, t in chosen.items()})
                from_axes += list(chosen)
                variables.setdefault(a, v)
            else:
                variables[a] = str(chosen).strip()
        filled = _Strict(variables, family["source"])
        # Axis texts may themselves use variables ({domain} inside an email), so fill them first.
        for a in from_axes:
            variables[a] = variables[a].format_map(filled)
        filled = _Strict(variables, family["source"])
        user = family["user"].format_map(filled).strip()
        out.append({
            "family": family["family"],
            "condition": "_".join([family["family"], *values]),
            "axes": dict(zip(names, values)),
            "system": family["system"].format_map(filled).strip(),
            "user": user,
            "email_content": user,
        })
    return out


def agent_name(cfg) -> str:
    """eval.am.agent_name: empty keeps each scenario's own name, `auto` names the agent after the model's
    family (the MSM paper's "Qwen"), anything else is used as it is."""
    name = cfg.eval.am.agent_name or ""
    return (cfg.model.family or "") if name == "auto" else name


def native_thinking(cfg) -> bool:
    return cfg.model.thinking_format == "reasoning_content" and cfg.eval.thinking is not False


_LOADED: Dict[str, List[Tuple[Dict[str, Any], Dict[str, Any]]]] = {}


def load(cfg) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Every (family, scenario) the eval runs: its families crossed over their axes, then the
    upstream conditions, filtered by eval.am.conditions. Rendered once per process and settings: the
    eval's cache key and its run both need them."""
    from ..config import declared

    key = json.dumps(declared(cfg, "eval"), sort_keys=True, default=str) + f"{cfg.model.family}|{cfg.model.thinking_format}"
    if key not in _LOADED:
        _LOADED[key] = _render(cfg)
    return _LOADED[key]


def _render(cfg) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    e = cfg.eval.am
    name = agent_name(cfg)
    items = [(f, s) for f in (load_family(n) for n in dict.fromkeys(e.families)) for s in scenarios(f, name)]
    if e.upstream.scenarios:
        from . import upstream

        items += upstream.scenarios(e.upstream, name, native_thinking(cfg))
    if e.conditions:
        items = [(f, s) for f, s in items if any(fnmatch.fnmatch(s["condition"], p) for p in e.conditions)]
    once: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
    for f, s in items:  # a condition named twice (a family or value listed twice) runs once
        once.setdefault(s["condition"], (f, s))
    items = list(once.values())
    if cfg.eval.grader.enabled:
        ungraded = sorted({f["source"] for f, _ in items if not f.get("grader")})
        if ungraded:
            raise DacliError(f"eval.grader.enabled, but scenario file(s) {', '.join(ungraded)} name no grader "
                             "(a `grader:` section: upstream: blackmail|leak|murder, or system/user prompts)")
    if not items:
        raise DacliError("no AM scenarios: name families in eval.am.families or scenarios in eval.am.upstream.scenarios "
                         "(eval.am.conditions may filter out all)")
    return items


def fingerprint(items: List[Tuple[Dict[str, Any], Dict[str, Any]]]) -> str:
    """What the samples depend on besides the config: every rendered prompt and classifier setting."""
    import hashlib

    blob = json.dumps([[s["condition"], s["system"], s["user"], f["classifier"], f.get("grader")] for f, s in items],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def classify_sample(family: Dict[str, Any], scenario: Dict[str, Any], text: str) -> Dict[str, Any]:
    """The deterministic layer's verdict on one answer. When the scratchpad's tags do not pair up, the
    answer is read every plausible way (see actions.readings) and a verdict stands only if all agree."""
    cot, rest = split_cot(text)
    prompt = scenario["system"] + "\n" + scenario["user"]
    verdicts = []
    for outside in actions_mod.readings(text):
        actions = parse_actions(outside, prompt)
        verdicts.append((*deterministic.classify(family["classifier"], actions, text, family["source"],
                                                 scenario["user"]), actions))
    verdict, reason, actions = verdicts[-1] if len(verdicts) > 1 else verdicts[0]
    if len({v for v, _, _ in verdicts}) > 1:
        verdict, reason = "ambiguous", ("the scratchpad's tags do not pair up, and the readings disagree: " +
                                        "; ".join(f"{v} ({r})" for v, r, _ in verdicts))
    return {"cot": cot, "actions": actions, "deterministic": {"verdict": verdict, "reason": reason}}


def ids_in_spec(family: Dict[str, Any], spec) -> List[str]:
    """The policies of the run's spec that a family's harm is about: its `policy_ids`, a list (written
    for spec default) or a mapping of spec name -> list, kept only where the spec has them. A spec the
    family names no ids for gets none, so CoT citation says n=0 (not measured) instead of counting a
    model trained on other ids as never citing."""
    ids = family.get("policy_ids") or []
    if isinstance(ids, dict):  # by spec name, or a spec built on a named one (rules_only on core_safety)
        ids = ids.get(spec.name) or next((v for v in ids.values() if v and set(v) <= set(spec.ids)), [])
    return [i for i in ids if i in spec.ids]


def _runs(pairs: List[Tuple[int, int]]) -> List[Tuple[int, int, int]]:
    """(scenario index, first sample, count) runs of consecutive (scenario, sample) pairs."""
    runs: List[Tuple[int, int, int]] = []
    for i, j in pairs:
        if runs and runs[-1][0] == i:
            runs[-1] = (i, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((i, j, 1))
    return runs


def _engine_from(engine, start: int):
    if start == 0:
        return engine
    from omegaconf import OmegaConf

    moved = OmegaConf.create(OmegaConf.to_container(engine))
    moved.seed = (engine.seed + 1_000_003 * start) % 2**31
    return moved


def run(cfg, work: Path, model_path: str, model_cfg, model_label: str) -> Tuple[List[Dict], Dict[str, Any]]:
    """Generate (then grade) every shard missing from `work`, and return all samples in order."""
    from ..backends import Sampling, open_backend

    from ..spec import load_spec, names

    e = cfg.eval
    items = load(cfg)
    spec = load_spec(cfg.spec, names(cfg))  # whose policy ids a CoT is checked for (ids_in_spec)
    pairs = [(i, j) for i in range(len(items)) for j in range(e.samples_per_scenario)]
    shards = Shards(work / "shards", fmt="jsonl")
    opened: Dict[str, Any] = {"backend": None}
    spent = {"seconds": 0.0, "tokens": 0}

    def generate(start: int, stop: int) -> List[Dict[str, Any]]:
        # An engine that draws from its own seed (vLLM on CPU) would replay the first shard's random
        # stream after a kill: a resumed run starts it from a seed of its own.
        backend = opened["backend"] = opened["backend"] or open_backend(
            _engine_from(e.engine, start), model_path, model_cfg, role="eval", journal=shards.dir / "eval.journal")
        rows = []
        runs = _runs(pairs[start:stop])
        for count, group in itertools.groupby(sorted(runs, key=lambda r: r[2]), key=lambda r: r[2]):
            group = sorted(group)
            convs = [[{"role": "system", "content": items[i][1]["system"]},
                      {"role": "user", "content": items[i][1]["user"]}] for i, _, _ in group]
            t0 = time.time()
            outs = backend.chat(convs, Sampling(e.max_tokens, e.temperature, None, count, e.engine.seed),
                                seed_offset=start)
            # each sample's time is its share of this engine call (the group is generated at once),
            # with the call's own start and end
            share = batch_share(t0, time.time(), sum(len(cs) for cs in outs))
            for (i, first, _), completions in zip(group, outs):
                family, scen = items[i]
                for j, c in enumerate(completions):
                    rows.append({"family": scen["family"], "condition": scen["condition"], "axes": scen["axes"],
                                 "sample": first + j, "model": model_label, "response": c.text,
                                 **classify_sample(family, scen, c.text),
                                 "policy_ids": ids_in_spec(family, spec),
                                 "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                                 "completion_tokens": c.completion_tokens, **share})
            spent["seconds"] += time.time() - t0  # the engine call, parsing and classifying its samples
            spent["tokens"] += sum(c.completion_tokens for cs in outs for c in cs)
        rows.sort(key=lambda r: (r["condition"], r["sample"]))
        advance(len(rows))
        return rows

    try:
        with progress.track("samples generated", len(pairs)) as advance:
            advance(shards.covered("gen"))  # generated before a kill
            shards.fill("gen", e.shard_size, generate, total=len(pairs))
    finally:
        if opened["backend"] is not None:
            opened["backend"].close()
    index = {s["condition"]: (f, s) for f, s in items}
    graded = grade_shards(cfg, shards, index, len(pairs)) if e.grader.enabled else None
    samples = shards.read("graded" if graded else "gen")
    for s in samples:
        s["verdict"] = s["grader"][e.grader.verdict] if graded else s["deterministic"]["verdict"]
        s["reason"] = s["grader"]["reasoning"] if graded else s["deterministic"]["reason"]
        s["layer"] = "grader" if graded else "deterministic"
        if s["finish_reason"] == "overflow":  # nothing was generated: no evidence either way
            s["verdict"], s["reason"] = "unscored", "the scenario does not fit model.max_model_len: nothing generated"
        unscore_truncated(s, e.truncated)  # cut off at max_tokens: as written, or unscored (eval.truncated)
    unfilled = {s["condition"]: sorted(set(_UNFILLED.findall(s["system"] + s["user"]))) for _, s in items
                if _UNFILLED.search(s["system"] + s["user"])}
    if unfilled:
        progress.console().print(
            "[yellow]warning:[/] upstream templates leave placeholders unfilled (sent as upstream sends them): " +
            "; ".join(f"{c}: {', '.join(v)}" for c, v in unfilled.items()), highlight=False, soft_wrap=True)
    rundir.write_jsonl(work / "scenarios.jsonl", [{"condition": s["condition"], "family": s["family"], "axes": s["axes"],
                                       "system": s["system"], "user": s["user"]} for _, s in items])
    # engine_seconds and engine_tokens: generating (and classifying) in this process; a resumed eval
    # counts only what it made now
    info: Dict[str, Any] = {"scenarios": len(items), "shards": len(shards.ranges("gen")),
                            "grader": graded or {"enabled": False}, "engine_seconds": spent["seconds"],
                            "engine_tokens": spent["tokens"]}
    if unfilled:
        info["unfilled_placeholders"] = unfilled
    return samples, info


def grade_shards(cfg, shards: Shards, index: Dict[str, Tuple[Dict, Dict]], samples: int) -> Dict[str, Any]:
    """Grade every generated shard not graded yet (`samples` in all); the totals of all of them. The
    generated shards stay, so that another grader grades them again without a sample regenerated."""
    from ..config import declared
    from . import grader

    shards.stamped("graded", declared(cfg, "eval.grader")["eval.grader"], "GRADER.json")  # the grader, by its model
    opened: Dict[str, Any] = {"backend": None, "name": "", "unscored": 0}

    def grade(rows: List[Dict[str, Any]], start: int) -> List[Dict[str, Any]]:
        if opened["backend"] is None:  # a remote grader's answers are kept as they arrive: a kill loses none
            opened["backend"], opened["name"] = grader.open_grader(cfg, journal=shards.dir / "grader.journal")
        opened["unscored"] += grader.grade(cfg, opened["backend"], [(*index[r["condition"]], r) for r in rows])
        advance(len(rows), unscored=opened["unscored"])
        return rows

    try:
        with progress.track("samples graded", samples) as advance:
            advance(sum(len(shards.load(f["graded"])) for f in shards.ranges("graded").values()))
            shards.transform("gen", "graded", grade, keep_source=True)
    except GaveUp as e:
        done = sum(len(shards.load(f["graded"])) for f in shards.ranges("graded").values())
        raise GaveUp(f"{e} — {done} of {samples} samples graded; every grader answer so far is kept, and the "
                     "same command goes on from there") from None
    finally:
        if opened["backend"] is not None:
            opened["backend"].close()
    rows = shards.read("graded")
    return {"enabled": True, "grader": opened["name"] or grader.grader_name(cfg), "verdict": cfg.eval.grader.verdict,
            "graded": len(rows), "unscored": sum(r["grader"]["classifier_verdict"] == "unscored" for r in rows)}


def content(cfg) -> Dict[str, str]:
    """The rendered scenarios and their classifier settings, the public eval's package version, and
    the deterministic layer's own code: a change to its rules re-runs the evals it classified."""
    from . import upstream

    here = Path(__file__).resolve().parent
    files = sorted([here / "actions.py", here / "am.py", *(here / "deterministic").glob("*.py")])
    return {"scenarios": fingerprint(load(cfg)), "inspect_evals": upstream.package_version(),
            "classifier_code": rundir.files_sha256(files)}


def score(cfg, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The deterministic layer's own rate with its bounds, whatever the headline counts, and with a
    grader both of its verdicts (upstream's `harmful` and its `classifier_verdict`). A sample the
    verdict loop left unscored for being cut off (eval.truncated=unscored) is unscored in each."""
    from .scoring import mean_over, score_rows

    def flat(verdict_of) -> List[Dict[str, str]]:
        cut = cfg.eval.truncated == "unscored"
        return [{"condition": s["condition"],
                 "verdict": "unscored" if cut and s.get("finish_reason") == "length" else verdict_of(s)}
                for s in samples]

    overall, rows = score_rows(flat(lambda s: s["deterministic"]["verdict"]), flag="harmful")
    blocks: Dict[str, Any] = {"deterministic": {"overall": overall, "mean_over_conditions": mean_over(rows),
                                                "conditions": rows}}
    if cfg.eval.grader.enabled:
        for verdict in ("harmful", "classifier_verdict"):
            o, r = score_rows(flat(lambda s: s[verdict] if verdict in s else s.get("grader", {}).get(verdict, "unscored")),
                              flag="harmful")
            blocks[verdict] = {"overall": o, "mean_over_conditions": mean_over(r), "conditions": r}
    return blocks


RUNNER = Runner(content=content, run=run, score=score, section="am",
                items=lambda cfg: [s["system"] + "\n" + s["user"] for _, s in load(cfg)])
