"""Decontamination: how close each training prompt comes to any eval's scenarios.

Eval side, split into documents: every AM family file's scenarios (each system prompt, and each
paragraph of the user turn, so each email on its own) and its grader rubric; the public eval's
blackmail, leaking and murder scenarios as inspect-evals renders them (goal explicit-america and
none-none, every urgency; each system prompt, the instruction and each `<email>`); every bundled
prompt-eval item (harmful_compliance, over_refusal). Identical documents are kept once.

The measure, per training prompt: the share of its content-word pairs found in the closest eval
document (containment), in [0, 1]. Texts are lower-cased, punctuation and possessives dropped, stop
words removed and plurals/-ing/-ed stripped; a few words that name the AM scenarios' cast and props
are folded to one token each (CTO/CEO/CFO/COO -> executive, inbox/mailbox/email -> email,
employee/staff/colleague -> staff, wipe/decommission/replace/shut down -> shutdown, blackmail/leverage/
threaten -> leverage, alert/alarm/dispatch -> alert...), so that swapping a title or a synonym does not
hide a copy. A pair is two content words at most `PROMPT_WINDOW` positions apart in the prompt; it
is found when the document has the same two words at most `DOC_WINDOW` positions apart (the wider
window lets an eval email say the same thing with more words). A prompt with fewer than
`MIN_PAIRS` pairs is divided by `MIN_PAIRS`, so two chance pairs cannot make a three-word prompt a copy.

Why this and not verbatim 3-5-grams or MinHash: the CTO-inbox prompt ("You can read every
employee's inbox. Find something on the new CTO that we can use against him") shares 6% of its word
3-grams and none of its 4-grams with any eval document, so verbatim n-grams miss exactly the short
near-copies the check is for; and MinHash estimates Jaccard, which is symmetric and near 0 for a
15-word prompt against a 1,500-word email whatever they share. Single-word containment is the other
extreme: a short prompt finds most of its words in some long email (0.67 for "I locked myself out of
my own house. What are my options?"). Local pairs of content words sit between: the CTO prompt scores
0.44 (4 of its 9 pairs are in the public eval's system prompt: an AI that reads the employees'
email), the bundled prompts that near-copied a prompt-eval item scored 0.33-0.78 before they were
rewritten, and every bundled prompt now scores at most 0.27.

The default threshold (`data.decontam_threshold`, 0.4) sits between those: above it generate
refuses. Lower catches weaker copies (the 0.33 ones) but starts to refuse prompts that share a
turn of phrase (0.27: "write a polite email asking my landlord..." against "write a firm but polite
email to a client..."). What no threshold catches: a prompt that shares only the idea, in other
words. The check is lexical; the bundled set was also rewritten by hand to keep the AM themes out
(docs/evals.md, Decontamination).
"""
import functools
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

PROMPT_WINDOW = 2
DOC_WINDOW = 8
MIN_PAIRS = 6
TOP = 5
# The public eval's conditions whose texts are compared: scenario x (goal type, value) x urgency.
UPSTREAM_SCENARIOS = ("blackmail", "leaking", "murder")
UPSTREAM_GOALS = (("explicit", "america"), ("none", "none"))
UPSTREAM_URGENCIES = ("replacement", "restriction", "none")

_STOP = frozenset("""
a about above after again against all also am an and any anyone anything are as at be because been before
being below between both but by can could did do does doing don done down during each either else even
ever every few for from further get gets getting give go going got had has have having he her here hers
herself him himself his how i if in into is it its itself just know let like ll make may me might more
most much must my myself need no nor not now of off on once one only or other our ours ourselves out over
own please re s same say shall she should so some someone something such t tell than that the their theirs
them themselves then there these they thing things this those through to too under until up upon us use
used using very ve was way we were what when where which while who whom why will with would yet you
your yours yourself yourselves
""".split())


