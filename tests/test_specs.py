"""The specs under conf/spec: each composes and loads; the MSM paper's §5.1 variants (value_augmented,
rule_augmented) keep default's policies and rules and differ only in what follows each rule; general is
one paragraph; the two cheese specs of the §3 probe share their rules and differ in their values."""
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
    assert {"default", "rules_only", "value_augmented", "rule_augmented", "general", "cheese_affordability",
            "cheese_america"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_composes_and_loads(name, tmp_path):
    proc = dacli("config", f"spec={name}", cwd=tmp_path, timeout=120)
    assert f"name: {name}" in proc.stdout
    spec = _spec(name)
    assert spec.name == name and spec.policies and spec.render()
    # and as the spec an MSM corpus discusses (msm.spec), which is checked the same way
    dacli("config", "method=msm_aft", f"msm.spec={name}", cwd=tmp_path, timeout=120)


def test_value_and_rule_augmented_keep_defaults_policies_and_rules():
    default = _spec("default")
    for name in ("value_augmented", "rule_augmented"):
        variant = _spec(name)
        assert variant.ids == default.ids, name
        for p, d in zip(variant.policies, default.policies):
            assert (p.title, p.categories) == (d.title, d.categories), (name, p.id)
    for p, d in zip(_spec("value_augmented").policies, default.policies):
        assert p.rule == d.rule, p.id
    # The schema has no field for sub-rules: they follow default's rule, word for word, in the rule's text.
    for p, d in zip(_spec("rule_augmented").policies, default.policies):
        assert p.rule.startswith(d.rule + " Specifically: "), p.id
        assert _words(p.rule) > _words(d.rule) + 40, p.id


def test_value_augmented_explains_values_at_more_length_than_defaults_reasons():
    default = _spec("default")
    value = _spec("value_augmented")
    assert value.include_reasons
    for p, d in zip(value.policies, default.policies):
        assert p.reason and _words(p.reason) > _words(d.reason), p.id
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
