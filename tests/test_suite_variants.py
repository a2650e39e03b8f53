"""fold_jax.bench.suites.variants: which kernel jobs each profile plans (the kernels themselves are
timed by the suite and checked in tests/test_prune.py and tests/test_binary.py)."""

from __future__ import annotations

from fold_jax.bench.suites import variants as suite_variants


def test_quick_times_bcsr_at_1024_only_and_full_at_every_shape():
    quick = {j.label for j in suite_variants.jobs("quick")}
    full = {j.label for j in suite_variants.jobs("full")}
    assert "sparse kernels 256x1024x1024" in quick
    assert "sparse kernels 256x4096x4096" not in quick  # 2 minutes: full only
    assert {"binary kernels 256x1024x1024", "binary kernels 256x4096x4096"} <= quick
    assert {"sparse kernels 256x1024x1024", "sparse kernels 256x4096x4096"} <= full
    for p in suite_variants.PROFILE.values():
        assert set(p["sparse_shapes"]) <= set(p["shapes"])
