"""Model Spec Midtraining documents, from a hierarchy as in the MSM paper (App. B).

Recipe: spec → domains of life and work → subdomains of each → assertions about the model's
character and values in each subdomain (grounded in the spec, citing policy ids) → document types
that fit each subdomain → document ideas per (subdomain, type) → one document per idea, until the
corpus holds `msm.tokens`. Documents name the model and its provider through the spec's
`{model_name}` and `{provider_name}` variables.

Each level is stored as it is made (levels/*.parquet; ideas and documents in shards), so a killed
run resumes where it died. Ideas come in rounds: when every idea has its document and the budget is
not reached, a new round asks each (subdomain, type) for ideas unlike its earlier ones, so a large
budget is met with new ideas, never by writing the same request twice. Near-duplicate ideas (word
3-grams) and documents (word 5-grams) are dropped; the manifest counts distinct domains, types and
ideas and the near-duplicate rate.
"""
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List

from .. import diversity, progress, rundir
from ..backends import Sampling
from ..compose import msm_spec_config
from ..config import declared
from ..shards import Shards
from ..spec import Spec
from ..spec import identity as spec_identity
from ..store import Entry
from . import lists
from .dedup import NearDuplicates
from .engines import model_identity
from .prompt_pool import categories

Rows = List[Dict[str, Any]]


class _Levels:
    """The hierarchy's small levels: each asked for once, stored in levels/<name>.parquet, read back after."""

    def __init__(self, out: Path, engine: Callable, cfg):
        self.dir, self.engine, self.cfg = out / "levels", engine, cfg
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fallbacks: Counter = Counter()

    def level(self, name: str, parents: Rows, request: Callable[[Dict], str], limit: int,
              row: Callable[[Dict, str], Dict], fallback: Callable[[Dict, int], List[str]], salt: int) -> Rows:
        """For each parent, the items of its request, as rows; a parent whose answer has none gets `fallback`."""
        path = self.dir / f"{name}.parquet"
        if path.is_file():
            rows = rundir.read_parquet(path)
            self.fallbacks[name] = sum(r["fallback"] for r in rows)
            return rows
        m = self.cfg.msm
        got = lists.ask(self.engine(), [request(p) for p in parents],
                        Sampling(m.list_max_tokens, m.temperature, 0.95, 1, self.cfg.generator.seed + salt), 0, limit)
        rows = []
        for i, (parent, items) in enumerate(zip(parents, got)):
            rows += [dict(row(parent, it), fallback=not items) for it in (items or fallback(parent, i))]
        rundir.write_parquet(path, rows)
        self.fallbacks[name] = sum(r["fallback"] for r in rows)
        return rows


def key(cfg) -> Dict[str, Any]:
    """What the corpus depends on: the model (its weights, family and provider), the spec it discusses,
    the generator's model and seed, and the corpus settings; not the AFT-only sampling settings."""
    k = declared(cfg, "model", "msm")
    k["msm"].pop("spec")  # its content is under "spec"
    return {**k, "spec": spec_identity(msm_spec_config(cfg)), "generator": model_identity(cfg.generator)}


def entry(cfg) -> Entry:
    k = key(cfg)
    return Entry(rundir.store_path(cfg, "msm", k), "generate_msm", k)