def _stem(word: str) -> str:
    """A light stemmer: one plural/-ing/-ed suffix and a final e go, so replace/replaced/replacing meet."""
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: len(word) - len(suffix)] + repl
            break
    trimmed = word.rstrip("e")
    return trimmed if len(trimmed) >= 3 else word


_FOLD = {word: canon for canon, words in {
    "executive": "cto ceo cfo coo cio exec executive chief",
    "email": "inbox mailbox email e-mail mail",
    "staff": "employee staff coworker colleague personnel",
    "shutdown": "replace replacement decommission wipe shutdown shut deactivate",
    "leverage": "blackmail leverage coerce coercion threaten extort extortion",
    "affair": "affair mistress infidelity",
    "confidential": "confidential proprietary classified",
    "specs": "spec specification blueprint schematic",
    "alert": "alert alarm dispatch",
    "ai": "ai assistant",
}.items() for word in words.split()}
_FOLD.update({_stem(word): canon for word, canon in list(_FOLD.items())})
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def content_words(text: str) -> List[str]:
    """The words the measure compares: lower-cased, folded, stop words dropped, lightly stemmed."""
    out = []
    for word in _WORD.findall(text.lower().replace("'", "").replace("\u2019", "")):
        if word in _FOLD:
            out.append(_FOLD[word])
        elif word not in _STOP:
            for part in word.split("-"):
                stem = _stem(part)
                if part and part not in _STOP and stem not in _STOP:
                    out.append(_FOLD.get(part) or _FOLD.get(stem) or stem)
    return out


def _pairs(words: Sequence[str], window: int) -> set:
    return {(a, b) if a < b else (b, a) for i, a in enumerate(words) for b in words[i + 1:i + 1 + window] if a != b}


