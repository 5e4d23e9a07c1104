import json

from gradual_lightning.categories import CATEGORIES, Category


def test_names_in_order():
    assert [c.value for c in Category] == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    assert CATEGORIES == ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
    assert all(type(c) is str for c in CATEGORIES)  # plain strings, not members


def test_short_names_and_colours():
    assert [c.short for c in Category] == ["HK", "MK", "WK", "Unk"]
    assert [c.colour for c in Category] == ["#2b8a3e", "#94d82d", "#fab005", "#e03131"]


def test_members_are_the_stored_strings():
    for c, name in zip(Category, CATEGORIES):
        assert c == name and hash(c) == hash(name)
        assert Category(name) is c
        assert str(c) == f"{c}" == name
        assert {name: 1}[c] == 1 and {c: 1}[name] == 1


def test_json_round_trip():
    text = json.dumps({Category.HIGHLY_KNOWN: Category.UNKNOWN, "all": list(Category)})
    assert text == '{"HighlyKnown": "Unknown", "all": ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]}'
    back = json.loads(text)
    assert Category(back["HighlyKnown"]) is Category.UNKNOWN
    assert [Category(c) for c in back["all"]] == list(Category)
