"""fold_jax.report's pages: a one-page summary (REPORT.md) linking one page per section
(report/<name>.md), built from small synthetic results in a tmp dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fold_jax import report, results
from fold_jax.report import scaling

# "about one page": 60 lines of 100 characters, for this build (one section with data).
# A section without its own headline shows at most HEADLINE_ITEMS findings of about 320
# characters; one with headline() shows its list (kernels, scaling, bbob and hypotheses:
# up to about 1.1 KB each), so a full real summary runs to about 7 KB.
MAX_SUMMARY_CHARS = 6000
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _scaling_rows() -> list[dict]:
    """Throughput at 1, 2 and 4 devices for two methods (linear and flat scaling): 64
    evaluations a step, so the step time is 64 / throughput; its IQR is 10% of it."""
    rows = []
    for method in ("zo_gaussian", "backprop_data_parallel"):
        for n in (1, 2, 4):
            throughput = 100.0 * (n if method == "zo_gaussian" else 1)
            rows.append({"method": method, "devices": n, "forced_host_devices": n,
                         "num_directions": 64, "batch_size": 256, "throughput": throughput,
                         "throughput_unit": "evaluations/s", "step_median_s": 64 / throughput,
                         "step_iqr_s": 6.4 / throughput, "compile_s": 0.5})
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One build for the tests that only read it; a page of an older build is there."""
    out = tmp_path_factory.mktemp("results")
    results.append("scaling", _scaling_rows(), key=results.key("scaling"), results_dir=out)
    (out / report.PAGES_DIR).mkdir()
    (out / report.PAGES_DIR / "a_section_no_longer_made.md").write_text("old")
    return report.build(out, verbose=False)


def _relative(markdown: str) -> list[str]:
    return [t for t in LINK.findall(markdown) if not re.match(r"[a-zA-Z][\w+.-]*:|#", t)]


def test_summary_is_one_page_and_links_a_page_per_section(built):
    summary = built.read_text()
    assert len(summary) <= MAX_SUMMARY_CHARS, len(summary)
    pages = built.parent / report.PAGES_DIR
    for name in report.SECTIONS:  # every section: a page, linked from the summary
        assert (pages / f"{name}.md").is_file()
        assert f"]({report.PAGES_DIR}/{name}.md)" in summary
    assert f"]({report.PAGES_DIR}/runs.md)" in summary
    # the section with data: its headline (scaling.headline) and figure, and its page
    assert "Throughput at the largest device count over the smallest" in summary
    assert "](figures/scaling_throughput.png)" in summary
    page = (pages / "scaling.md").read_text()
    assert page.startswith("[fold_jax benchmark report](../REPORT.md)")
    assert "\n# Scaling\n" in page and "_Source: run `" in page and "| slope |" in page
    assert "_Skipped: no kernels data._" in (pages / "kernels.md").read_text()
    assert "_Skipped: no kernels data._" in summary  # said in both places


def test_every_relative_link_of_every_page_resolves(built):
    pages = [built, *sorted((built.parent / report.PAGES_DIR).glob("*.md"))]
    assert len(pages) == len(report.SECTIONS) + 2  # summary, sections, runs
    seen = 0
    for page in pages:
        for target in _relative(page.read_text()):
            seen += 1
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: {target}"
    assert seen >= 2 * len(report.SECTIONS) + 2  # links both ways, and the figures


def test_pages_of_an_older_build_are_removed(built):
    assert not (built.parent / report.PAGES_DIR / "a_section_no_longer_made.md").exists()
    assert (built.parent / report.PAGES_DIR / "runs.md").read_text().startswith("# Runs shown")


def test_a_section_headline_hook_is_used(tmp_path, monkeypatch):
    results.append("scaling", _scaling_rows(), key=results.key("scaling"),
                   results_dir=tmp_path)
    monkeypatch.setattr(scaling, "headline", lambda frames, fig_dir: "- zo scales 4x [3, 5]",
                        raising=False)
    summary = report.build(tmp_path, verbose=False).read_text()
    assert "- zo scales 4x [3, 5]" in summary
    assert "Throughput per configuration" not in summary  # the fallback is not used

    def broken(frames, fig_dir):
        raise RuntimeError("no headline")

    monkeypatch.setattr(scaling, "headline", broken)
    summary = report.build(tmp_path, verbose=False).read_text()
    assert "_Headline failed: RuntimeError: no headline_" in summary  # said, not hidden
    assert "| slope |" in (tmp_path / report.PAGES_DIR / "scaling.md").read_text()


def test_fallback_headline_takes_the_first_findings_else_the_first_sentence():
    items = "\n".join(f"- finding {i}: 1.{i}x [1.0, 2.0]" for i in range(5))
    body = (f"_Source: run `x`._\n\nIntro. More.\n\n| a |\n|---|\n| 1 |\n\n{items}\n\n"
            "![a figure](figures/a.png)\n\n![another](figures/b.png)\n")
    out = report._headline(body)
    shown = [line for line in out.splitlines() if line.startswith("- finding")]
    assert len(shown) == report.HEADLINE_ITEMS
    assert f"... and {5 - report.HEADLINE_ITEMS} more" in out
    assert out.endswith("![a figure](figures/a.png)") and "figures/b.png" not in out
    out = report._headline("_Source: x._\n\nFirst sentence, e.g. 1.5x here. Second one.\n")
    assert out == "First sentence, e.g. 1.5x here."  # one sentence, never a paragraph
    long = report._headline("word " * 200)
    assert len(long) <= report._HEADLINE_CHARS + 4 and long.endswith(" ...")


def test_page_links_are_rewritten_one_folder_down():
    md = ("![f](figures/x.png) [cols](COLUMNS.md) [up](../REPORT.md) [web](https://a.b/c) "
          "[here](#anchor)")
    assert report._relink(md) == ("![f](../figures/x.png) [cols](../COLUMNS.md) "
                                  "[up](../../REPORT.md) [web](https://a.b/c) [here](#anchor)")