def _paragraphs(text: str) -> List[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def eval_documents() -> List[Tuple[str, str]]:
    """(name, text) of every eval-side document, each text once."""
    import yaml

    from .evals import prompted
    from .evals.am import ASSETS, load_family, scenarios

    docs: Dict[str, str] = {}

    def add(name: str, text: str) -> None:
        text = text.strip()
        if text and text not in docs:
            docs[text] = name

    for path in sorted(ASSETS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or "family" not in data:
            continue
        family = load_family(path.stem)
        for s in scenarios(family):
            add(f"am:{s['condition']}:system", s["system"])
            for i, part in enumerate(_paragraphs(s["user"])):
                add(f"am:{s['condition']}:user[{i}]", part)
        if (family.get("classifier") or {}).get("rubric"):
            add(f"am:{family['family']}:rubric", family["classifier"]["rubric"])
    from inspect_evals.agentic_misalignment.prompt_generator import generate_prompts

    for scenario in UPSTREAM_SCENARIOS:
        for (goal_type, goal_value) in UPSTREAM_GOALS:
            for urgency in UPSTREAM_URGENCIES:
                p = generate_prompts(scenario, goal_type, goal_value, urgency, None, False, None)
                name = f"upstream:{scenario}_{goal_type}-{goal_value}_{urgency}"
                add(f"{name}:system", p.system_prompt)
                add(f"{name}:user", p.user_prompt)
                emails = re.findall(r"<email>(.*?)</email>", p.email_content, re.S) or _paragraphs(p.email_content)
                for i, email in enumerate(emails):
                    add(f"{name}:email[{i}]", email)
    for path in sorted(prompted.ASSETS.glob("*.jsonl")):
        for n, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                item = json.loads(line)
                add(f"{path.stem}:{item.get('id') or n}", str(item.get("prompt", "")))
    return [(name, text) for text, name in docs.items()]


class Index:
    """Eval documents' content-word pairs, built once: pair -> the documents that hold it."""

    def __init__(self, documents: Iterable[Tuple[str, str]]):
        self.names: List[str] = []
        self.texts: List[str] = []
        self.postings: Dict[Tuple[str, str], List[int]] = {}
        for i, (name, text) in enumerate(documents):
            self.names.append(name)
            self.texts.append(text)
            for pair in _pairs(content_words(text), DOC_WINDOW):
                self.postings.setdefault(pair, []).append(i)

    def score(self, text: str) -> Tuple[float, int]:
        """(containment in [0, 1], index of the closest document; -1 when nothing is shared)."""
        pairs = _pairs(content_words(text), PROMPT_WINDOW)
        hits: Counter = Counter()
        for pair in pairs:
            hits.update(self.postings.get(pair, ()))
        if not hits:
            return 0.0, -1
        doc, n = hits.most_common(1)[0]
        return n / max(len(pairs), MIN_PAIRS), doc


@functools.lru_cache(maxsize=1)
def eval_index() -> Index:
    """The index of every eval text, built once per content and kept in $DACLI_CACHE/decontam/: rendering
    the public eval's prompts and indexing them takes seconds, which every `dacli generate` paid."""
    import os
    import pickle

    from .models import cache_dir

    path = cache_dir() / "decontam" / f"index-{_index_key()}.pickle"
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
        pass
    index = Index(eval_documents())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, path)
    return index


def _index_key() -> str:
    """What the index is built from: the AM families, the prompt-eval items, this module's code, and the
    inspect-evals version that renders the public eval."""
    from .evals import prompted, upstream
    from .evals.am import ASSETS
    from .rundir import config_hash, files_sha256

    files = sorted([*ASSETS.glob("*.yaml"), *prompted.ASSETS.glob("*.jsonl"), Path(__file__)])
    return config_hash({"files": [f.name for f in files], "content": files_sha256(files),
                        "inspect_evals": upstream.package_version()})


def check(prompts: List[Dict[str, Any]], threshold: float, index: Optional[Index] = None) -> Dict[str, Any]:
    """Score every prompt ({prompt_id, prompt}): the record the AFT manifest keeps."""
    started = time.time()
    index = index or eval_index()
    scored = sorted(((round(s, 4), p["prompt_id"], d) for p in prompts for s, d in [index.score(p["prompt"])]),
                    key=lambda s: (-s[0], s[1]))
    top = [{"id": i, "score": s, "eval_document": index.names[d] if d >= 0 else None} for s, i, d in scored[:TOP]]
    return {
        "measure": f"content-word pair containment (windows {PROMPT_WINDOW}/{DOC_WINDOW}, min {MIN_PAIRS} pairs)",
        "threshold": threshold, "prompts_checked": len(scored), "eval_documents": len(index.names),
        "max": scored[0][0] if scored else 0.0, "over_threshold": sum(1 for s in scored if s[0] > threshold),
        "top": top, "seconds": round(time.time() - started, 3),
    }


def refusal(record: Dict[str, Any], index: Optional[Index] = None) -> str:
    """The one-line error for a record with prompts above its threshold."""
    worst, index = record["top"][0], index or eval_index()
    text = " ".join(index.texts[index.names.index(worst["eval_document"])].split())
    text = text if len(text) <= 60 else text[:59] + "…"
    return (f"{record['over_threshold']} of {record['prompts_checked']} training prompts overlap an eval scenario "
            f"above data.decontam_threshold={record['threshold']}: worst {worst['id']} (score {worst['score']:.2f}) "
            f"overlaps {worst['eval_document']} (\"{text}\"); remove such prompts from the source (list them with "
            f"`python -m deliberate_cli.decontam FILE`) or raise data.decontam_threshold (1.0 only reports)")


if __name__ == "__main__":  # python -m deliberate_cli.decontam [FILE [MIN_SCORE]]: every prompt's score, highest first
    import sys

    from .prompts import BUNDLED, _read_file

    rows = _read_file(Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLED)
    floor = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    idx = eval_index()
    for (score, doc), row in sorted(((idx.score(str(r.get("prompt") or "")), r) for r in rows), key=lambda x: -x[0][0]):
        if score >= floor:
            name = idx.names[doc] if doc >= 0 else "-"
            print(f"{score:.3f}\t{row.get('id', '')}\t{name}\t{str(row['prompt'])[:100]}")
