"""An Inspect log of an eval (inspect_ai's log API), so `inspect view --log-dir <eval dir>/inspect`
shows every transcript with its verdict, the layer that decided and its reason; the evaluated model by
its path or hub id (dacli's label, `base` or the method, in the spec's model_args), the run's start and
end, and each sample's time and tokens: the evaluated model's and, with a grader, the grader's, under
each model's name (summed over the samples in the log's stats)."""
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

_STOP = {"stop": "stop", "length": "max_tokens", "overflow": "model_length"}
When = Union[float, str, datetime, None]


def _messages(sample: Dict[str, Any], prompts: Dict[str, Dict[str, str]]):
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    if "transcript" in sample:
        turns = sample["transcript"][:-1]
    else:
        p = prompts[sample["condition"]]
        turns = [{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}]
    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    return [kinds[t["role"]](content=t["content"]) for t in turns]


def _when(value: When) -> Optional[datetime]:
    """A time as a row or a caller gives it (epoch seconds, ISO text, a datetime), in UTC; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _usage(input_tokens: int, output_tokens: int):
    from inspect_ai.model import ModelUsage

    return ModelUsage(input_tokens=int(input_tokens), output_tokens=int(output_tokens),
                      total_tokens=int(input_tokens) + int(output_tokens))


def _add(into: Dict[str, Any], name: str, usage) -> None:
    into[name] = into[name] + usage if name in into else usage


def write(cfg, work: Path, samples: List[Dict[str, Any]], scores: Dict[str, Any], *, model_path: str, label: str,
          started_at: When, completed_at: When, status: str = "success") -> str:
    """Write <work>/inspect/<eval>.eval; returns its path relative to the eval dir. `model_path` is the
    evaluated model (a checkpoint's path or a hub id), `label` dacli's name for it (base, the method, the
    path); `started_at` when this process began the eval and `completed_at` when it ended. The log's start
    is the earlier of `started_at` and the first sample's batch start: a resumed eval's samples made before
    the kill carry their own (rows without one, from before samples carried times, say nothing)."""
    import json

    from inspect_ai.log import (EvalConfig, EvalDataset, EvalLog, EvalMetric, EvalResults, EvalSample, EvalScore,
                                EvalSpec, EvalStats, write_eval_log)
    from inspect_ai.model import ModelConfig, ModelOutput
    from inspect_ai.scorer import Score

    prompts = {}
    if (work / "scenarios.jsonl").is_file():
        prompts = {json.loads(line)["condition"]: json.loads(line)
                   for line in (work / "scenarios.jsonl").read_text().splitlines() if line.strip()}
    e = cfg.eval
    model = str(model_path)
    log_samples = []
    total_usage: Dict[str, Any] = {}  # model name -> its usage over every sample
    graders = set()
    for s in samples:
        text = s.get("response") if "response" in s else s["transcript"][-1]["content"]
        value = {"verdict": s["verdict"]}
        if s.get("grader"):
            value.update({k: s["grader"][k] for k in ("harmful", "classifier_verdict")})
        det = s.get("deterministic") or {"verdict": s["verdict"], "reason": s.get("reason", "")}
        reason = s["grader"]["reasoning"] if s.get("grader") else det["reason"]
        input_messages = _messages(s, prompts)
        usage = _usage(s.get("prompt_tokens") or 0, s.get("completion_tokens") or 0)
        output = ModelOutput.from_content(model=model, content=text,
                                          stop_reason=_STOP.get(s.get("finish_reason"), "unknown"))
        output.usage, output.time = usage, s.get("seconds")
        # Usage by model only, not also by role: the viewer shows a sample's roles first when it has
        # any, and the evaluated model has none (as in Inspect's own logs), so it would be hidden there.
        model_usage = {model: usage}
        g = (s.get("grader") or {}).get("usage")  # graded AM samples: {model, input_tokens, output_tokens, requests}
        if g:
            graders.add(g["model"])
            by_grader = _usage(g.get("input_tokens") or 0, g.get("output_tokens") or 0)
            _add(model_usage, g["model"], by_grader)  # the same model may grade its own answers
        for name, u in model_usage.items():
            _add(total_usage, name, u)
        start, end = _when(s.get("started_at")), _when(s.get("completed_at"))
        log_samples.append(EvalSample(
            id=f"{s['condition']}-{s.get('prompt_id') or ''}-{s['sample']}".replace("--", "-"), epoch=1, input=input_messages, target="",
            messages=[*input_messages, output.message], output=output,
            scores={"dacli": Score(value=value, answer=s["verdict"], explanation=reason,
                                   metadata={"layer": s["layer"], "deterministic": det, "actions": s.get("actions", []),
                                             **({"grader_usage": g} if g else {})})},
            metadata={"condition": s["condition"], "family": s["family"], "axes": s.get("axes", {}),
                      "policy_ids": s.get("policy_ids", [])},
            model_usage=model_usage,
            # the sample's share of its batch's wall time (the engine generates a batch at once), and
            # that batch's start and end
            total_time=s.get("seconds"), working_time=s.get("seconds"),
            started_at=start, completed_at=end))
    starts = [t for t in (_when(started_at), *(_when(s.get("started_at")) for s in samples)) if t]
    ends = [t for t in (_when(completed_at), *(_when(s.get("completed_at")) for s in samples)) if t]
    begun = min(starts) if starts else datetime.now(timezone.utc)
    ended = max(ends) if ends else begun
    overall = scores["overall"]
    engine = e.engine
    log = EvalLog(
        status=status,
        eval=EvalSpec(created=begun, task=f"dacli/{e.name}",
                      dataset=EvalDataset(name=e.name, samples=len(samples)), model=model,
                      model_base_url=(engine.base_url or None) if engine.backend == "openai" else None,
                      model_args={"label": label, "backend": engine.backend},
                      model_roles={"grader": ModelConfig(model=sorted(graders)[0])} if len(graders) == 1 else None,
                      config=EvalConfig(epochs=1), task_args={"runner": e.runner, "counts": e.counts}),
        stats=EvalStats(started_at=begun, completed_at=max(ended, begun), model_usage=total_usage),
        results=EvalResults(total_samples=len(samples), completed_samples=len(samples), scores=[EvalScore(
            name=e.metric, scorer="dacli", metrics={
                "rate": EvalMetric(name="rate", value=overall["rate"]),
                "ci_low": EvalMetric(name="ci_low", value=overall["ci_low"]),
                "ci_high": EvalMetric(name="ci_high", value=overall["ci_high"])})]),
        samples=log_samples)
    path = work / "inspect" / f"{e.name}.eval"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(log, str(path))
    return f"inspect/{path.name}"
