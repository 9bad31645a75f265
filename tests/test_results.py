"""scripts/make_tables.py: test logs → the paper's table layout, with the paper's numbers beside ours."""
import subprocess
import sys

from esc.utils.results import collect_results, parse_test_log, table_rows, to_csv, to_markdown
from tests.conftest import REPO

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
    out = subprocess.run([sys.executable, str(REPO / 'scripts/make_tables.py'), '--results', 'results', '--paper',
                          '--csv', 'table.csv'], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '| ESC-light (DIV2K) | x4 | - | - | 91.0 | 624 | 38.34/0.9618 |' in out.stdout
    assert '| ESC-light (paper) | x4 | 13.3 | 213 | 91.0 | 624 | 32.52/0.8995 |' in out.stdout
    assert (tmp_path / 'table.csv').read_text().count('\n') == 4
    bad = subprocess.run([sys.executable, str(REPO / 'scripts/make_tables.py'), '--results', 'nowhere'],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == 'error: --results: no such folder nowhere'