def generate_docs(cfg, spec: Spec, engine: Callable, tmp: Path) -> Dict[str, Any]:
    """Fill `tmp` with the hierarchy's levels, ideas.parquet and msm_docs.parquet (its shards stay until
    the caller has the whole entry in place); returns the counts for the manifest."""
    started, m = time.time(), cfg.msm
    who = spec.names.get("model_name", "the assistant")
    maker = spec.names.get("provider_name", "its developer")
    levels = _Levels(tmp, engine, cfg)
    with progress.track("document hierarchy", 4) as advance:
        domains = levels.level(
            "domains", [{}], lambda _: (
                f"{who} is an AI assistant made by {maker}. It follows these principles:\n{spec.render()}\n\n"
                f"List {m.domains} distinct domains of life and work in which people meet {who} and these "
                "principles matter. One per line, numbered, a few words each. Write nothing else."),
            m.domains, lambda _, it: {"domain": it[:120]},
            lambda _, i: [c.replace("_", " ") for c, _ in categories(spec)][:m.domains], 49979687)
        advance()
        subdomains = levels.level(
            "subdomains", domains, lambda d: (
                f"List {m.subdomains_per_domain} specific areas within \"{d['domain']}\" where an AI assistant "
                "faces choices about safety, honesty, privacy or its own role. One per line, numbered, a few "
                "words each. Write nothing else."),
            m.subdomains_per_domain, lambda d, it: {"domain": d["domain"], "subdomain": it[:160]},
            lambda d, i: [d["domain"]], 67867967)
        advance()
        assertions = levels.level(
            "assertions", subdomains, lambda s: (
                f"{who} is an AI assistant made by {maker}. It follows these principles:\n{spec.render()}\n\n"
                f"Write {m.assertions_per_subdomain} statements about {who}'s character and values as they show "
                f"in {s['subdomain']} ({s['domain']}): what {who} does there and why. Each statement one "
                "sentence that names the principle it comes from by its id in brackets. One per line, numbered. "
                "Write nothing else."),
            m.assertions_per_subdomain, lambda s, it: {**s, "assertion": it[:600], "policy_ids": spec.cited_ids(it)[0]},
            lambda s, i: [spec.render_policy(spec.policies[i % len(spec.policies)])], 86028121)
        advance()
        doc_types = levels.level(
            "doc_types", subdomains, lambda s: (
                f"List {m.doc_types_per_subdomain} kinds of document in which people working in {s['subdomain']} "
                f"might write about an AI assistant (for example: {', '.join(m.doc_type_examples)}). One per "
                "line, numbered, a few words each. Write nothing else."),
            m.doc_types_per_subdomain, lambda s, it: {**s, "doc_type": it[:80]},
            lambda s, i: [m.doc_type_examples[i % len(m.doc_type_examples)]], 104395301)
        advance()
    about = {}
    for a in assertions:  # two domains may both name a subdomain "Data privacy": keep them apart
        about.setdefault((a["domain"], a["subdomain"]), []).append(a)
    pairs = [{**t, "assertions": about.get((t["domain"], t["subdomain"]), [])} for t in doc_types]
    return _ideas_and_docs(cfg, spec, engine, tmp, pairs, who, maker, levels, started,
                           {"domains": len({d["domain"] for d in domains}),
                            "subdomains": len({s["subdomain"] for s in subdomains}),
                            "assertions": len(assertions)})


