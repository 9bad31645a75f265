"""Table 2 of the paper: #Params and #FLOPs (fvcore, HR output 1280×720) of the nine classic-SR rows."""
import pytest

from esc.archs import build_variant
from esc.utils.complexity import PAPER_TABLE2, count_flops, count_parameters

ROWS = sorted(PAPER_TABLE2)


@pytest.mark.parametrize('variant,scale', ROWS)
def test_parameters_match_table2(variant, scale):
    params = count_parameters(build_variant(variant, scale))
    paper_k = PAPER_TABLE2[variant, scale][0]
    if (variant, scale) == ('ESC-light', 2):
        # Exactly 603,600 parameters, printed as 603K: the paper truncated this one entry. Its ×3/×4
        # rows (612K, 624K) match, and they differ from ×2 only by the sub-pixel conv (next test).
        assert params == 603_600 and params // 1000 == paper_k
    else:
        assert round(params / 1e3) == paper_k


@pytest.mark.parametrize('variant', ['ESC', 'ESC-light', 'ESC-FP'])
def test_scales_differ_only_by_the_subpixel_conv(variant):
    dim = build_variant(variant, 2).dim
    counts = {r: count_parameters(build_variant(variant, r)) for r in (2, 3, 4)}
    for r in (3, 4):
        extra_outputs = 3 * (r * r - 4)
        assert counts[r] - counts[2] == extra_outputs * dim * 9 + extra_outputs


@pytest.mark.parametrize('variant', ['ESC', 'ESC-light', 'ESC-FP'])
def test_flops_match_table2_x4(variant):
    assert round(count_flops(build_variant(variant, 4, attn_type='naive'), 4) / 1e9, 1) == PAPER_TABLE2[variant, 4][1]


@pytest.mark.slow
@pytest.mark.parametrize('variant,scale', [row for row in ROWS if row[1] != 4])
def test_flops_match_table2(variant, scale):
    """×2 and ×3 (the ×4 rows are above): about three minutes and 11 GB on 2 cores."""
    flops = count_flops(build_variant(variant, scale, attn_type='naive'), scale)
    assert round(flops / 1e9, 1) == PAPER_TABLE2[variant, scale][1]
