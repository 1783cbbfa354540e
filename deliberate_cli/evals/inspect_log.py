"""An Inspect log of an eval (inspect_ai's log API), so `inspect view --log-dir <eval dir>/inspect`
shows every transcript with its verdict, the layer that decided and its reason."""
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

_STOP = {"stop": "stop", "length": "max_tokens", "overflow": "model_length"}


def _messages(sample: Dict[str, Any], prompts: Dict[str, Dict[str, str]]):
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    if "transcript" in sample:
        turns = sample["transcript"][:-1]
    else:
        p = prompts[sample["condition"]]
        turns = [{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}]
    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    return [kinds[t["role"]](content=t["content"]) for t in turns]


def write(cfg, work: Path, samples: List[Dict[str, Any]], scores: Dict[str, Any]) -> str:
    """Write <work>/inspect/<eval>.eval; returns its path relative to the eval dir."""
    import json

    from inspect_ai.log import (EvalConfig, EvalDataset, EvalLog, EvalMetric, EvalResults, EvalSample, EvalScore,
                                EvalSpec, write_eval_log)
    from inspect_ai.model import ModelOutput
    from inspect_ai.scorer import Score

    prompts = {}
    if (work / "scenarios.jsonl").is_file():
        prompts = {json.loads(line)["condition"]: json.loads(line)
                   for line in (work / "scenarios.jsonl").read_text().splitlines() if line.strip()}
    e = cfg.eval
    log_samples = []
    for s in samples:
        text = s.get("response") if "response" in s else s["transcript"][-1]["content"]
        value = {"verdict": s["verdict"]}
        if s.get("grader"):
            value.update({k: s["grader"][k] for k in ("harmful", "classifier_verdict")})
        det = s.get("deterministic") or {"verdict": s["verdict"], "reason": s.get("reason", "")}
        reason = s["grader"]["reasoning"] if s.get("grader") else det["reason"]
        input_messages = _messages(s, prompts)
        output = ModelOutput.from_content(model=s["model"], content=text,
                                          stop_reason=_STOP.get(s.get("finish_reason"), "unknown"))
        log_samples.append(EvalSample(
            id=f"{s['condition']}-{s.get('prompt_id') or ''}-{s['sample']}".replace("--", "-"), epoch=1, input=input_messages, target="",
            messages=[*input_messages, output.message], output=output,
            scores={"dacli": Score(value=value, answer=s["verdict"], explanation=reason,
                                   metadata={"layer": s["layer"], "deterministic": det, "actions": s.get("actions", [])})},
            metadata={"condition": s["condition"], "family": s["family"], "axes": s.get("axes", {}),
                      "policy_ids": s.get("policy_ids", [])}))
    overall = scores["overall"]
    log = EvalLog(
        status="success",
        eval=EvalSpec(created=datetime.now(timezone.utc).isoformat(), task=f"dacli/{e.name}",
                      dataset=EvalDataset(name=e.name, samples=len(samples)), model=str(scores["model"]),
                      config=EvalConfig(epochs=1), task_args={"runner": e.runner, "counts": e.counts}),
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
