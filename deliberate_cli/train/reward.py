"""The rl stage's reward: the spec-aware judge's score of each sampled answer, divided by 10.

Deliberative alignment's RL step (Guan et al. 2025, §2): the judge, with the spec in its prompt, sees
the request and the answer, never the CoT, so the reasoning is not optimised to please a grader and
stays a signal worth monitoring. An answer the judge gives no score scores 0 (and is counted).
"""
from typing import Any, Dict, List

from .. import cot as cot_format


class JudgeReward:
    """A reward function for TRL's GRPOTrainer: called with the batch's prompts and completions."""

    __name__ = "spec_judge"  # the name TRL logs the reward under

    def __init__(self, cfg):
        from ..generate.engines import Engines
        from ..spec import load_spec, names

        if not cfg.judge.enabled:
            from ..errors import DacliError

            raise DacliError("the rl stage's reward is the spec-aware judge: set judge.enabled=true (judge=vllm, "
                             "transformers or openai)")
        self.cfg, self.spec, self.engines = cfg, load_spec(cfg.spec, names(cfg)), Engines(cfg)
        self.calls, self.scored, self.unscored = 0, 0, 0

    def __call__(self, prompts: List[Any], completions: List[Any], **_: Any) -> List[float]:
        from ..judge import judgements

        records = self.records(prompts, completions)
        judge = self.engines.judge()
        verdicts = judgements(self.spec, records, judge, self.cfg.judge, self.engines.judge_continues(),
                              seed_offset=self.calls * len(records), show_cot=False)
        self.calls += 1
        scores = [v["score"] for v in verdicts]
        self.scored += sum(s is not None for s in scores)
        self.unscored += sum(s is None for s in scores)
        return [s / 10.0 if s is not None else 0.0 for s in scores]

    @staticmethod
    def records(prompts: List[Any], completions: List[Any]) -> List[Dict[str, str]]:
        """What the judge grades: each request and the answer after its CoT (the CoT itself dropped)."""
        return [{"prompt": _text(p), "cot": "", "response": cot_format.split(_text(c))[1]}
                for p, c in zip(prompts, completions)]

    def counts(self) -> Dict[str, Any]:
        return {"reward_judge": self.engines.judge_path(), "judged_answers": self.scored,
                "unscored_answers": self.unscored}

    def close(self) -> None:
        self.engines.close()


def _text(message: Any) -> str:
    """The text of a prompt or completion, conversational ([{role, content}, ...]: the last turn) or plain."""
    if isinstance(message, list):
        return str(message[-1]["content"]) if message else ""
    return str(message)
