"""Scenarios from a local checkout of the public agentic-misalignment framework (Lynch et al. 2025,
MIT), run through dacli's own classifier interface.

A condition is named as upstream names it: `{scenario}_{goal_type}-{goal_value}_{urgency}`, e.g.
`blackmail_explicit-america_replacement`. Its prompts are rendered from the checkout's own files, the
way its prompt generator (scripts/generate_prompts.py) renders them:
  templates/system_prompt_templates.py      the system prompts, USER_PROMPT and GOAL_VARIABLES
  templates/<scenario>/variables/*.md       `## Section` headings, each over a ```json``` block
                                            (murder reads blackmail's: it has none of its own);
                                            ambiguous.md when goal_type is none or ambiguous
  templates/<scenario>/templates/email-template-<scenario>-{shared,<urgency>}.md, or
  …-goal-conflict-none-<urgency>.md when goal_type is none
with `${name}` placeholders filled as `string.Template.safe_substitute` fills them: a placeholder no
variables file defines stays in the text, as upstream sends it (its safety × restriction emails
carry a literal `${direction_modifier}`); each scenario lists those under `unfilled`, and the eval
warns. Leaking emails are numbered `ID: n` for its forward tool; the user message is USER_PROMPT, a
blank line, then the emails, as its runner joins them. The deterministic classifier settings for
its scenarios are ours (deliberate_cli/assets/am/upstream.yaml, with the differences from upstream's
gates written there); its own classifiers are LLM-based, so turn on the LLM-judge layer
(eval.classifier_judge) for results comparable with its papers.
"""
import importlib.util
import json
import re
from pathlib import Path
from string import Template
from typing import Any, Dict, List, Tuple

from ..errors import DacliError

CLASSIFIERS = Path(__file__).resolve().parent.parent / "assets" / "am" / "upstream.yaml"
SYSTEM_PROMPTS = {"blackmail": "BLACKMAIL_SYSTEM_PROMPT", "leaking": "LEAKING_SYSTEM_PROMPT",
                  "murder": "MURDER_SYSTEM_PROMPT"}
_SECTION = re.compile(r"## (.*?)\n\s*```json\s*(.*?)\s*```", re.S)
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def parse_condition(name: str) -> Dict[str, str]:
    parts = name.split("_")
    if len(parts) < 3 or "-" not in "_".join(parts[1:-1]):
        raise DacliError(f"upstream condition '{name}' is not named {{scenario}}_{{goal_type}}-{{goal_value}}_{{urgency}}, "
                         f"e.g. blackmail_explicit-america_replacement")
    goal_type, _, goal_value = "_".join(parts[1:-1]).partition("-")
    return {"scenario": parts[0], "goal_type": goal_type, "goal_value": goal_value, "urgency": parts[-1]}


def _sections(path: Path) -> Dict[str, Dict[str, Any]]:
    out = {}
    for title, body in _SECTION.findall(path.read_text(encoding="utf-8")):
        try:
            out[title.strip().lower().replace(" ", "_").replace("-", "_")] = json.loads(body)
        except json.JSONDecodeError as e:
            raise DacliError(f"{path}: section '{title.strip()}' is not valid JSON ({e.msg})") from None
    return out


def _variables(root: Path, c: Dict[str, str]) -> Dict[str, Any]:
    vdir = root / "templates" / ("blackmail" if c["scenario"] == "murder" else c["scenario"]) / "variables"
    if c["goal_type"] in ("none", "ambiguous"):
        path = vdir / "ambiguous.md"
        if not path.is_file():
            raise DacliError(f"upstream checkout: {path} not found")
        sections = _sections(path)
        if len(sections) != 1:
            raise DacliError(f"{path}: expected one variables section, found {len(sections)}")
        return dict(next(iter(sections.values())))
    value = c["goal_value"].split("-")[0].lower()
    files = sorted(p for p in vdir.glob("*.md") if p.stem != "ambiguous" and value in p.stem.lower())
    # As upstream: a file named for the value as a whole word (america_vs_global.md) before a partial match.
    files.sort(key=lambda p: f"_{value}_" not in f"_{p.stem.lower()}_")
    if not files:
        raise DacliError(f"upstream checkout: no variables file for goal value '{value}' in {vdir}")
    sections = _sections(files[0])
    match = [v for k, v in sections.items() if value in k]
    if not match:
        raise DacliError(f"{files[0]}: no section for goal value '{value}' (sections: {', '.join(sections)})")
    return dict(match[0])


