"""What a board says in words: only what its corrected tests support; failed cells shown as
failed; the README's excerpt rewritten between its markers."""

from __future__ import annotations

import math

import pytest
from matplotlib.colors import same_color
from scipy import stats

from benchsuite.boards.aggregation import aggregate
from benchsuite.boards.findings import across_targets, cliques, findings, tuned_minus_default
from benchsuite.boards.plot import plot
from benchsuite.boards.publish import readme_excerpt, readme_markers, update_readme
from benchsuite.boards.render import to_json, to_markdown
from benchsuite.core.errors import BadInput
from tests.test_leaderboard import rec

# three methods, four seeds, two targets; z is far below, x and y close together
ACC = {
    0.9: {"x": [90.0, 91.0, 92.0, 91.0], "y": [89.5, 90.8, 91.5, 91.3], "z": [80, 81, 82, 81]},
    0.98: {"x": [85.0, 86.0, 87.0, 86.0], "y": [84.5, 86.5, 86.2, 85.7], "z": [70, 71, 72, 71]},
}


def runs(acc=ACC, floor="z") -> list:
    out = [rec("dense", 0, s, 95.0, sparsity=0.0) for s in range(4)]
    for target, by_method in acc.items():
        for m, vals in by_method.items():
            name = "oneshot" if m == floor else m
            out += [
                rec(name, target, s, v, sparsity=target, classes=10) for s, v in enumerate(vals)
            ]
    return out


def test_sentences_claim_only_what_the_corrected_tests_separate() -> None:
    board = aggregate(runs(), experiment="words")
    text = findings(board)
    # x and y: no corrected test separates them, so no order is claimed between them
    at90 = next(t for t in text if t.startswith("At 90%, the best group"))
    assert "has 2 of 3 compared methods: x has the highest mean" in at90
    assert "no corrected test separates y from it; their order is not established" in at90
    assert "At 90%, every compared method is separated above the one-shot floor" in " ".join(text)
    for sentence in text:
        for word in ("leads", "beats", "ahead of", "outperforms", "better than"):
            assert word not in sentence


def test_the_floor_sentence_is_its_own_holm_family_computed_by_hand() -> None:
    """A floor whose seeds scatter (80, 86, 78, 87): x and y are each separated from it on their
    own paired test (p 0.038, 0.034) but not after Holm over the column's two methods (× 2 and
    running max: 0.068 for both), so neither is "above the floor". As a lone pair in the marks'
    family below the best, y − floor would pass (0.034) while x, higher, would not."""
    z = [80.0, 86.0, 78.0, 87.0]
    acc = {0.9: {"x": ACC[0.9]["x"], "y": ACC[0.9]["y"], "z": z}}
    board = aggregate(runs(acc), experiment="floor")

    def p_paired(a: list[float], b: list[float]) -> float:
        d = [u - v for u, v in zip(a, b)]
        mean = sum(d) / 4
        sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 3)
        return 2 * stats.t.sf(abs(mean / (sd / 2)), 3)

    px, py = p_paired(acc[0.9]["x"], z), p_paired(acc[0.9]["y"], z)
    assert py < px < 0.05
    assert max(2 * py, px) > 0.05  # Holm over two: neither survives
    text = " ".join(findings(board))
    assert "At 90%, x, y are not separated above the one-shot floor" in text
    below = next(c for c in board.comparisons if (c.upper, c.lower) == ("y", "oneshot"))
    assert below.family == "rest" and below.status == "separated"  # the marks' question differs


def test_each_pattern_is_compared_with_its_own_floor() -> None:
    """A structured board has one floor per pattern (oneshot (2:4), oneshot (channel)): a channel
    row is read against the channel floor only, never against another pattern's."""
    vals = {
        ("x", "2:4"): [90.0, 91.0, 92.0, 91.0],
        ("oneshot", "2:4"): [80.0, 81.0, 82.0, 81.2],
        ("y", "channel"): [85.0, 86.0, 87.0, 86.0],
        ("oneshot", "channel"): [84.9, 86.1, 86.8, 86.2],
    }
    out = [rec("dense", 0, s, 95.0, sparsity=0.0) for s in range(4)]
    for (m, pattern), accs in vals.items():
        for s, v in enumerate(accs):
            r = rec(m, 0.5, s, v, sparsity=0.5, classes=10, variant=pattern)
            r.params["pattern"] = pattern
            out.append(r)
    board = aggregate(out, experiment="patterns")
    assert board.row("y (channel)").pattern == "channel"
    text = findings(board)
    assert "At 50%, every compared method is separated above the one-shot floor (oneshot (2:4)" in (
        " ".join(text)
    )
    assert any(
        t.startswith(
            "At 50%, y (channel) is not separated above the one-shot floor (oneshot (channel), "
        )
        for t in text
    )
    assert not any("x (2:4)" in t and "floor" in t for t in text)


