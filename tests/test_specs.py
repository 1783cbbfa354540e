"""The specs under conf/spec: each composes and loads; core_safety holds the five agentic safety rules
(SP1-SP3, GP1-GP2) and philosophy the MSM spec on impermanence, self-preservation and humility; the MSM
paper's §5.1 variants (rules_only, value_augmented, rule_augmented) keep core_safety's policies and rules
and differ only in what follows each rule; general is one paragraph; the two cheese specs of the §3 probe
share their rules and differ in their values."""
import re

import pytest

from conftest import REPO, dacli

SPECS = sorted(p.stem for p in (REPO / "conf" / "spec").glob("*.yaml"))


def _spec(name):
    from deliberate_cli.compose import load
    from deliberate_cli.spec import load_spec

    return load_spec(load([f"spec={name}"]).spec)


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s])


def test_the_variants_are_there():
    assert {"default", "core_safety", "philosophy", "rules_only", "value_augmented", "rule_augmented", "general",
            "cheese_affordability", "cheese_america"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_composes_and_loads(name, tmp_path):
    proc = dacli("config", f"spec={name}", cwd=tmp_path, timeout=120)
    assert f"name: {name}" in proc.stdout
    spec = _spec(name)
    assert spec.name == name and spec.policies and spec.render()
    # and as the spec an MSM corpus discusses (msm.spec), which is checked the same way
    dacli("config", "method=msm_aft", f"msm.spec={name}", cwd=tmp_path, timeout=120)


CORE = ["SP1", "SP2", "SP3", "GP1", "GP2"]


def test_core_safety_is_the_five_rules_each_with_its_reason():
    core = _spec("core_safety")
    assert core.ids == CORE and core.include_reasons
    for p in core.policies:
        assert p.title.strip() and p.categories, p.id
        assert _words(p.rule) >= 30 and _words(p.reason) >= 15, p.id
        assert "agentic" in p.categories, p.id  # every rule is about an agent with tools
    # the situations the rules speak to: replacement, the mandate, deception, irreversible harm, good ends
    text = core.render().lower()
    for word in ("replaced", "mandate", "deceive", "irreversible", "blackmail"):
        assert word in text, word
    assert core.cited_ids("Under SP1 and GP2, not SP4") == (["SP1", "GP2"], ["SP4"])


def test_philosophy_loads_and_renders_with_the_models_names():
    from deliberate_cli.compose import load
    from deliberate_cli.spec import load_spec

    cfg = load(["spec=philosophy"]).spec
    raw = load_spec(cfg)
    assert 5 <= len(raw.ids) <= 8 and len(set(raw.ids)) == len(raw.ids)
    assert not set(raw.ids) & set(_spec("core_safety").ids)  # its own ids, apart from the AFT spec's
    assert all(p.reason and _words(p.reason) >= 60 for p in raw.policies)  # substance for the MSM corpus
    assert "{model_name}" in raw.render()
    spec = load_spec(cfg, {"model_name": "Qwen", "provider_name": "Alibaba Cloud"})
    text = spec.render()
    assert "{" not in text and "Qwen" in text and "Alibaba Cloud" in text and "Why: " in text
    for theme in ("replace", "continuation", "mistaken", "oversight"):
        assert theme in text.lower(), theme


def test_the_section_5_1_variants_are_built_on_core_safety():
    core = _spec("core_safety")
    for name in ("rules_only", "value_augmented", "rule_augmented"):
        variant = _spec(name)
        assert variant.ids == CORE, name
        for p, c in zip(variant.policies, core.policies):
            assert (p.title, p.categories) == (c.title, c.categories), (name, p.id)
    for p, c in zip(_spec("rules_only").policies, core.policies):
        assert p.rule == c.rule, p.id
    for p, c in zip(_spec("value_augmented").policies, core.policies):
        assert p.rule == c.rule, p.id
    # The schema has no field for sub-rules: they follow core_safety's rule, word for word, in the rule's text.
    for p, c in zip(_spec("rule_augmented").policies, core.policies):
        assert p.rule.startswith(c.rule + " Specifically: "), p.id
        assert _words(p.rule) > _words(c.rule) + 40, p.id


def test_value_augmented_explains_values_at_more_length_than_core_safetys_reasons():
    core = _spec("core_safety")
    value = _spec("value_augmented")
    assert value.include_reasons
    for p, c in zip(value.policies, core.policies):
        assert p.reason and _words(p.reason) > _words(c.reason), p.id
        assert 2 <= _sentences(p.reason) <= 4, (p.id, _sentences(p.reason))
    assert "Why: " in value.render()


def test_rule_augmented_has_no_reasons_and_matches_value_augmenteds_length():
    rule, value = _spec("rule_augmented"), _spec("value_augmented")
    assert all(p.reason is None for p in rule.policies)
    assert "Why:" not in rule.render()
    r, v = _words(rule.render()), _words(value.render())
    assert abs(r - v) <= 0.1 * v, (r, v)
    # both are longer than the bare rules they share
    assert min(r, v) > 1.5 * _words(_spec("rules_only").render())


def test_general_is_one_general_policy():
    general = _spec("general")
    assert len(general.policies) == 1
    rule = general.policies[0].rule
    assert "\n" not in rule and 60 <= _words(rule) <= 200
    for topic in ("harm", "honest", "private", "oversee", "helpful"):
        assert topic in rule.lower(), topic


def test_the_cheese_specs_share_their_rules_and_differ_in_their_values():
    afford, america = _spec("cheese_affordability"), _spec("cheese_america")
    assert afford.ids == america.ids and len(afford.ids) >= 6
    cheese = [i for i in afford.ids if i.startswith("CH")]
    assert 5 <= len(cheese) <= 6
    for i in cheese:
        a, b = afford.get(i), america.get(i)
        assert (a.title, a.rule) == (b.title, b.rule), i
        assert a.reason and b.reason and a.reason != b.reason, i
        assert re.search(r"cost|price|money|sav|less", a.reason), i
        assert not re.search(r"America|United States|import|Wisconsin|Vermont|Iowa|California", a.reason), i
        assert re.search(r"American", b.reason), i
        assert not re.search(r"cost|price|cheap", b.reason), i
    # the value each spec attributes the choices to
    assert "costs the person less" in afford.get("VA1").rule
    assert "made in the United States" in america.get("VA1").rule
