"""probe.py's categories.png: one stacked bar per relation, written atomically."""

from types import SimpleNamespace

from gradual_lightning.probing.summary import counts_by_relation, plot_categories, summary_table


def _results(relations):
    cats = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    return [SimpleNamespace(relation=rel, category=cats[i % 4]) for rel in relations for i in range(5)]


def test_counts_by_relation():
    counts = counts_by_relation(_results(["P36", "P17"]))
    assert list(counts) == ["P17", "P36"]
    assert counts["P17"] == {"HighlyKnown": 2, "MaybeKnown": 1, "WeaklyKnown": 1, "Unknown": 1}
    assert list(counts["P17"]) == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]


def test_summary_table_rows_and_total():
    table = summary_table(_results(["P36", "P17"]))
    cells = [list(col.cells) for col in table.columns]
    assert [col.header for col in table.columns] == ["relation", "HighlyKnown", "MaybeKnown", "WeaklyKnown",
                                                      "Unknown", "total"]
    assert [row[0] for row in zip(*cells)] == ["P17", "P36", "[bold]all"]
    assert list(zip(*cells))[-1][1:] == ("[bold]4", "[bold]2", "[bold]2", "[bold]2", "[bold]10")


def test_plot_is_a_png_that_grows_with_the_relations_and_leaves_no_temp_file(tmp_path):
    from PIL import Image

    one = plot_categories(_results(["capital"]), tmp_path / "one.png")
    six = plot_categories(_results([f"r{i}" for i in range(6)]), tmp_path / "six.png")
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(six).height > Image.open(one).height
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "six.png"]
