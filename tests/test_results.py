"""scripts/make_tables.py: test logs → the paper's table layout, with the paper's numbers beside ours."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from esc.errors import ESCError
from esc.evaluation.paper import TABLE2
from esc.evaluation.results import (FigurePoint, check_figure, collect_results, draw_figure, figure_points,
                                    parse_test_log, table_rows, to_csv, to_markdown)
from tests.helpers.runs import run_script_in_process

LOG = """2026-11-23 10:00:00,000 INFO: Testing Set5...
2026-11-23 10:00:01,000 INFO: Validation Set5
\t # psnr: 38.3400\tBest: 38.3400 @ ESC_X2_DIV2K iter
\t # ssim: 0.9618\tBest: 0.9618 @ ESC_X2_DIV2K iter

2026-11-23 10:00:02,000 INFO: Validation Urban100
\t # psnr: 33.5000\tBest: 33.5000 @ ESC_X2_DIV2K iter
\t # ssim: 0.9400\tBest: 0.9400 @ ESC_X2_DIV2K iter
"""


def write_run(root, name, text=LOG):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f'test_{name}_20261123_100000.log').write_text(text)


def test_parse_and_tabulate_against_the_paper(tmp_path):
    write_run(tmp_path, 'ESC_X2_DIV2K')
    write_run(tmp_path, 'unrelated_run')
    assert parse_test_log(tmp_path / 'ESC_X2_DIV2K' / 'test_ESC_X2_DIV2K_20261123_100000.log') == {
        'Set5': (38.34, 0.9618), 'Urban100': (33.5, 0.94)}
    results = collect_results(tmp_path)
    assert list(results) == [('ESC', 2, 'DIV2K')]
    rows = table_rows(results, {('ESC', 2): (947, 592.0)}, {('ESC', 2): (100.0, 800.0)}, with_paper=True)
    ours, paper, diff = rows
    assert ours[:6] == ['ESC (DIV2K)', 'x2', '100.0', '800', '592.0', '947'] and ours[6] == '38.34/0.9618'
    assert ours[7] == '-'  # Set14 not tested
    assert paper[6] == '38.35/0.9619' and diff[6] == '-0.01/-0.0001' and diff[9] == '+0.04/+0.0005'
    assert to_markdown(rows).count('\n') == 4 and to_csv(rows).splitlines()[0].startswith('Method,Scale')


def test_cli_prints_table_and_fails_in_one_line(tmp_path):
    write_run(tmp_path / 'results', 'ESC_light_X4_DIV2K')
    out = run_script_in_process('make_tables', ['--results', 'results', '--paper', '--csv', 'table.csv', '--figure',
                                                'figure.png'], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith('figure: figure.png')
    assert cv2.imread(str(tmp_path / 'figure.png')) is not None  # one row of two panels: a wide picture
    assert '| ESC-light (DIV2K) | x4 | - | - | 91.0 | 624 | 38.34/0.9618 |' in out.stdout
    assert '| ESC-light (paper) | x4 | 13.3 | 213 | 91.0 | 624 | 32.52/0.8995 |' in out.stdout
    assert (tmp_path / 'table.csv').read_text().count('\n') == 4
    bad = run_script_in_process('make_tables', ['--results', 'nowhere'], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == 'error: --results: no such folder nowhere'


def scores(set5: float, urban: float) -> dict:
    return {'Set5': (set5, 0.96), 'Urban100': (urban, 0.93)}


def test_figure_points_put_each_measured_row_beside_the_papers():
    results = {('ESC', 2, 'DIV2K'): scores(38.30, 33.40), ('ESC-light', 4, 'DIV2K'): scores(32.50, 26.70),
               ('ESC', 2, 'DFLIP'): scores(38.34, 33.90), ('Bicubic', 2, '-'): scores(33.68, 26.88),
               ('ESC-FP', 3, 'DIV2K'): {'Set5': (34.7, 0.93)}}
    complexity = {('ESC', 2): (947, 592.0), ('ESC-light', 4): (624, 91.0), ('ESC-FP', 3): (530, 110.0)}
    points = figure_points(results, complexity, 'Urban100')
    assert points == [
        FigurePoint('ESC', 2, 'DFLIP', 592.0, 947, 33.90), FigurePoint('ESC', 2, 'paper', 592.0, 947, 33.86),
        FigurePoint('ESC', 2, 'DIV2K', 592.0, 947, 33.40), FigurePoint('ESC', 2, 'paper', 592.0, 947, 33.46),
        FigurePoint('ESC-light', 4, 'DIV2K', 91.0, 624, 26.70), FigurePoint('ESC-light', 4, 'paper', 91.0, 624, 26.76),
    ]  # Bicubic has no count, ESC-FP x3 no Urban100 score; the DFLIP row meets Table 4's, the others Table 2's
    assert figure_points(results, complexity, 'Set5')[-1] == FigurePoint('ESC-light', 4, 'paper', 91.0, 624,
                                                                         TABLE2['ESC-light', 4].psnr_ssim[0][0])
    with pytest.raises(ESCError, match=r"^--figure-benchmark: 'Urban' is not one of Set5, Set14, B100, Urban100, "
                                       r"Manga109$"):
        figure_points(results, complexity, 'Urban')


def test_the_figure_draws_every_point_where_it_belongs(tmp_path):
    points = figure_points({('ESC', 2, 'DIV2K'): scores(38.30, 33.40), ('ESC-FP', 4, 'DIV2K'): scores(32.50, 26.95)},
                           {('ESC', 2): (947, 592.0), ('ESC-FP', 4): (539, 60.8)}, 'Urban100')
    figure = draw_figure(points, 'Urban100', tmp_path / 'figure.png')
    axes = figure.axes
    assert len(axes) == 4  # x2 and x4 rows, #FLOPs and #Params columns
    for ax, field in zip(axes, ['flops_g', 'params_k'] * 2):
        measured, paper = (np.asarray(c.get_offsets()) for c in ax.collections)
        scale = 2 if ax in axes[:2] else 4
        expected = [p for p in points if p.scale == scale]
        assert measured.tolist() == [[getattr(p, field), p.psnr] for p in expected if p.measured]
        assert paper.tolist() == [[getattr(p, field), p.psnr] for p in expected if not p.measured]
        assert [t.get_text() for t in ax.texts] == [f'{"ESC" if scale == 2 else "ESC-FP"} (DIV2K)']
    assert axes[0].get_xlabel().startswith('#FLOPs') and axes[1].get_xlabel() == '#Params (K)'
    assert axes[2].get_ylabel() == 'PSNR on Urban100 ×4 (dB, Y)'
    picture = cv2.imread(str(tmp_path / 'figure.png'))
    assert picture is not None and picture.shape[1] > picture.shape[0] * 1.2  # two panels wide, two rows high
    with pytest.raises(ESCError, match=r'^--figure: no result with a Urban100 score'):
        draw_figure([], 'Urban100', tmp_path / 'empty.png')
    with pytest.raises(ESCError, match=r'^--figure: .*figure.gif is not one of .png, .svg, .pdf'):
        draw_figure(points, 'Urban100', tmp_path / 'figure.gif')
    assert not (tmp_path / 'empty.png').exists() and not (tmp_path / 'figure.gif').exists()


def test_the_cli_refuses_a_figure_it_cannot_draw_before_counting(tmp_path):
    write_run(tmp_path / 'results', 'ESC_X2_DIV2K')
    bad = run_script_in_process('make_tables', ['--figure', 'f.png', '--figure-benchmark', 'DIV2K'], tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: --figure-benchmark: 'DIV2K' is not one of Set5, Set14, B100, Urban100, "
                                  'Manga109')
    with pytest.raises(ESCError, match=r'^--figure: f.gif is not one of .png, .svg, .pdf \(by its extension\)$'):
        check_figure(Path('f.gif'), 'Urban100')