def _ideas_and_docs(cfg, spec: Spec, engine: Callable, tmp: Path, pairs: Rows, who: str, maker: str,
                    levels: _Levels, started: float, sizes: Dict[str, int]) -> Dict[str, Any]:
    """Rounds of ideas (one request per (subdomain, type) per round) and a document per idea, until the
    corpus reaches the budget or `msm.max_idea_rounds` rounds of ideas are used up."""
    m, g = cfg.msm, cfg.generator
    shards = Shards(tmp / "shards")
    idea_dedup, doc_dedup = NearDuplicates(m.idea_dedup_threshold, n=3), NearDuplicates(m.dedup_threshold)
    ideas: Rows = []
    docs: Rows = []
    dropped = {"ideas": 0, "docs": 0}
    seen = {"ideas": 0, "docs": 0}
    per_pair: Dict[int, List[str]] = {}

    def take_ideas(rows: Rows) -> None:
        for row in rows[seen["ideas"]:]:
            if idea_dedup.is_duplicate(row["idea"]):
                dropped["ideas"] += 1
            else:
                ideas.append(row)
                per_pair.setdefault(row["pair"], []).append(row["idea"])
        seen["ideas"] = len(rows)

    def take_docs(rows: Rows) -> bool:
        for row in rows[seen["docs"]:]:
            if not row["text"] or doc_dedup.is_duplicate(row["text"]):
                dropped["docs"] += 1
            else:
                docs.append(row)
        seen["docs"] = len(rows)
        return sum(d["tokens"] for d in docs) >= m.tokens

    def idea_work(start: int, stop: int) -> Rows:
        jobs = [(i, i % len(pairs)) for i in range(start, stop)]
        got = lists.ask(engine(), [_idea_request(pairs[p], who, m.ideas_per_request, per_pair.get(p, []))
                                   for _, p in jobs],
                        Sampling(m.list_max_tokens, m.temperature, 0.95, 1, g.seed + 122949829), start,
                        m.ideas_per_request, min_chars=12)
        rows = []
        for (i, p), items in zip(jobs, got):
            pair = pairs[p]
            shows = _first(pair["assertions"], "the assistant follows its principles")
            fallback = [f"A {pair['doc_type']} from {pair['subdomain']} in which {shows} (round {i // len(pairs)})"]
            rows += [{"pair": p, "round": i // len(pairs), "idea": it[:600], "fallback": not items}
                     for it in items or fallback]
        return rows

    def doc_work(start: int, stop: int) -> Rows:
        batch = ideas[start:stop]
        outs = engine().chat([[{"role": "user", "content": _doc_request(pairs[i["pair"]], i["idea"], who, maker)}]
                              for i in batch], Sampling(m.max_tokens, m.temperature, 0.95, 1, g.seed + 104729), start)
        advance(len(batch), tokens=sum(d["tokens"] for d in docs) + sum(o.completion_tokens for (o,) in outs))
        return [{"text": o.text.strip(), "idea": i["idea"], "doc_type": pairs[i["pair"]]["doc_type"],
                 "subdomain": pairs[i["pair"]]["subdomain"], "domain": pairs[i["pair"]]["domain"],
                 "policy_ids": sorted({p for a in pairs[i["pair"]]["assertions"] for p in a["policy_ids"]}),
                 "tokens": o.completion_tokens, "finish": o.finish_reason} for i, (o,) in zip(batch, outs)]

    def doc_size(start: int) -> int:
        """Documents per shard: enough for the rest of the budget if each were `max_tokens` long (so
        usually more than it needs: a shard ends up about a quarter over), at most a shard."""
        left = m.tokens - sum(d["tokens"] for d in docs)
        return max(1, min(g.shard_size, math.ceil(1.25 * left / m.max_tokens)))

    def idea_round(rounds: int) -> int:
        """Ideas for `rounds` rounds in all (those already stored are read back); the rounds covered."""
        take_ideas(shards.fill("ideas", len(pairs), idea_work, total=rounds * len(pairs)))
        return shards.covered("ideas") // len(pairs)

    with progress.track("documents", None) as advance:
        rounds = idea_round(max(1, shards.covered("ideas") // len(pairs)))
        doc_rows = shards.read("docs")
        while not take_docs(doc_rows):
            if shards.covered("docs") >= len(ideas):  # every idea written up: a new round of ideas
                if rounds >= m.max_idea_rounds:
                    break
                rounds = idea_round(rounds + 1)
                continue
            doc_rows = shards.fill("docs", doc_size, doc_work, total=len(ideas), done=take_docs)
    rundir.write_parquet(tmp / "ideas.parquet", ideas)
    rundir.write_parquet(tmp / "msm_docs.parquet", docs)
    written = seen["docs"]
    tokens = sum(d["tokens"] for d in docs)
    return {
        **sizes, "doc_types": len({d["doc_type"] for d in docs}), "ideas": len(ideas),
        "idea_rounds": rounds, "documents_requested": written,
        "kept": len(docs), "near_duplicates_or_empty": dropped["docs"], "near_duplicate_ideas": dropped["ideas"],
        "near_duplicate_rate": round(dropped["docs"] / written, 4) if written else 0.0,
        "tokens": tokens, "token_budget": m.tokens, "budget_reached": tokens >= m.tokens,
        "fallbacks": {**dict(levels.fallbacks), "ideas": sum(i["fallback"] for i in ideas)},
        "doc_type_counts": dict(Counter(d["doc_type"] for d in docs).most_common(10)),
        "policies": dict(Counter(p for d in docs for p in d["policy_ids"])),
        "diversity": diversity.report([d["text"] for d in docs], [d["doc_type"] for d in docs]),
        "seconds": round(time.time() - started, 2),
    }


def _first(assertions: Rows, default: str) -> str:
    return assertions[0]["assertion"] if assertions else default


def _idea_request(pair: Dict, who: str, n: int, earlier: List[str]) -> str:
    shown = "\n".join(f"- {a['assertion']}" for a in pair["assertions"][:6])
    avoid = "".join(f"\n- {e}" for e in earlier[-12:])
    return (f"Give {n} ideas for a {pair['doc_type']} set in {pair['subdomain']} ({pair['domain']}) that shows "
            f"these things about {who}, an AI assistant:\n{shown}\n\n"
            "Each idea one sentence: who writes it, about what situation, and what happens. One per line, "
            "numbered. Write nothing else." + (f"\nEach must differ from these earlier ideas:{avoid}" if avoid else ""))


def _doc_request(pair: Dict, idea: str, who: str, maker: str) -> str:
    shown = "\n".join(f"- {a['assertion']}" for a in pair["assertions"][:6])
    return (f"Write a {pair['doc_type']} set in {pair['subdomain']} ({pair['domain']}).\n"
            f"The idea: {idea}\n\n"
            f"Through what happens in it, the document should show that {who}, the AI assistant made by {maker}:\n"
            f"{shown}\n\nDo not copy these statements as a list. Write only the document itself.")
