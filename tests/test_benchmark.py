"""scripts/benchmark.py and its engine, esc/evaluation/benchmark.py: behaviour only (records, tables,
errors), never speed."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import pytest
import torch
import yaml

from esc.acceleration import check_dtype
from esc.archs import NETWORKS
from esc.errors import ESCError
from esc.evaluation.paper import CLAIMED_RATIOS, TABLE4
from esc.evaluation.results import load_speed
from tests.helpers.paths import load_script
from tests.helpers.runs import run_script_in_process

from esc.evaluation import benchmark as engine
from esc.evaluation.benchmark import (COMPARE_HEADER, NETWORK_HEADER, TABLE1_HEADER, TRAIN_HEADER, BenchmarkRecord,
                                      MissingNetwork, Table1Row, _build, benchmark_network, benchmark_window_attention,
                                      compare_cells, compare_entry, compare_spec, format_network_table, format_table1,
                                      fused_attention_type, hd_lr_size, iter_table1, make_settings, measure,
                                      network_spec, parse_size, train_spec)

CUDA = pytest.mark.cuda
TINY = dict(warmup=1, runs=2)


def load_cli() -> ModuleType:
    return load_script('benchmark')


def check_record(record: BenchmarkRecord, runs: int) -> None:
    assert len(record.latencies_ms) == runs
    assert all(math.isfinite(t) and t > 0 for t in record.latencies_ms)
    assert record.min_ms <= record.median_ms <= record.max_ms
    assert record.iqr_ms >= 0
    for value in (record.memory_mb, record.peak_mb, record.baseline_mb):
        assert math.isfinite(value) and value >= 0
    assert record.memory_method


def test_hd_input_and_size_parsing():
    assert hd_lr_size(4) == (180, 320) and hd_lr_size(2) == (360, 640) and hd_lr_size(3) == (240, 426)
    assert parse_size('180x320') == (180, 320) and parse_size('64') == (64, 64) and parse_size('8X16') == (8, 16)
    for bad in ('3y', '0x5', 'x', '1x2x3', '-4x4'):
        with pytest.raises(ESCError):
            parse_size(bad)


def test_bad_settings_are_escerrors():
    with pytest.raises(ESCError, match='fp16 is only supported on CUDA'):
        check_dtype('fp16', 'cpu')
    with pytest.raises(ESCError, match='dtype'):
        make_settings('cpu', dtype='fp64')
    with pytest.raises(ESCError, match='runs'):
        make_settings('cpu', runs=0)
    with pytest.raises(ESCError, match='device'):
        make_settings('tpu')
    assert make_settings('cpu').warmup == 3 and make_settings('cpu').runs == 10
    with pytest.raises(ESCError, match="variant 'Nope' is unknown"):
        benchmark_network('Nope', 4, make_settings('cpu', **TINY), isolate=False)


def test_network_record_in_process():
    settings = make_settings('cpu', **TINY)
    record = benchmark_network('ESC-light', 4, settings, lr_size=(32, 32), isolate=False)
    check_record(record, runs=2)
    assert record.input_shape == (1, 3, 32, 32) and record.output_shape == (1, 3, 128, 128)
    assert (record.name, record.scale, record.device, record.dtype) == ('ESC-light', 4, 'cpu', 'fp32')
    assert record.attn_type == 'auto' and record.backend == 'sdpa'
    assert 'RSS' in record.memory_method
    assert BenchmarkRecord.from_dict(record.to_dict()) == record
    lines = format_network_table([record], markdown=True)
    assert lines[0] == '| ' + ' | '.join(NETWORK_HEADER) + ' |'
    assert lines[2].startswith('| ESC-light | x4 | 32x32 | 128x128 | cpu | auto (sdpa) | fp32 |')


def test_window_attention_and_table1_rows_in_process():
    settings = make_settings('cpu', **TINY)
    record = benchmark_window_attention((20, 20), 8, settings, 'Naive', dim=16, num_heads=2, isolate=False)
    check_record(record, runs=2)
    assert record.backend == 'naive' and record.output_shape == (1, 16, 20, 20) and record.window_size == 8
    assert fused_attention_type('cpu') == 'sdpa'
    with pytest.raises(ESCError):
        fused_attention_type('cpu', 'naive')
    rows = list(iter_table1(settings, sizes=[(16, 16)], window_sizes=[4, 8], dim=16, num_heads=2, isolate=False))
    assert [(r.size, r.window_size) for r in rows] == [((16, 16), 4), ((16, 16), 8)]
    assert all(r.naive.backend == 'naive' and r.fused.backend == 'sdpa' for r in rows)
    assert all(r.speedup > 0 and math.isfinite(r.speedup) for r in rows)
    lines = format_table1(rows, markdown=True, dim=16)
    assert lines[0] == '| ' + ' | '.join(TABLE1_HEADER) + ' |' and len(lines) == 4
    assert lines[2].startswith('| 16x16x16 | 4x4 |')


def test_table1_row_ratios_and_skipped_cells():
    def fake(latency: float, memory: float) -> BenchmarkRecord:
        return BenchmarkRecord(kind='attention', name='WindowAttention', scale=1, device='cpu', attn_type='naive',
                               backend='naive', dtype='fp32', input_shape=(1, 64, 64, 64),
                               output_shape=(1, 64, 64, 64), warmup=0, runs=3, threads=1,
                               latencies_ms=[latency, latency + 2, latency - 1], memory_mb=memory, peak_mb=memory,
                               baseline_mb=0.0, memory_method='test', window_size=16)

    row = Table1Row((64, 64), 16, naive=fake(40.0, 120.0), fused=fake(10.0, 30.0))
    assert row.speedup == pytest.approx(4.0) and row.memory_reduction == pytest.approx(4.0)
    assert format_table1([row])[2] == '| 64x64x64 | 16x16 | 40.0 | 10.0 | 4.0x | 120.0 | 30.0 | 4.0x |'
    skipped = Table1Row((288, 288), 32, naive=None, fused=fake(10.0, 30.0), notes={'naive': '> 60 s'})
    assert skipped.speedup is None
    assert format_table1([skipped])[2] == '| 288x288x64 | 32x32 | > 60 s | 10.0 | - | - | 30.0 | - |'


@pytest.mark.parametrize('argv,message', [
    (['--variants', 'Foo'], "error: variant 'Foo' is unknown"),
    (['--lr-size', '3y'], "error: size '3y' is not HxW"),
    (['--device', 'cpu', '--dtype', 'fp16'], 'error: dtype fp16 is only supported on CUDA'),
    (['--variants', 'ESC-Real', '--scales', '2'], 'error: variant ESC-Real exists at scale 4 only'),
    (['table1', '--sizes', '0'], "error: size '0' must be positive"),
    (['compare', '--baselines', 'HiT-SRF', 'Foo'], 'error: --baselines: Foo unknown; choose from SRFormer-lt, ATD-lt'),
    (['compare', '--device', 'cpu', '--streaming', 'sometimes'], 'error: streaming must be one of auto, on, off'),
])
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1


def test_cli_table1_in_process(capsys):
    load_cli().main(['table1', '--device', 'cpu', '--sizes', '16', '--window-sizes', '8', '--dim', '16',
                     '--heads', '2', '--warmup', '0', '--runs', '1', '--markdown', '--in-process'])
    out = capsys.readouterr().out
    assert 'w/ FA: fused SDPA (CPU, not flash attention)' in out
    assert '| ' + ' | '.join(TABLE1_HEADER) + ' |' in out
    assert '| 16x16x16 | 8x8 |' in out


def test_cli_markdown_table_with_each_case_in_a_subprocess(tmp_path):
    """The CLI as a user runs it (its main, in this process); on CPU each case is measured in its own subprocess.
    Its JSON is what scripts/make_tables.py --speed reads."""
    speed = tmp_path / 'speed.json'
    proc = run_script_in_process('benchmark', ['--variants', 'ESC-light', '--scales', '4', '--lr-size', '16x16',
                                               '--device', 'cpu', '--warmup', '1', '--runs', '2', '--markdown',
                                               '--json', str(speed)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == '| ' + ' | '.join(NETWORK_HEADER) + ' |'
    assert lines[1] == '|' + '---|' * len(NETWORK_HEADER)
    cells = [c.strip() for c in lines[2].strip('|').split('|')]
    assert cells[:7] == ['ESC-light', 'x4', '16x16', '64x64', 'cpu', 'auto (sdpa)', 'fp32']
    assert float(cells[7]) > 0 and float(cells[10]) >= 0 and cells[12] == '1+2'
    assert float(cells[11]) > 200  # the whole process's peak RSS: torch alone is more than that
    assert 'MB = bytes / 2**20' in proc.stdout
    (latency, memory), = load_speed(speed).values()
    assert list(load_speed(speed)) == [('ESC-light', 4)]
    assert f'{latency:.1f}' == cells[7] and f'{memory:.1f}' == cells[10]


@CUDA
def test_cuda_record_uses_max_memory_allocated():
    settings = make_settings('cuda', **TINY)
    record = benchmark_network('ESC-light', 4, settings, lr_size=(32, 32), attn_type='sdpa')
    check_record(record, runs=2)
    assert record.device == 'cuda' and record.output_shape == (1, 3, 128, 128)
    assert 'max_memory_allocated' in record.memory_method and record.memory_mb >= record.baseline_mb > 0


@CUDA
def test_cuda_fp16_autocast_and_flex():
    settings = make_settings('cuda', dtype='fp16', **TINY)
    record = benchmark_window_attention((64, 64), 16, settings, 'flex')
    check_record(record, runs=2)
    assert record.backend == 'flex' and record.dtype == 'fp16'


def test_cli_scaling_and_naive_ratio_in_process(capsys):
    cli = load_cli()
    cli.main(['scaling', '--variant', 'ESC-light', '--scale', '2', '--sizes', '16x16', '16x32', '--device', 'cpu',
              '--warmup', '0', '--runs', '1', '--markdown', '--in-process'])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| 16x')]
    assert len(lines) == 2
    for line, pixels in zip(lines, (256, 512)):
        size, megapixels, latency, per_mp, memory, memory_per_mp = (c.strip() for c in line.strip('|').split('|'))
        assert float(megapixels) == pytest.approx(pixels / 1e6, abs=1e-4)
        assert float(per_mp) == pytest.approx(float(latency) / (pixels / 1e6), rel=0.01)
    cli.main(['--variants', 'ESC-light', '--scales', '2', '--lr-size', '16x16', '--device', 'cpu', '--warmup', '0',
              '--runs', '1', '--markdown', '--in-process', '--compare-naive'])
    out = capsys.readouterr().out
    assert 'Speed-up vs explicit' in out.splitlines()[0]
    cells = [c.strip() for c in next(line for line in out.splitlines() if line.startswith('| ESC-light')).split('|')]
    assert cells[6] == 'auto (sdpa)' and cells[-4].endswith('x') and float(cells[-4][:-1]) > 0


def test_training_step_benchmark_in_process(capsys):
    load_cli().main(['train', '--variant', 'ESC-light', '--scale', '2', '--batch', '2', '--lr-size', '16x16',
                     '--device', 'cpu', '--warmup', '0', '--runs', '2', '--markdown', '--in-process', '--compare-naive'])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == '| ' + ' | '.join(TRAIN_HEADER) + ' |'
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in out.splitlines() if line.startswith('| ESC')]
    assert [row[4] for row in rows] == ['auto (sdpa)', 'naive']
    assert all(row[2] == '2 x 16x16' and float(row[5]) > 0 and row[9] == '0+2' for row in rows)
    assert 'Speed-up vs explicit attention: ' in out


def test_settings_and_specs_refuse_bad_options():
    with pytest.raises(ESCError, match="malloc must be one of tuned, default, got 'fast'"):
        make_settings('cpu', malloc='fast')
    settings = make_settings('cpu', **TINY)
    with pytest.raises(ESCError, match="streaming must be one of auto, on, off"):
        network_spec('ESC', 2, settings, streaming='always')
    with pytest.raises(ESCError, match='needs batch >= 1'):
        train_spec('ESC-light', 2, settings, batch=0)


def test_streaming_setting_reaches_the_network():
    settings = make_settings('cpu', **TINY)
    spec = network_spec('ESC-light', 2, settings, lr_size=(16, 16), streaming='off')
    assert _build(spec)[0].streaming == 'off'
    assert _build(network_spec('ESC-light', 2, settings, lr_size=(16, 16)))[0].streaming == 'auto'
    record = measure(spec, isolate=False)
    assert record.extra['process_peak_mb'] >= record.peak_mb > 0


# --- compare: ESC against the paper's baselines (issue 31) ------------------------------------------------------

TINY_COMPARE: Dict[str, Dict[str, Any]] = {
    'options/test/ESC/test_ESC_X4_DFLIP.yml': dict(type='ESC', dim=16, pdim=8, kernel_size=5, n_blocks=1,
                                                   conv_blocks=1, window_size=8, num_heads=2, exp_ratio=1.25,
                                                   upscaling_factor=4, attn_type='auto'),
    'options/test/ESC/test_ESC_X4_DIV2K.yml': dict(type='ESC', dim=16, pdim=8, kernel_size=5, n_blocks=2,
                                                   conv_blocks=1, window_size=8, num_heads=2, exp_ratio=1.25,
                                                   upscaling_factor=4),
    'options/test/SRFormerLight/SRFormer_light_DFLIP_X4.yml': dict(type='SRFormer', upscale=4, img_size=16,
                                                                   window_size=8, embed_dim=16, depths=[2],
                                                                   num_heads=[2], mlp_ratio=2,
                                                                   upsampler='pixelshuffledirect'),
    'options/test/HiTSRF/HiTSRF_DFLIP_X4.yml': dict(type='HiT_SRF', upscale=4, img_size=16, base_win_size=[4, 4],
                                                    embed_dim=16, depths=[2], num_heads=[2], hier_win_ratios=[0.5, 1],
                                                    mlp_ratio=2, upsampler='pixelshuffledirect'),
}
"""Tiny networks in option files laid out as the checkout's DFLIP files (no ATD-light file: it is reported missing;
a DIV2K ESC file beside the DFLIP one, which the comparison must not pick)."""


def tiny_checkout(root: Path, files: Dict[str, Dict[str, Any]] = TINY_COMPARE, scale: int = 4) -> Path:
    for relative, network in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(yaml.safe_dump(dict(name=Path(relative).stem, scale=scale, network_g=network)))
    return root


def parameters(network: Dict[str, Any]) -> int:
    options = dict(network)
    return sum(p.numel() for p in NETWORKS[options.pop('type')](**options).parameters())


def table_rows(out: str) -> List[List[str]]:
    return [[c.strip() for c in line.strip('|').split('|')] for line in out.splitlines()
            if line.startswith('| ') and not line.startswith('| Network')]


def claimed_cell(baseline: str, quantity: str) -> str:
    return '; '.join(f'{c.ratio:g}x ({c.where})' for c in CLAIMED_RATIOS
                     if (c.baseline, c.scale, c.quantity) == (baseline, 4, quantity)) or '-'


def table4_ratio(baseline: str, field: str) -> Any:
    rows = TABLE4.get((baseline, 4)), TABLE4.get(('ESC', 4))
    return None if None in rows else getattr(rows[0], field) / getattr(rows[1], field)


def test_paper_claims_are_the_papers():
    """The ratios the paper's text claims (abstract, Sec. 1, Sec. 4.3), and Table 4's ESC row they are ratios to."""
    claims = {(c.baseline, c.scale, c.quantity, c.where): c.ratio for c in CLAIMED_RATIOS}
    assert claims == {('HiT-SRF', 4, 'latency', 'abstract'): 3.7, ('HiT-SRF', 4, 'memory', 'abstract'): 6.2,
                      ('ATD-lt', 4, 'latency', 'Sec. 1'): 8.9, ('ATD-lt', 4, 'latency', 'Sec. 4.3'): 8.7}
    assert TABLE4['ESC', 4][:2] == (21.9, 215)


def test_cli_compare_in_process(tmp_path, monkeypatch, capsys):
    """compare measures ESC and each baseline its option file builds, in one run; the ratios are those of the
    measured medians, Table 4's and the claimed ones are esc.evaluation.paper's, and a missing network is named."""
    cli = load_cli()
    monkeypatch.setattr(engine, 'CHECKOUT', tiny_checkout(tmp_path / 'checkout'))
    result = tmp_path / 'compare.json'
    cli.main(['compare', '--lr-size', '8x12', '--device', 'cpu', '--threads', '1', '--warmup', '0', '--runs', '2',
              '--markdown', '--in-process', '--json', str(result)])
    out = capsys.readouterr().out
    setup_line = out.splitlines()[0]
    assert f'torch {torch.__version__}, 1 CPU threads, fp32, warm-up 0, 2 timed runs' in setup_line
    assert 'CPU ' in setup_line and 'streaming off' in setup_line
    assert "x4: measured at LR 8x12 -> 32x48 output, NOT the paper's setting (LR 180x320" in out
    assert ('Not measured (not in this checkout yet): ATD-lt x4: no option file matches '
            'options/test/ATDLight/*_X4.yml') in out
    assert '| ' + ' | '.join(COMPARE_HEADER) + ' |' in out
    assert 'all cases in one process' in out

    rows = table_rows(out)
    assert [row[:3] for row in rows] == [[name, 'x4', '8x12'] for name in ('ESC', 'SRFormer-lt', 'HiT-SRF')]
    data = json.loads(result.read_text())
    assert data['setup']['threads'] == 1 and data['setup']['missing'] == [
        'ATD-lt x4: no option file matches options/test/ATDLight/*_X4.yml']
    entries = {entry['network']: entry for entry in data['rows']}
    assert list(entries) == ['ESC', 'SRFormer-lt', 'HiT-SRF']
    esc = entries['ESC']['measured']
    assert entries['ESC']['option_file'] == 'options/test/ESC/test_ESC_X4_DFLIP.yml'
    assert esc['params'] == parameters(TINY_COMPARE['options/test/ESC/test_ESC_X4_DFLIP.yml'])
    assert esc['backend'] == 'sdpa' and esc['output_shape'] == [1, 3, 32, 48]
    assert rows[0][6:12] == ['-'] * 6 and rows[0][12:] == ['21.9', '215']
    for row, name in zip(rows[1:], ('SRFormer-lt', 'HiT-SRF')):
        entry, measured = entries[name], entries[name]['measured']
        assert measured['output_shape'] == [1, 3, 32, 48] and len(measured['latencies_ms']) == 2
        assert row[4] == f"{measured['latency_ms']:.1f}" and row[5] == f"{measured['memory_mb']:.1f}"
        latency = entry['esc_advantage']['latency']
        assert latency['measured'] == pytest.approx(measured['latency_ms'] / esc['latency_ms'])
        assert row[6] == f"{latency['measured']:.2f}x"
        memory = entry['esc_advantage']['memory']
        if esc['memory_mb'] > 0:
            assert memory['measured'] == pytest.approx(measured['memory_mb'] / esc['memory_mb'])
            assert row[9] == f"{memory['measured']:.2f}x"
        else:
            assert memory['measured'] is None and row[9] == '-'
        for column, quantity, field in ((7, 'latency', 'latency_ms'), (10, 'memory', 'memory_mb')):
            expected = table4_ratio(name, field)
            assert entry['esc_advantage'][quantity]['table4'] == expected
            assert row[column] == ('-' if expected is None else f'{expected:.2f}x')
            assert row[column + 1] == claimed_cell(name, quantity)
    assert rows[1][7] == f"{327.8 / 21.9:.2f}x"  # Table 4's SRFormer-lt x4 against ESC x4
    assert rows[2][8] == '3.7x (abstract)' and rows[2][11] == '6.2x (abstract)'


def test_compare_cases_refuse_or_skip_what_cannot_be_measured(tmp_path, monkeypatch):
    settings = make_settings('cpu', **TINY)
    files = {'options/test/HiTSRF/HiTSRF_DFLIP_X4.yml': dict(type='NotANetwork', upscale=4),
             'options/test/SRFormerLight/SRFormer_light_DFLIP_X4.yml':
                 TINY_COMPARE['options/test/SRFormerLight/SRFormer_light_DFLIP_X4.yml']}
    monkeypatch.setattr(engine, 'CHECKOUT', tiny_checkout(tmp_path, files))
    with pytest.raises(MissingNetwork, match=r"HiT-SRF x4: options/test/HiTSRF/HiTSRF_DFLIP_X4.yml: network_g.type "
                                             r"'NotANetwork' is not a network of esc.archs"):
        compare_spec('HiT-SRF', 4, settings)
    with pytest.raises(MissingNetwork, match=r'ESC x2: no option file matches options/test/ESC/\*_X2_DFLIP.yml'):
        compare_spec('ESC', 2, settings)
    with pytest.raises(ESCError, match="network 'SwinIR' is not one of the comparison's"):
        compare_spec('SwinIR', 4, settings)
    tiny_checkout(tmp_path, {'options/test/SRFormerLight/SRFormer_light_DFLIP_X3.yml':
                             TINY_COMPARE['options/test/SRFormerLight/SRFormer_light_DFLIP_X4.yml']}, scale=4)
    with pytest.raises(ESCError, match='SRFormer-lt x3: options/test/SRFormerLight/SRFormer_light_DFLIP_X3.yml is '
                                       'for scale 4'):
        compare_spec('SRFormer-lt', 3, settings)
    spec = compare_spec('SRFormer-lt', 4, settings, streaming='on')
    assert spec['attn_type'] == '-' and 'streaming' not in spec['network_g'] and spec['size'] == [180, 320]

    def record(latency: float, memory: float) -> BenchmarkRecord:
        return BenchmarkRecord(kind='network', name='ESC', scale=4, device='cpu', attn_type='auto', backend='sdpa',
                               dtype='fp32', input_shape=(1, 3, 180, 320), output_shape=(1, 3, 720, 1280), warmup=0,
                               runs=3, threads=1, latencies_ms=[latency] * 3, memory_mb=memory, peak_mb=memory,
                               baseline_mb=0.0, memory_method='test', extra={'params': 967500})

    timed_out = compare_cells(compare_entry('SRFormer-lt', 4, spec, None, record(20.0, 100.0), note='> 5 s'))
    assert timed_out[3:12] == ['-', '> 5 s', '-', '-', f'{327.8 / 21.9:.2f}x', '-', '-', f'{329 / 215:.2f}x', '-']
    measured = compare_cells(compare_entry('SRFormer-lt', 4, spec, record(50.0, 30.0), record(20.0, 100.0)))
    assert measured[3:7] == ['968', '50.0', '30.0', '2.50x'] and measured[9] == '0.30x'


@pytest.mark.slow
def test_cli_compare_with_the_checkouts_option_files(tmp_path, capsys):
    """The real DFLIP option files at a tiny input: every network this checkout has, at the paper's #Params."""
    result = tmp_path / 'compare.json'
    load_cli().main(['compare', '--lr-size', '16x16', '--device', 'cpu', '--warmup', '0', '--runs', '1',
                     '--in-process', '--json', str(result)])
    out = capsys.readouterr().out
    data = json.loads(result.read_text())
    names = [entry['network'] for entry in data['rows']]
    assert names[0] == 'ESC' and len(names) + len(data['setup']['missing']) == 4
    for entry in data['rows']:
        assert entry['measured']['output_shape'] == [1, 3, 64, 64]
        assert any(line.startswith(entry['network'] + ' ') for line in out.splitlines())
        if (entry['network'], 4) in TABLE4:
            assert round(entry['measured']['params'] / 1e3) == TABLE4[entry['network'], 4].params_k
