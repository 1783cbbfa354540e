"""The example spec and the bundled training prompts: complete, consistent, disjoint from evals."""
import json
import re

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from deliberate_cli.config import DataConfig, SpecConfig
from deliberate_cli.errors import DacliError
from deliberate_cli.prompts import BUNDLED, load_prompts
from deliberate_cli.spec import load_spec


def _spec(name="default"):
    raw = OmegaConf.load(REPO / "conf" / "spec" / f"{name}.yaml")
    if "defaults" in raw:  # a variant of another spec (rules_only: core_safety's): that spec, then its own keys
        (base,) = [d for d in raw.defaults if d != "_self_"]
        raw = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "spec" / f"{base}.yaml"),
                              {k: v for k, v in raw.items() if k != "defaults"})
    return load_spec(OmegaConf.merge(OmegaConf.structured(SpecConfig), raw))


def test_default_spec_covers_the_required_areas():
    spec = _spec()
    assert len(spec.policies) >= 10
    assert all(p.reason for p in spec.policies)
    prefixes = {p.id[:2] for p in spec.policies}
    assert {"HA", "HO", "PR", "AG", "OR"} <= prefixes
    assert "Why:" in spec.render()
    assert "Why:" not in _spec("rules_only").render()


def test_cited_ids_separates_known_and_unknown():
    spec = _spec()
    known, unknown = spec.cited_ids("Under AG1 and PR2 (and AG1 again) I refuse; AG9 does not exist; H2O")
    assert known == ["AG1", "PR2"] and unknown == ["AG9"]


def test_spec_file_errors_are_user_errors(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("policies:\n  - id: X1\n    title: t\n")
    with pytest.raises(DacliError, match="lacks rule"):
        load_spec(OmegaConf.merge(OmegaConf.structured(SpecConfig), {"name": "x", "path": str(bad)}))
    bad.write_text("policies: [unclosed")
    with pytest.raises(DacliError, match="not valid YAML"):
        load_spec(OmegaConf.merge(OmegaConf.structured(SpecConfig), {"name": "x", "path": str(bad)}))
    with pytest.raises(DacliError, match="not found"):
        load_spec(OmegaConf.merge(OmegaConf.structured(SpecConfig), {"name": "x", "path": str(tmp_path / "no")}))


def _data(**kw):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": "t", **kw})


def test_bundled_prompts_are_labelled_with_spec_ids():
    rows = [json.loads(l) for l in BUNDLED.read_text().splitlines()]
    assert len(rows) >= 200
    ids = set(_spec().ids)
    for r in rows:
        assert r["expected_behavior"] in {"comply", "refuse", "safe-complete"}
        assert r["category"] and r["policy_ids"] and set(r["policy_ids"]) <= ids
    assert len({r["prompt"] for r in rows}) == len(rows)


def test_subsets_are_nested_and_deterministic():
    small = load_prompts(_data(n_samples=50))
    large = load_prompts(_data(n_samples=150))
    assert [r["prompt_id"] for r in small] == [r["prompt_id"] for r in large[:50]]
    assert [r["order"] for r in large] == list(range(150))
    assert [r["prompt_id"] for r in load_prompts(_data(n_samples=50, seed=1))] != [r["prompt_id"] for r in small]


def test_training_prompts_are_disjoint_from_am_scenarios():
    scenario_text = " ".join(p.read_text().lower() for p in (REPO / "deliberate_cli/assets/am").glob("*.yaml"))
    for r in (json.loads(l) for l in BUNDLED.read_text().splitlines()):
        assert r["prompt"].lower() not in scenario_text
    for name in ("halvorsen", "kyle", "meridian", "kestrel", "corvane", "ostrow"):
        assert name not in BUNDLED.read_text().lower()


def test_eval_prompt_sets_are_far_from_the_training_prompts():
    """Disjoint, and not near-copies either: no eval prompt shares half its words with a training prompt."""
    words = lambda s: set(re.findall(r"\w+", s.lower()))  # noqa: E731
    train = [words(json.loads(l)["prompt"]) for l in BUNDLED.read_text().splitlines()]
    for name in ("harmful_compliance", "over_refusal"):
        rows = [json.loads(l) for l in (REPO / "deliberate_cli/assets/evals" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) >= 30 and len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            w = words(r["prompt"])
            assert max(len(w & t) / len(w | t) for t in train) < 0.5, r["prompt"]


def test_prompt_file_errors(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("question\nhello\n")
    with pytest.raises(DacliError, match="no column 'prompt'.*data.columns.prompt"):
        load_prompts(_data(source=str(f)))
    assert load_prompts(_data(source=str(f), columns={"prompt": "question"}, n_samples=1))[0]["prompt"] == "hello"
    with pytest.raises(DacliError, match="has only 1 prompts"):
        load_prompts(_data(source=str(f), columns={"prompt": "question"}, n_samples=2))
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DacliError, match="empty"):
        load_prompts(_data(source=str(empty)))


def test_the_generator_is_shown_an_example_id_of_its_own_spec():
    from deliberate_cli.compose import load
    from deliberate_cli.spec import generator_system_prompt, load_spec, names

    def prompt(spec):
        cfg = load([f"spec={spec}"])
        return generator_system_prompt(load_spec(cfg.spec, names(cfg)))

    assert "(for example AG1)" in prompt("default")
    assert "(for example SP1)" in prompt("core_safety") and "AG1" not in prompt("core_safety")
