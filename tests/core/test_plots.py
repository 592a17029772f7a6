"""The PNGs a person looks at: a grid with per-domain lines overlaid per panel, and before/after bars."""

import matplotlib.image

from core.plots import plot_before_after, plot_panels, smoothed


def test_panels_overlay_per_domain_lines_and_skip_empty_panels(tmp_path):
    series = {"reward": [(1, 0.1), (2, 0.3)], "reward/math": [(1, 0.2), (2, 0.4)], "reward/code": [(1, 0.0), (2, 0.2)],
              "kl": [(1, 0.0), (2, 0.01)]}
    panels = {"reward": ["reward", "reward/*"], "kl": ["kl"], "entropy": ["entropy"]}
    path = plot_panels(series, panels, tmp_path / "grid.png")
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > height  # two filled panels side by side; the entropy panel (no values) is left out
    assert plot_panels(series, {"entropy": ["entropy"]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_before_after_bars_one_panel_per_domain_scores_on_their_own_scale(tmp_path):
    results = {"math": {"greedy": (0.3, 0.45), "mean@8": (0.2, 0.4)}, "code": {"greedy": (0.1, None)},
               "chat": {"greedy": (-0.9, 2.7)}}  # a reward model's score, negative before
    path = plot_before_after(results, tmp_path / "bars.png", title="held-out")
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 2.5 * height  # three panels side by side


def test_long_series_get_a_trailing_mean_drawn_over_them(tmp_path):
    """A per-step accuracy alternating 0 / 1 over 100 steps reads as 0.5 once smoothed (window 10); the faint raw
    line stays under it, and a short series is drawn as it is."""
    values = [float(i % 2) for i in range(100)]
    trend = smoothed(values)
    assert len(trend) == 100 and trend[0] == 0.0 and all(abs(v - 0.5) < 1e-9 for v in trend[10:])
    assert smoothed(values[:20]) is None
    series = {"accuracy/math": list(enumerate(values, 1)), "accuracy/code": [(s, 0.3) for s in range(1, 101)]}
    assert plot_panels(series, {"accuracy": ["accuracy/*"]}, tmp_path / "long.png").exists()
