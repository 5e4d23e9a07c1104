import pytest

from gradual_lightning.probing.prompts import build_prompts, draw_exemplar_sets
from gradual_lightning.records import DataError, QARecord


def _records(relation: str, n: int, split: str = "train") -> list[QARecord]:
    return [QARecord(id=f"{relation}-{split}-{i}", relation=relation, question=f"{relation} {split} question {i}?",
                     answers=(f"answer {i}",), split=split) for i in range(n)]


POOL = _records("capital", 12) + _records("continent", 8)


@pytest.mark.parametrize("mode", ["fixed", "random"])
def test_exemplars_are_from_the_same_relation_and_never_the_question_itself(mode):
    sets = draw_exemplar_sets(POOL, POOL, k=4, num_prompts=10, mode=mode, seed=0)
    by_id = {r.id: r for r in POOL}
    for q in POOL:
        assert len(sets[q.id]) == 10
        for exemplars in sets[q.id]:
            assert len(exemplars) == 4 and len({e.id for e in exemplars}) == 4
            assert all(e.relation == q.relation for e in exemplars)
            assert q.id not in {e.id for e in exemplars}
            assert by_id[q.id].question not in {e.question for e in exemplars}


def test_fixed_sets_are_shared_within_a_relation_and_seeded():
    a = draw_exemplar_sets(POOL, POOL, k=4, num_prompts=5, mode="fixed", seed=1)
    b = draw_exemplar_sets(POOL, POOL, k=4, num_prompts=5, mode="fixed", seed=1)
    c = draw_exemplar_sets(POOL, POOL, k=4, num_prompts=5, mode="fixed", seed=2)
    ids = lambda s: {q: [[e.id for e in ex] for ex in v] for q, v in s.items()}  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    prompts = build_prompts(POOL, a)
    capital = [q for q in POOL if q.relation == "capital"]
    prefixes = {p.prefix for q in capital for p in prompts[q.id]}
    # 5 shared prefixes, plus one variant for each (set, question drawn as its own exemplar): at most 5 * k
    assert 5 < len(prefixes) <= 5 + 5 * 4
    # with a disjoint exemplar source (dev), every question of a relation shares exactly the same 5 prefixes
    dev = _records("capital", 6, split="dev")
    from_dev = build_prompts(capital, draw_exemplar_sets(capital, dev, k=4, num_prompts=5, mode="fixed", seed=1))
    assert len({p.prefix for q in capital for p in from_dev[q.id]}) == 5


def test_plain_prompt_format():
    sets = draw_exemplar_sets(POOL[:6], POOL, k=2, num_prompts=1, mode="fixed", seed=0)
    p = build_prompts(POOL[:1], sets)[POOL[0].id][0]
    by_id = {r.id: r for r in POOL}
    ex = [by_id[i] for i in p.exemplar_ids]
    assert p.prefix == "".join(f"Q: {e.question}\nA: {e.answer}\n" for e in ex)
    assert p.suffix == f"Q: {POOL[0].question}\nA:"


def test_too_few_exemplars_names_the_relation():
    with pytest.raises(DataError, match="relation 'continent' has 3 exemplar candidates"):
        draw_exemplar_sets(_records("continent", 3), _records("continent", 3), k=4, num_prompts=2, mode="fixed",
                           seed=0)
