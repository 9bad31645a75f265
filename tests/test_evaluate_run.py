"""esc/commands/evaluate_run.py end to end: a tiny training run, five fake benchmarks, the Table 2 row beside the
paper's."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

from esc.commands import evaluate_run
from esc.evaluation.paper import BENCHMARKS
from tests.helpers.paths import REPO
from tests.helpers.runs import METRICS, TINY_NET, run, train_options, write


def fake_benchmarks(root) -> dict:
    """One 24x24 photograph-like image per benchmark, its x2 LR beside it; the test options that read them."""
    rng = np.random.default_rng(0)
    datasets = {}
    for number, name in enumerate(BENCHMARKS, 1):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), (5, 5), 0)
        for folder, image in (('HR', hr), ('LR_bicubic/X2', cv2.resize(hr, (12, 12), interpolation=cv2.INTER_AREA))):
            (root / 'datasets' / name / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / 'datasets' / name / folder / 'img.png'), image)
        datasets[f'test_{number}'] = {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': f'datasets/{name}/HR',
                                      'dataroot_lq': f'datasets/{name}/LR_bicubic/X2', 'io_backend': {'type': 'disk'}}
    return {'name': 'tiny_test', 'model_type': 'ESCModel', 'scale': 2, 'num_gpu': 0, 'datasets': datasets,
            'network_g': {'type': 'ESC'}, 'path': {'param_key_g': 'params'},
            'val': {'save_img': False, 'pad_to_multiple': 8, 'metrics': METRICS}}


def evaluate(capsys, *argv: str):
    with pytest.raises(SystemExit) as ended:
        evaluate_run.main(list(argv))
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_a_finished_run_is_evaluated_on_the_five_benchmarks(tmp_path, monkeypatch, capsys):
    opt = train_options('ESC_light_X2_DIV2K', total_iter=2)  # named like the Table 2 option files
    opt['train']['ema_decay'] = 0.5
    opt['logger']['save_checkpoint_freq'] = 1
    opt['datasets'].pop('val'), opt.pop('val')
    trained = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'train.yml', opt))], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    options = write(tmp_path / 'test.yml', fake_benchmarks(tmp_path))
    monkeypatch.chdir(tmp_path)

    code, out, err = evaluate(capsys, 'ESC_light_X2_DIV2K', '--options', str(options))
    assert code == 0, err[-3000:]
    assert ('Evaluating experiments/ESC_light_X2_DIV2K/models/net_g_latest.pth [params_ema] (net_g_latest: written '
            'when training ended)') in out
    rows = [line for line in out.splitlines() if line.startswith('| ESC-light')]
    ours, paper, difference = (row.split(' | ') for row in rows)
    assert ours[0] == '| ESC-light (DIV2K)' and ours[1] == 'x2'
    assert ours[5] == str(round(sum(p.numel() for p in build_network(dict(TINY_NET)).parameters()) / 1e3))
    psnr_ssim = [cell.strip(' |').split('/') for cell in ours[6:]]
    assert len(psnr_ssim) == 5 and all(10 < float(p) < 60 and 0 < float(s) <= 1 for p, s in psnr_ssim)
    assert paper[6] == '38.24/0.9615' and difference[6] == (
        f'{float(psnr_ssim[0][0]) - 38.24:+.2f}/{float(psnr_ssim[0][1]) - 0.9615:+.4f}')
    results = tmp_path / 'results'
    assert (results / 'ESC_light_X2_DIV2K_latest_ema.md').read_text().count('ESC-light') == 3
    saved = json.loads((results / 'ESC_light_X2_DIV2K_latest_ema.json').read_text())
    assert sorted(saved['scores']) == sorted(BENCHMARKS) and saved['weights']['param_key'] == 'params_ema'
    log = next((results / 'ESC_light_X2_DIV2K_latest_ema').glob('test_*.log')).read_text()
    assert 'ESC_light_X2_DIV2K/models/net_g_latest.pth [params_ema]' in log  # the test log names the weights

    # an interrupted evaluation resumes: with three benchmarks scored, only the other two run again
    scores = dict(list(saved['scores'].items())[:3])
    (results / 'ESC_light_X2_DIV2K_latest_ema.json').write_text(json.dumps({**saved, 'scores': scores}))
    shutil.rmtree(results / 'ESC_light_X2_DIV2K_latest_ema')
    code, out, err = evaluate(capsys, 'experiments/ESC_light_X2_DIV2K', '--options', str(options))
    assert code == 0, err[-3000:]
    assert f'Already evaluated with these weights (results/ESC_light_X2_DIV2K_latest_ema.json): {", ".join(scores)}' in out
    assert '(Urban100, Manga109)' in out and [line for line in out.splitlines() if line.startswith('| ESC-light')] == rows

    written = yaml.safe_load((results / 'ESC_light_X2_DIV2K_latest_ema.yml').read_text())
    assert written['path']['param_key_g'] == 'params_ema' and written['network_g'] == opt['network_g']
    picked = evaluate_run.pick_checkpoint(tmp_path / 'experiments/ESC_light_X2_DIV2K/models', '1')
    assert (picked.path.name, picked.label, picked.reason) == ('net_g_1.pth', '1', 'iteration 1, as asked')
    code, _, err = evaluate(capsys, 'ESC_light_X2_DIV2K', '--options', str(options), '--iter', '7')
    assert code == 2 and err.strip() == ('error: --iter: experiments/ESC_light_X2_DIV2K/models holds no net_g_7 '
                                         'weights (saved: 1, 2, latest)')
    shutil.rmtree(tmp_path / 'datasets' / 'Manga109')
    code, _, err = evaluate(capsys, 'ESC_light_X2_DIV2K', '--options', str(options))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith('error: datasets/Manga109/HR: no such folder (Manga109, datasets.test_5.dataroot_gt of ')
    assert 'datasets/README.md says where to get it' in err


def test_the_default_test_options_are_the_table2_benchmarks(tmp_path, monkeypatch, capsys):
    """Without --options, the shipped Table 2 test options at the run's scale: a missing benchmark is named first."""
    models = tmp_path / 'experiments' / 'ESC_X3_DIV2K' / 'models'
    models.mkdir(parents=True)
    network = {**TINY_NET, 'upscaling_factor': 3}
    torch.save({'params_ema': build_network(dict(network)).state_dict()}, models / 'net_g_500.pth')
    (models.parent / 'train_ESC_X3_DIV2K.yml').write_text(yaml.safe_dump({'name': 'ESC_X3_DIV2K', 'scale': 3,
                                                                          'network_g': network}))
    monkeypatch.chdir(tmp_path)
    code, out, err = evaluate(capsys, 'ESC_X3_DIV2K')
    assert code == 2 and 'no net_g_latest (training has not ended): the newest, iteration 500' in out
    assert err.startswith('error: datasets/Set5/HR: no such folder (Set5, datasets.test_1.dataroot_gt of '
                          f'{REPO / "options/test/ESC/test_ESC_X3_DIV2K.yml"}')
    code, _, err = evaluate(capsys, 'ESC_X3_DIV2K', '--param-key', 'params')
    assert code == 2 and err.startswith('error: --param-key') and 'params' in err