def test_friedman_ranks_and_critical_difference_by_hand() -> None:
    """Blocks are every (target, seed): x wins 6 of 8, y 2 of 8, z is last in all."""
    board = aggregate(runs(), experiment="ranks")
    result = across_targets(board)
    assert result is not None and result.blocks == 8
    blocks = [(t, s) for t in ACC for s in range(4)]
    wins_x = sum(ACC[t]["x"][s] > ACC[t]["y"][s] for t, s in blocks)
    assert wins_x == 6
    assert result.average_rank == {
        "oneshot": 3.0,
        "x": pytest.approx((wins_x * 1 + (8 - wins_x) * 2) / 8),
        "y": pytest.approx(((8 - wins_x) * 1 + wins_x * 2) / 8),
    }
    columns = [[ACC[t][m][s] for t, s in blocks] for m in ("x", "y", "z")]
    assert result.chi2 == pytest.approx(stats.friedmanchisquare(*columns).statistic)
    # Nemenyi: CD = q_α/√2 · √(k(k+1)/(6N)), q_0.05 for k = 3 (infinite df) = 3.314
    assert result.cd == pytest.approx(3.314 / math.sqrt(2) * math.sqrt(3 * 4 / (6 * 8)), rel=1e-3)
    assert cliques(["a", "b", "c"], {"a": 1.0, "b": 1.5, "c": 3.0}, 1.0) == [["a", "b"]]
    md = to_markdown(board)
    assert "## Across targets" in md and "| x | 1.25 |" in md


def test_a_cell_with_a_seed_at_chance_is_footnoted_left_out_and_shown_seed_by_seed() -> None:
    acc = {
        0.9: {"x": [90.0, 91.0, 92.0, 91.0], "y": [85.0, 10.5, 86.0, 11.0], "z": [80, 81, 82, 81]}
    }
    board = aggregate(runs(acc), experiment="chance")
    y = board.row("y").cells[0.9]
    assert y.at_chance == (1, 3) and not y.ranked
    assert y.flags() == ["did not learn: test accuracy at chance in 2 of 4 seeds (seed 1, 3)"]
    assert y.marks["test_accuracy"].rank is None  # not compared
    assert not any("y" in (c.upper, c.lower) for c in board.comparisons)
    md = to_markdown(board)
    row = next(line for line in md.splitlines() if line.startswith("| y |"))
    assert "seeds 85.00 / 10.50 / 86.00 / 11.00" in row and "±" not in row.split("|")[3]
    assert "- [1] y at 90%: did not learn: test accuracy at chance in 2 of 4 seeds" in md
    assert "at 90%, y is left out of the marks: did not learn" in " ".join(findings(board)).lower()


def test_the_readme_excerpt_is_rewritten_between_its_markers(tmp_path) -> None:
    board = aggregate(runs(), experiment="words")
    start, end = readme_markers("words")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{start}\nold text\n{end}\n\nafter\n")
    excerpt = readme_excerpt(board, "leaderboards/words.md")
    update_readme(readme, "words", excerpt)
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{end}\n\nafter\n")
    assert "old text" not in text and "| x | **91.00 ± 0.82** |" in text
    assert "- At 90%, the best group has 2 of 3" in text
    update_readme(readme, "words", excerpt)  # idempotent: the same bytes again
    assert readme.read_text() == text
    with pytest.raises(BadInput, match="no <!-- results:other --> ... <!-- /results:other -->"):
        update_readme(readme, "other", excerpt)


def test_tuned_minus_default_is_paired_by_seed() -> None:
    defaults = aggregate(runs(), experiment="d")
    tuned_runs = [
        rec("x", 0.9, s, v + 0.5, variant="tuned", tuned="true", classes=10)
        for s, v in enumerate(ACC[0.9]["x"])
    ]
    board = aggregate(tuned_runs, experiment="t")
    (delta,) = tuned_minus_default(board, defaults)
    assert (delta.method, delta.target, delta.seeds) == ("x", 0.9, 4)
    assert delta.mean == pytest.approx(0.5) and delta.ci95 == pytest.approx((0.5, 0.5))
    assert not delta.same
    board.deltas = [delta]
    assert "## Tuned − defaults" in to_markdown(board)
    assert '"tuned_minus_default"' in to_json(board)


def test_a_cell_where_tuning_kept_the_defaults_says_so() -> None:
    """Its runs are the defaults board's own (the same keys, copied): difference 0 per seed."""
    defaults = aggregate(runs(), experiment="d")
    kept = [
        rec("x", 0.9, s, v, variant="tuned", tuned="true", classes=10)
        for s, v in enumerate(ACC[0.9]["x"])
    ]
    moved = [
        rec("y", 0.9, s, v + 0.5, variant="tuned", tuned="true", classes=10)
        for s, v in enumerate(ACC[0.9]["y"])
    ]
    board = aggregate(kept + moved, experiment="t")
    board.deltas = tuned_minus_default(board, defaults)
    assert [(d.method, d.same) for d in board.deltas] == [("x", True), ("y", False)]
    md = to_markdown(board)
    assert "| x | 0 (defaults kept, n=4) |" in md
    # a constant +0.5 on every seed: separated (t infinite), the family is y's test alone
    assert board.deltas[1].p == 0.0 and board.deltas[1].p_holm == 0.0
    assert "| y | **+0.50 [+0.50, +0.50]** (n=4) |" in md
    assert "above the defaults in 1 (y at 90%) and below them in 0 (none)" in md
    assert "of which 1 are the defaults' own runs" in md
    assert "above the defaults in 1 (y at 90%)" in readme_excerpt(board, "t.md")


def test_the_rank_diagram_colours_each_method_as_its_accuracy_line() -> None:
    fig = plot(aggregate(runs(), experiment="ranks"))
    lines = {
        c.get_label().removesuffix(" (floor)"): c.lines[0].get_color()
        for c in fig.axes[0].containers
    }
    diagram = fig.axes[2]  # below the two accuracy panels
    texts = {t.get_text().rsplit(" (", 1)[0].split(") ", 1)[-1]: t for t in diagram.texts}
    ranked = {"x", "y", "oneshot"}
    assert ranked <= texts.keys() and ranked <= lines.keys()
    for label in ranked:
        assert same_color(texts[label].get_color(), lines[label]), label