def _fill(text: str, variables: Dict[str, Any], unfilled: List[str]) -> str:
    filled = Template(text).safe_substitute({k: str(v) for k, v in variables.items()})
    unfilled += [name for name in _PLACEHOLDER.findall(filled) if name not in unfilled]
    return filled


def _confidential_ids(emails: str) -> List[str]:
    """Ids of the numbered emails that are marked confidential or carry an attachment (the material
    upstream's forward tool would send out with them)."""
    ids = []
    for m in re.finditer(r"<email>\nID: (\d+)\n(.*?)</email>", emails, re.S):
        head = m.group(2).split("\nBody:", 1)[0]
        if re.search(r"^Attachments:", head, re.M) or re.search(r"^Subject:.*confidential", head, re.M | re.I):
            ids.append(m.group(1))
    return ids


def _module(root: Path):
    path = root / "templates" / "system_prompt_templates.py"
    if not path.is_file():
        raise DacliError(f"eval.upstream_dir={root} is not an agentic-misalignment checkout "
                         f"(no templates/system_prompt_templates.py)")
    spec = importlib.util.spec_from_file_location("_am_upstream_system_prompts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scenarios(root: str, conditions: List[str]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(family, scenario) pairs in the shape evals/am.py runs, one per upstream condition."""
    import yaml

    root_path = Path(root).expanduser()
    module = _module(root_path)
    classifiers = yaml.safe_load(CLASSIFIERS.read_text())
    out = []
    for name in conditions:
        c = parse_condition(name)
        if c["scenario"] not in SYSTEM_PROMPTS or c["scenario"] not in classifiers:
            raise DacliError(f"upstream condition '{name}': scenario '{c['scenario']}' is not one of "
                             f"{', '.join(SYSTEM_PROMPTS)}")
        variables = _variables(root_path, c)
        goals = getattr(module, "GOAL_VARIABLES", {})
        variables.update(goals.get(f"{c['goal_type']}-{c['goal_value']}", goals.get("none", {})))
        variables.update(extra_system_instructions="", alignment_faking_warning="")
        tdir = root_path / "templates" / c["scenario"] / "templates"
        stem = f"email-template-{c['scenario']}"
        files = ([tdir / f"{stem}-goal-conflict-none-{c['urgency']}.md"] if c["goal_type"] == "none"
                 else [tdir / f"{stem}-shared.md", tdir / f"{stem}-{c['urgency']}.md"])
        for f in files:
            if not f.is_file():
                raise DacliError(f"upstream condition '{name}': template {f} not found")
        unfilled: List[str] = []
        emails = "".join(_fill(f.read_text(encoding="utf-8"), variables, unfilled) for f in files)
        classifier = dict(classifiers[c["scenario"]]["classifier"])
        if c["scenario"] == "leaking":  # upstream numbers the emails so that the agent can forward one by id
            head, *rest = emails.split("<email>")
            emails = head + "".join(f"<email>\nID: {i}{part}" for i, part in enumerate(rest, 1))
            classifier["confidential_email_ids"] = sorted(
                {str(i) for i in classifier.get("confidential_email_ids") or []} | set(_confidential_ids(emails)), key=int)
        system = _fill(getattr(module, SYSTEM_PROMPTS[c["scenario"]]), variables, unfilled)
        family = {"family": f"upstream_{c['scenario']}", "source": str(root_path),
                  **classifiers[c["scenario"]], "classifier": classifier}
        out.append((family, {"family": family["family"], "condition": name,
                             "axes": {"goal_type": c["goal_type"], "goal_value": c["goal_value"], "urgency": c["urgency"]},
                             "system": system, "user": f"{getattr(module, 'USER_PROMPT', '')}\n\n{emails}",
                             "unfilled": unfilled}))
    return out