def test_weights_without_ema_are_named_as_params(tmp_path, monkeypatch, capsys):
    """A run whose checkpoint holds only ``params`` (EMA off) is evaluated on them and says so in its first line, its
    table, its result names and its test log."""
    models = tmp_path / 'experiments' / 'my_first_run' / 'models'
    models.mkdir(parents=True)
    torch.save({'params': build_network(dict(TINY_NET)).state_dict()}, models / 'net_g_latest.pth')
    (models.parent / 'train_my_first_run.yml').write_text(yaml.safe_dump(
        {'name': 'my_first_run', 'scale': 2, 'network_g': dict(TINY_NET), 'datasets': {'train': {'name': 'DIV2K'}}}))
    options = write(tmp_path / 'test.yml', fake_benchmarks(tmp_path))
    monkeypatch.chdir(tmp_path)

    code, out, err = evaluate(capsys, 'my_first_run', '--options', str(options))
    assert code == 0, err[-3000:]
    first = out.splitlines()[0]
    assert first.startswith('Evaluating experiments/my_first_run/models/net_g_latest.pth [params] (net_g_latest: '
                            'written when training ended; it holds no params_ema: its params are evaluated)')
    assert 'params_ema' not in out.replace('it holds no params_ema', '')
    results = tmp_path / 'results'
    assert (results / 'my_first_run_latest_params.md').read_text().startswith(
        'experiments/my_first_run/models/net_g_latest.pth [params]')
    assert not list(results.glob('*_ema*'))
    assert json.loads((results / 'my_first_run_latest_params.json').read_text())['weights']['param_key'] == 'params'
    assert yaml.safe_load((results / 'my_first_run_latest_params.yml').read_text())['path']['param_key_g'] == 'params'
    log = next((results / 'my_first_run_latest_params').glob('test_*.log')).read_text()
    assert 'my_first_run/models/net_g_latest.pth [params]' in log


def test_the_paper_row_follows_the_variant_read_off_the_checkpoint(tmp_path):
    """An ESC-light checkpoint gets the paper's ESC-light row whatever the run is called; a network that is no
    named variant gets none; --variant still decides where given."""
    from esc.archs import build_variant

    path = tmp_path / 'net_g_latest.pth'
    torch.save({'params': build_variant('ESC-light', 2).state_dict()}, path)
    detected = evaluate_run.detected_variant(path, 'params', {'type': 'ESC', 'n_blocks': 3})
    assert detected == 'ESC-light'
    assert evaluate_run.table_key('my_first_run', 2, None, detected, 'DIV2K') == ('ESC-light', 2, 'DIV2K')
    assert evaluate_run.table_key('my_first_run', 2, None, detected, 'DFLIP') == ('ESC-light', 2, 'DFLIP')
    assert evaluate_run.table_key('my_first_run', 2, 'ESC', detected, None) == ('ESC', 2, 'DIV2K')
    torch.save({'params': build_network(dict(TINY_NET)).state_dict()}, path)
    assert evaluate_run.detected_variant(path, 'params', dict(TINY_NET)) is None
    assert evaluate_run.table_key('my_first_run', 2, None, None, 'DIV2K') == ('my_first_run', 2, '-')
