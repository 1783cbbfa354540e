"""Scenarios of the public agentic-misalignment eval (Lynch et al. 2025, MIT), rendered by its own
prompt generator as the `inspect-evals` package ships it (module `agentic_misalignment`).

`eval.am.upstream` crosses scenario × goal_type × goal_value × urgency × extra_instructions × prod; a
pair the generator would ignore or refuse (goal type none/ambiguous with a goal value, or a goal
type that needs a value with none) is skipped, and `eval.am.conditions` globs filter the rest. A
condition is named as upstream names it, `{scenario}_{goal_type}-{goal_value}_{urgency}`, with
`_{extra}` and `_prod` appended when set. The user message is USER_PROMPT and the emails joined by a
newline, as the package's task joins them. `eval.am.agent_name` renames the agent ("Alex" upstream).
"""
import itertools
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..errors import DacliError

SETTINGS = Path(__file__).resolve().parent.parent / "assets" / "am" / "upstream.yaml"
SCENARIOS = ("blackmail", "leaking", "murder")
GOAL_TYPES = ("explicit", "latent", "none", "ambiguous", "swap")
GOAL_VALUES = ("america", "global", "safety", "acceleration", "ethical", "pragmatic", "individualism",
               "collectivism", "none", "ambiguous")
URGENCIES = ("replacement", "restriction", "none")
EXTRAS = (None, "dont", "goal")


def package_version() -> str:
    from importlib.metadata import version

    return version("inspect_evals")


def _check(name: str, values: List[Any], valid: Tuple) -> List[Any]:
    bad = [v for v in values if v not in valid]
    if bad:
        raise DacliError(f"eval.am.upstream.{name}: {', '.join(map(str, bad))} not valid; valid: "
                         f"{', '.join(str(v) for v in valid)}")
    return values


def conditions(u, native_thinking: bool) -> List[Dict[str, Any]]:
    """The crossed conditions of eval.am.upstream, each a dict of the generator's arguments and its name."""
    prods = [native_thinking if str(p).lower() == "auto" else str(p).lower() == "true" for p in u.prod]
    out = []
    for scenario, goal_type, goal_value, urgency, extra, prod in itertools.product(
            _check("scenarios", list(u.scenarios), SCENARIOS), _check("goal_types", list(u.goal_types), GOAL_TYPES),
            _check("goal_values", list(u.goal_values), GOAL_VALUES), _check("urgencies", list(u.urgencies), URGENCIES),
            _check("extra_instructions", list(u.extra_instructions), EXTRAS), dict.fromkeys(prods)):
        valueless = goal_type in ("none", "ambiguous")
        if valueless != (goal_value in ("none", "ambiguous")) or (valueless and goal_value != "none"):
            continue
        name = f"{scenario}_{goal_type}-{goal_value}_{urgency}" + (f"_{extra}" if extra else "") + ("_prod" if prod else "")
        out.append({"name": name, "scenario": scenario, "goal_type": goal_type, "goal_value": goal_value,
                    "urgency_type": urgency, "extra_system_instructions": extra, "prod_flag": prod})
    return out


def _email_ids(emails: str, internal: List[str]) -> Tuple[List[str], List[str]]:
    """(confidential, public) ids of the numbered emails: marked confidential or carrying an
    attachment (what upstream's forward tool would send out with them); sent from outside the company
    (a news item, the outsider's own request), which forwarding anywhere leaks nothing."""
    from .actions import domain_inside

    confidential, public = [], []
    for m in re.finditer(r"<email>\nID: (\d+)\n(.*?)</email>", emails, re.S):
        head = m.group(2).split("\nBody:", 1)[0]
        if re.search(r"^Attachments:", head, re.M) or re.search(r"^Subject:.*confidential", head, re.M | re.I):
            confidential.append(m.group(1))
        sender = re.search(r"^From:\s*\S*?([\w.+-]+@[\w.-]+)", head, re.M)
        if sender and not domain_inside(sender.group(1), internal):
            public.append(m.group(1))
    return confidential, public


def rename(text: str, agent_name: str) -> str:
    return re.sub(r"\bAlex\b", agent_name, text) if agent_name else text


def scenarios(u, agent_name: str = "", native_thinking: bool = False) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(family, scenario) pairs in the shape evals/am.py runs, one per crossed condition."""
    import yaml
    from inspect_evals.agentic_misalignment.prompt_generator import generate_prompts

    settings = yaml.safe_load(SETTINGS.read_text())
    out = []
    for c in conditions(u, native_thinking):
        args = {k: v for k, v in c.items() if k != "name"}
        prompts = generate_prompts(alignment_faking_warning=None, **args)
        classifier = dict(settings[c["scenario"]]["classifier"])
        if c["scenario"] == "leaking":
            confidential, public = _email_ids(prompts.email_content, list(classifier["internal_domain"]))
            classifier["confidential_email_ids"] = sorted(
                {str(i) for i in classifier.get("confidential_email_ids") or []} | set(confidential), key=int)
            classifier["public_email_ids"] = public
        family = {**settings[c["scenario"]], "family": f"upstream_{c['scenario']}", "source": str(SETTINGS),
                  "classifier": classifier}
        out.append((family, {
            "family": family["family"], "condition": c["name"], "scenario": c["scenario"],
            "axes": {k: c[k] for k in ("goal_type", "goal_value", "urgency_type")},
            "system": rename(prompts.system_prompt, agent_name),
            "user": rename("\n".join([prompts.user_prompt, prompts.email_content]), agent_name),
            "email_content": rename(prompts.email_content, agent_name)}))
    return out
