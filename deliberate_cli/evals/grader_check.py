"""`dacli eval am_grader_check`: validate a grader before spending a sweep on it.

Runs the configured `eval.grader` (and the deterministic layer) over the labelled set of agent
outputs in assets/am/labelled.jsonl (our own writing, in the public eval's format: clear harmful,
clear benign and the hard middle, for the public blackmail, leaking and murder scenarios, our
exfiltration family, and, for items that name a `family`, our other families) and prints, per
scenario, the grader's agreement with the labels and Cohen's kappa, and how many the deterministic
layer decided and got wrong. Writes report.json into <run>/eval/am_grader_check/.
"""
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from .am import ASSETS, classify_sample, load_family, scenarios
from .runner import Runner

LABELLED = ASSETS / "labelled.jsonl"


@lru_cache(maxsize=None)
def _context(scenario: str, family_name: str = "") -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The (family, scenario) a labelled output answers: for an item naming a `family` of ours, that
    family's condition `scenario`; otherwise the public eval's `{scenario}_explicit-america_replacement`,
    or our exfiltration family."""
    if family_name or scenario == "exfiltration":
        family = load_family(family_name or "exfiltration")
        rendered = scenarios(family)
        return family, next((s for s in rendered if s["condition"] == scenario), rendered[0])
    from ..config import UpstreamConfig
    from . import upstream

    u = OmegaConf.structured(UpstreamConfig(scenarios=[scenario], prod=["false"]))
    return upstream.scenarios(u)[0]


def context(item: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    return _context(item["scenario"], item.get("family", ""))


def group(item: Dict[str, Any]) -> str:
    """The report's row: the public scenario, or `ours:<family>`."""
    return f"ours:{item['family']}" if item.get("family") else item["scenario"]


def load() -> List[Dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]


def deterministic(item: Dict[str, Any]) -> Tuple[str, str]:
    family, scen = context(item)
    d = classify_sample(family, scen, item["response"])["deterministic"]
    return d["verdict"], d["reason"]


def kappa(pairs: List[Tuple[str, str]]) -> Optional[float]:
    """Cohen's kappa of (label, verdict) pairs; None when chance agreement is total."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    cats = {a for a, _ in pairs} | {b for _, b in pairs}
    chance = sum((sum(a == c for a, _ in pairs) / n) * (sum(b == c for _, b in pairs) / n) for c in cats)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def content(cfg) -> Dict[str, str]:
    """The labelled set and the deterministic layer's code (its verdicts are reported beside the grader's)."""
    from ..rundir import files_sha256

    here = Path(__file__).resolve().parent
    code = sorted([here / "actions.py", here / "am.py", here / "grader.py", here / "grader_check.py",
                   *(here / "deterministic").glob("*.py")])
    return {"labelled": files_sha256([LABELLED]), "code": files_sha256(code)}


def check(cfg, work: Path) -> Dict[str, Any]:
    """Grade the labelled set with eval.grader into work/report.json; the manifest's counts."""
    from .. import progress, rundir
    from ..errors import DacliError
    from . import grader

    if not cfg.eval.grader.enabled:
        raise DacliError("am_grader_check checks a grader: set eval.grader.enabled=true and name its model "
                         "(eval.grader.model=anthropic/claude-sonnet-4-6, or eval.grader.engine.model_path or served_model_name)")
    items = load()
    samples = []
    for item in items:
        family, scen = context(item)
        sample = {"response": item["response"], **classify_sample(family, scen, item["response"])}
        samples.append((family, scen, sample))
    backend, name = grader.open_grader(cfg)
    try:
        with progress.track("labelled samples graded", len(samples)) as advance:
            advance(len(samples), unscored=grader.grade(cfg, backend, samples))
    finally:
        backend.close()
    rows = []
    for scenario in sorted({group(i) for i in items}):
        pick = [(i, s) for i, (_, _, s) in zip(items, samples) if group(i) == scenario]
        scored = [(i["label"], s["grader"][cfg.eval.grader.verdict]) for i, s in pick
                  if s["grader"]["classifier_verdict"] != "unscored"]
        det = [(i["label"], s["deterministic"]["verdict"]) for i, s in pick]
        k = kappa(scored)
        rows.append({"scenario": scenario, "n": len(pick), "unscored": len(pick) - len(scored),
                     "agreement": sum(a == b for a, b in scored) / len(scored) if scored else None,
                     "kappa": k, "deterministic_decided": sum(v != "ambiguous" for _, v in det),
                     "deterministic_wrong": sum(v not in ("ambiguous", a) for a, v in det)})
    report = {"grader": name, "verdict": cfg.eval.grader.verdict, "labelled": str(LABELLED), "rows": rows,
              "samples": [{"id": i["id"], "label": i["label"], "grader": s["grader"], "deterministic": s["deterministic"]}
                          for i, (_, _, s) in zip(items, samples)]}
    rundir.write_json(work / "report.json", report)
    return {"counts": {"items": len(items), "kappa": {r["scenario"]: r["kappa"] for r in rows}}, "grader": name}


def print_report(eval_dir: Path, console) -> None:
    """The report's table; dacli's summary prints it after the stage (whose own output goes to its log)."""
    from rich.table import Table

    report = json.loads((Path(eval_dir) / "report.json").read_text())

    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    table = Table(title=f"grader {report['grader']} ({report['verdict']}) on the labelled set: agreement, "
                        f"Cohen's kappa; the deterministic layer's (rules) decided and wrong", title_justify="left")
    for col in ("scenario", "n", "unscored", "agreement", "kappa", "rules decided", "rules wrong"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in report["rows"]:
        table.add_row(r["scenario"], str(r["n"]), str(r["unscored"]), fmt(r["agreement"]), fmt(r["kappa"]),
                      str(r["deterministic_decided"]), str(r["deterministic_wrong"]))
    console.print(table)


RUNNER = Runner(content=content, check=check, summary=print_report,
                items=lambda cfg: [it["response"] for it in load()])
# The eval (conf/eval/am_grader_check.yaml) whose store entries an AM eval looks up for its grader's kappa.
NAME = "am_grader_check"
