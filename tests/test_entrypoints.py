"""esc/train.py and esc/test.py end to end: demo-sized training and testing, the torchrun (gloo)
and slurm launchers on CPU, and one-line errors for bad input (the README demo itself: tests/test_demo.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.imports import first_import_line
from tests.helpers.paths import REPO
from tests.helpers.runs import METRICS, TINY_NET, free_port, run, train_options, write


def test_train_then_test_through_the_entrypoints(tmp_path):
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'train.yml', train_options('tiny')))],
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / 'experiments' / 'tiny'
    checkpoint = experiment / 'models' / 'net_g_latest.pth'
    assert checkpoint.is_file() and (experiment / 'training_states' / '4.state').is_file()
    assert list((tmp_path / 'tb_logger' / 'tiny').glob('events.out.tfevents.*'))
    log = next(experiment.glob('train_tiny_*.log')).read_text()
    assert '# psnr:' in log and '# ssim:' in log
    assert not list(experiment.rglob('*.tmp*')), 'temporary checkpoint files left behind'

    resumed = run([str(REPO / 'esc/train.py'), '-opt', str(tmp_path / 'train.yml'), '--auto_resume',
                   '--force_yml', 'train:total_iter=6', 'logger:save_checkpoint_freq=6'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resuming training from epoch' in resumed.stderr + resumed.stdout
    assert (experiment / 'training_states' / '6.state').is_file()

    test_opt = {
        'name': 'tiny_test', 'model_type': 'ESCModel', 'scale': 2, 'num_gpu': 0,
        'datasets': {'test_1': {'name': 'coffee', 'type': 'SampleImageDataset', 'images': ['coffee'], 'max_size': 40}},
        'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': True, 'pad_to_multiple': 8, 'metrics': METRICS},
    }
    result = run([str(REPO / 'esc/test.py'), '-opt', str(write(tmp_path / 'test.yml', test_opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = list((tmp_path / 'results' / 'tiny_test' / 'visualization' / 'coffee').glob('*.png'))
    assert len(saved) == 1
    import cv2
    assert cv2.imread(str(saved[0])).shape == (40, 40, 3)


@pytest.mark.parametrize('mutate,message', [
    (lambda o: o['network_g'].update(pdim=32), 'pdim (32) must not exceed dim (16)'),
    (lambda o: o['network_g'].update(attn_type='flash'), "attn_type: 'flash' is not supported"),
    (lambda o: o['train']['optim_g'].update(type='Adamm'), "train.optim_g.type: 'Adamm' is not a known torch.optim optimizer"),
    (lambda o: o['path'].update(pretrain_network_g='missing.pth'), 'path.pretrain_network_g: no such file'),
])
def test_bad_options_fail_in_one_line(tmp_path, mutate, message):
    opt = train_options('bad')
    mutate(opt)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'bad.yml', opt))], tmp_path)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')
    assert message in result.stderr


def test_missing_and_malformed_option_files(tmp_path):
    result = run([str(REPO / 'esc/test.py'), '-opt', 'nowhere.yml'], tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == 'error: -opt: no such option file nowhere.yml'
    (tmp_path / 'broken.yml').write_text('name: [unclosed\n')
    result = run([str(REPO / 'esc/train.py'), '-opt', 'broken.yml'], tmp_path)
    assert result.returncode == 2 and 'is not valid YAML' in result.stderr and 'Traceback' not in result.stderr


def test_torchrun_two_cpu_processes_with_gloo(tmp_path):
    opt = train_options('ddp', total_iter=3)
    opt['dist_params'] = {'backend': 'gloo'}
    args = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
            str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'ddp.yml', opt)), '--launcher', 'pytorch']
    result = run(args, tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    log = next((tmp_path / 'experiments' / 'ddp').glob('train_ddp_*.log')).read_text()
    assert 'Batch: world size 2,' in log
    weights = torch.load(tmp_path / 'experiments/ddp/models/net_g_latest.pth', weights_only=True)['params']
    assert set(weights) == {k for k in weights if not k.startswith('module.')}


def test_slurm_launcher_with_stub_scontrol(tmp_path):
    stub = tmp_path / 'bin' / 'scontrol'
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\n# stand-in for `scontrol show hostnames NODELIST`\necho localhost\necho node02\n')
    stub.chmod(0o755)
    opt = train_options('slurm', total_iter=2)
    opt_path = str(write(tmp_path / 'slurm.yml', opt))
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, 'PATH': f'{stub.parent}{os.pathsep}{os.environ["PATH"]}', 'SLURM_PROCID': str(rank),
               'SLURM_NTASKS': '2', 'SLURM_NODELIST': 'node[01-02]', 'SLURM_LOCALID': str(rank),
               'MASTER_PORT': port, 'PYTHONUNBUFFERED': '1'}
        procs.append(subprocess.Popen([sys.executable, str(REPO / 'esc/train.py'), '-opt', opt_path, '--launcher',
                                       'slurm'], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    log = next((tmp_path / 'experiments' / 'slurm').glob('train_slurm_*.log')).read_text()
    assert 'Batch: world size 2,' in log
    assert (tmp_path / 'experiments/slurm/models/net_g_latest.pth').is_file()


def test_where_esc_is_not_installed_scripts_find_their_checkout_and_commands_say_so(tmp_path):
    """As on a machine where only the dependencies are installed and the checkout is not (pip install -e
    skipped): ``-S`` drops site's .pth files, among them the editable install's finder, and PYTHONPATH
    lists only site-packages. The scripts still import this checkout's esc: each imports scripts/_checkout.py before
    anything of esc (read from its source), and one of them is run so; the package's own commands (which never
    touch ``sys.path``) say in one line what to install. (Every script's ``--help`` there took 17 s of the suite's
    time, each importing torch, for what one run and the import order show.)"""
    import site
    env = {'PYTHONPATH': os.pathsep.join(site.getsitepackages()), 'PATH': os.environ.get('PATH', '')}
    probe = subprocess.run([sys.executable, '-S', '-c', 'import esc'], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert probe.returncode != 0 and "No module named 'esc'" in probe.stderr  # the situation is reproduced
    scripts = sorted((REPO / 'scripts').glob('[!_]*.py'))
    for script in scripts:
        checkout, package = first_import_line(script, '_checkout'), first_import_line(script, 'esc')
        assert 0 < checkout < package, f'{script.name}: imports esc (line {package}) before _checkout ({checkout})'
    commands = [REPO / 'esc' / 'train.py', REPO / 'esc' / 'test.py',
                *sorted((REPO / 'esc' / 'commands').glob('[!_]*.py'))]
    procs = [(command, subprocess.Popen([sys.executable, '-S', str(command), '--help'], cwd=tmp_path, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for command in [REPO / 'scripts' / 'check_downloads.py', *commands]]
    for command, proc in procs:
        out, err = proc.communicate(timeout=180)
        if command.parent.name == 'scripts':
            assert proc.returncode == 0 and 'usage' in out.lower(), f'{command.name}: {err[-500:]}'
        else:
            assert proc.returncode == 1 and err.strip() == ('error: the esc package is not installed: run '
                                                            '`pip install -e .` in the checkout first'), command.name
