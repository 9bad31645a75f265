"""The run is ESC's own and nothing can clobber it: experiment names that stay in their folder, a lock held by a live
run, resume past a damaged state, write errors in one line, YAML (never Python) on the command line, option files
whose aliases would blow up, non-finite losses that stop a diverged run, and the commands' entry points."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esc.config.reader import apply_overrides, check_run_name, override_value, read_option_file
from esc.errors import ESCError
from esc.utils.experiment import RUN_MARKER, RunLock
from tests.helpers.files import file_size_limit
from tests.helpers.models import training_model
from tests.helpers.paths import REPO
from tests.helpers.runs import run, train_options, write

TRAIN = str(REPO / 'esc/train.py')
TEST = str(REPO / 'esc/test.py')


def tree(root: Path) -> set:
    """Every path under ``root``, relative to it."""
    return {p.relative_to(root).as_posix() for p in root.rglob('*')}


@pytest.mark.parametrize('name', ['../../X', '../X', '/tmp/X', 'a/b', '..', '.', '', 'a\\b'])
def test_a_name_that_is_not_one_folder_name_is_refused(name):
    with pytest.raises(ESCError, match=r'^name: ') as info:
        check_run_name(name)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('how', ['file', 'force_yml'])
def test_a_path_as_name_moves_nothing_outside_the_run_folders(tmp_path, how):
    """Pointed at a folder outside experiments/ (the checkout, say), a run stops in one line and touches nothing."""
    work, victim = tmp_path / 'work', tmp_path / 'X'
    work.mkdir()
    victim.mkdir()
    (victim / 'keep.txt').write_text('mine')
    opt = train_options('tiny', total_iter=1)
    extra = []
    if how == 'file':
        opt['name'] = '../../X'
    else:
        extra = ['--force_yml', 'name=../../X']
    files = {TRAIN: write(tmp_path / 'train.yml', opt),
             TEST: write(tmp_path / 'test.yml', {**opt, 'path': {}, 'datasets': {'test': opt['datasets']['val']}})}
    before = tree(tmp_path)
    for command, options in files.items():
        result = run([command, '-opt', str(options), *extra], work)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().startswith("error: name: '../../X' must be one folder name")
        assert len(result.stderr.strip().splitlines()) == 1
        assert tree(tmp_path) == before  # nothing renamed, moved or written
    assert (victim / 'keep.txt').read_text() == 'mine'


def hold_lock(parent: Path, name: str) -> subprocess.Popen:
    """Another process holding the run lock of ``name``, as a live run does; it has taken it when this returns."""
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom esc.utils.experiment import RunLock\n'
                               f'lock = RunLock({str(parent)!r}, {name!r}).acquire()\nprint("held", flush=True)\n'
                               'time.sleep(120)'], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    return holder


def test_a_live_run_holds_its_folder_and_a_second_run_stops_naming_it(tmp_path):
    opt = train_options('shared', total_iter=1)
    path = write(tmp_path / 'o.yml', opt)
    (tmp_path / 'experiments' / 'shared').mkdir(parents=True)
    (tmp_path / 'experiments' / 'shared' / RUN_MARKER).write_text('a run folder, as a run leaves it')
    (tmp_path / 'experiments' / 'shared' / 'live.txt').write_text('a live run writes here')
    holder = hold_lock(tmp_path / 'experiments', 'shared')  # what a live training run holds
    try:
        result = run([TRAIN, '-opt', str(path)], tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        message = result.stderr.strip()
        assert message.startswith(f"error: name: {tmp_path / 'experiments' / 'shared'} is in use by a live run (pid "
                                  f'{holder.pid}, started ')
        assert len(message.splitlines()) == 1
        result = run([TRAIN, '-opt', str(path), '--auto_resume'], tmp_path)
        assert result.returncode == 2 and 'is in use by a live run' in result.stderr
        assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['.shared.lock', 'shared']
    finally:
        holder.kill()
        holder.wait()
    result = run([TRAIN, '-opt', str(path)], tmp_path)  # the lock released: the old folder is archived
    assert result.returncode == 0, result.stderr[-2000:]
    archived = [p for p in (tmp_path / 'experiments').iterdir() if p.name.startswith('shared_archived_')]
    assert len(archived) == 1 and (archived[0] / 'live.txt').is_file()
    assert (tmp_path / 'experiments' / 'shared' / 'models' / 'net_g_latest.pth').is_file()


def test_the_lock_of_a_killed_process_does_not_hold_the_folder(tmp_path):
    holder = hold_lock(tmp_path, 'x')
    with pytest.raises(ESCError, match='is in use by a live run'):
        RunLock(str(tmp_path), 'x').acquire()
    holder.kill()
    holder.wait()
    RunLock(str(tmp_path), 'x').acquire().release()


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'garbage', 'weights truncated'])
def test_auto_resume_passes_over_a_damaged_newest_state(tmp_path, damage):
    opt = train_options('resume', total_iter=4)
    opt['logger'].update(save_checkpoint_freq=2, use_tb_logger=False)
    opt.pop('val'), opt['datasets'].pop('val')
    path = write(tmp_path / 'o.yml', opt)
    assert run([TRAIN, '-opt', str(path)], tmp_path).returncode == 0
    experiment = tmp_path / 'experiments' / 'resume'
    newest, weights = experiment / 'training_states' / '4.state', experiment / 'models' / 'net_g_4.pth'
    target = weights if damage == 'weights truncated' else newest
    data = target.read_bytes()
    target.write_bytes({'truncated': data[:len(data) // 2], 'empty': b'', 'garbage': b'\x00' * 100,
                        'weights truncated': data[:len(data) // 3]}[damage])
    result = run([TRAIN, '-opt', str(path), '--auto_resume', '--force_yml', 'train:total_iter=6'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    assert f'WARNING: --auto_resume: passing over {newest}: ' in log
    assert f'Resuming training from epoch: 0, iter: 2 ({experiment / "training_states" / "2.state"})' in log
    assert (experiment / 'training_states' / '6.state').is_file()


def test_a_write_error_while_saving_is_one_line_and_the_previous_checkpoint_loads(tmp_path):
    opt = train_options('full', total_iter=4)
    opt['logger'].update(save_checkpoint_freq=2, use_tb_logger=False)
    opt.pop('val'), opt['datasets'].pop('val')
    path = write(tmp_path / 'o.yml', opt)
    assert run([TRAIN, '-opt', str(path), '--force_yml', 'train:total_iter=2'], tmp_path).returncode == 0
    models = tmp_path / 'experiments' / 'full' / 'models'
    size = (models / 'net_g_2.pth').stat().st_size
    with file_size_limit(size // 2):  # a full disk, as the OS reports a file that cannot grow
        result = run([TRAIN, '-opt', str(path), '--auto_resume'], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f'error: cannot write {models / "net_g_4.pth"}: File too large; '
                                                      'nothing was written there (an earlier file of that name is '
                                                      'untouched)')
    assert 'Traceback' not in result.stderr
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth', 'net_g_latest.pth']  # no partial file
    assert set(torch.load(models / 'net_g_2.pth', weights_only=True)) == {'params'}


@pytest.mark.parametrize('text,value', [('1e-4', 1e-4), ('[1, 2]', [1, 2]), ('true', True), ('~', None),
                                        ('none', None), ('!!float 2e-4', 2e-4), ('ESC_X2', 'ESC_X2'),
                                        ("__import__('os').getcwd()", "__import__('os').getcwd()"),
                                        ("[__import__('os').getcwd()]", ["__import__('os').getcwd()"])])
def test_force_yml_values_are_yaml_never_python(text, value):
    assert override_value(text) == value
    opt = {'train': {'ema_decay': 0.9}}
    apply_overrides(opt, [f'train:scheduler:gamma={text}'])
    assert opt == {'train': {'ema_decay': 0.9, 'scheduler': {'gamma': value}}}


def test_force_yml_refuses_what_is_not_section_key_value():
    for entry in ('train', 'train:=1', ':x=1'):
        with pytest.raises(ESCError, match=r"^--force_yml: .* is not section:key=value$"):
            apply_overrides({}, [entry])
    with pytest.raises(ESCError, match=r'^--force_yml: name is a str, not a section$'):
        apply_overrides({'name': 'x'}, ['name:inner=1'])


def test_an_option_file_whose_aliases_explode_is_refused_in_one_line(tmp_path):
    lines = ['name: bomb', 'model_type: ESCModel', 'a0: &a0 [x, x, x, x, x, x, x, x, x, x]']
    lines += [f'a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, '
              f'*a{i - 1}, *a{i - 1}]' for i in range(1, 9)]
    bomb = tmp_path / 'bomb.yml'
    bomb.write_text('\n'.join(lines) + '\n')
    assert bomb.stat().st_size < 1600
    with pytest.raises(ESCError) as info:
        read_option_file(str(bomb))
    assert str(info.value).startswith(f'-opt: {bomb} ({bomb.stat().st_size} bytes) expands through its YAML aliases to')
    result = run([TRAIN, '-opt', str(bomb)], tmp_path)
    assert result.returncode == 2 and 'expands through its YAML aliases' in result.stderr
    # a few aliases, as option files use them for repeated dataset sections, are fine
    shared = tmp_path / 'shared.yml'
    shared.write_text('d: &d {type: PairedImageDataset, io_backend: {type: disk}}\nx: *d\ny: *d\nz: *d\n')
    assert read_option_file(str(shared))['z'] == {'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'}}


def test_skipped_non_finite_steps_log_the_real_value_and_stop_a_diverged_run(tmp_path):
    opt = train_options('diverged', total_iter=30)
    opt['train'].update(nonfinite_loss='skip', nonfinite_max_skips=3)
    opt['train']['optim_g']['lr'] = 1e30  # the first step blows the weights up; every later loss is NaN or inf
    opt['logger'].update(print_freq=1, save_checkpoint_freq=100, use_tb_logger=False)
    opt.pop('val'), opt['datasets'].pop('val')
    result = run([TRAIN, '-opt', str(write(tmp_path / 'o.yml', opt))], tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: iteration ') and 'steps in a row skipped for non-finite losses' in last
    assert 'train.nonfinite_max_skips: 3' in last
    log = next((tmp_path / 'experiments/diverged').glob('train_*.log')).read_text()
    assert log.count('step skipped') == 2  # the third one stops the run
    logged = [line.split('l_pix: ')[1] for line in log.splitlines() if 'l_pix: ' in line]
    assert any(value.strip() in ('nan', 'inf', '-inf') for value in logged), logged  # the real value, not a stale one


def test_non_finite_weights_are_refused_as_pretrained_ones_and_never_saved_without_saying_so(tmp_path, caplog):
    opt = train_options('nan_weights', total_iter=1)
    opt['logger'].update(use_tb_logger=False)
    opt.pop('val'), opt['datasets'].pop('val')
    path = write(tmp_path / 'o.yml', opt)
    assert run([TRAIN, '-opt', str(path)], tmp_path).returncode == 0
    weights = tmp_path / 'experiments/nan_weights/models/net_g_latest.pth'
    state = torch.load(weights, weights_only=True)
    name = next(iter(state['params']))
    state['params'][name] = torch.full_like(state['params'][name], float('nan'))
    torch.save(state, tmp_path / 'nan.pth')
    opt['name'] = 'from_nan'
    opt['path'] = {'pretrain_network_g': str(tmp_path / 'nan.pth'), 'param_key_g': 'params'}
    result = run([TRAIN, '-opt', str(write(tmp_path / 'n.yml', opt))], tmp_path)
    assert result.returncode == 2  # the door: a pretrained file with NaN weights never starts a run
    assert result.stderr.strip().splitlines()[-1].endswith(
        f'nan.pth: {name} holds NaN or infinite values; the checkpoint is damaged')

    model = training_model()  # weights that went non-finite during training are still saved, with an error line
    model.opt['path']['models'] = str(tmp_path / 'models')
    (tmp_path / 'models').mkdir()
    with torch.no_grad():
        next(model.net_g.parameters()).fill_(float('nan'))
    logger = logging.getLogger('basicsr')  # basicsr's logger does not propagate: caplog listens to it directly
    logger.addHandler(caplog.handler)
    try:
        model.save_network(model.net_g, 'net_g', -1)
    finally:
        logger.removeHandler(caplog.handler)
    assert 'net_g_latest: the weights hold non-finite values' in caplog.text
    assert (tmp_path / 'models' / 'net_g_latest.pth').is_file()


def test_every_command_has_a_console_script_and_a_module_entry_point():
    import importlib.metadata

    scripts = {entry.name: entry.value for entry in importlib.metadata.entry_points(group='console_scripts')
               if entry.value.startswith('esc.')}
    expected = {'esc-train': 'esc.train:main', 'esc-test': 'esc.test:main', 'esc-upscale': 'esc.commands.upscale:main',
                'esc-export': 'esc.commands.export:main', 'esc-evaluate-run': 'esc.commands.evaluate_run:main',
                'esc-convert-flashbias': 'esc.commands.convert_flashbias:main',
                'esc-convert-safetensors': 'esc.commands.convert_safetensors:main',
                'esc-demo': 'esc.commands.demo:main',
                'esc-realworld-table': 'esc.commands.realworld_table:main'}
    assert scripts == expected
    for value in expected.values():
        module, function = value.split(':')
        assert callable(getattr(__import__(module, fromlist=[function]), function))
    result = subprocess.run([sys.executable, '-m', 'esc.train', '--help'], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and '-opt OPT' in result.stdout and '--auto_resume' in result.stdout


def test_no_module_of_the_package_rewrites_sys_path():
    offenders = [str(path.relative_to(REPO)) for path in (REPO / 'esc').rglob('*.py')
                 if 'sys.path' in path.read_text()]
    assert offenders == []


def test_validation_images_go_to_tensorboard(tmp_path):
    """The first ``val.tb_images`` SR images of each validation set are in the run's tensorboard events, as images."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    opt = train_options('pictures', total_iter=2)
    opt['val'].update(val_freq=2, tb_images=1)
    result = run([TRAIN, '-opt', str(write(tmp_path / 'o.yml', opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / 'tb_logger' / 'pictures'), size_guidance={IMAGES: 0})
    events.Reload()
    tags = events.Tags()['images']
    assert tags == ['images/skimage_coffee/coffee']
    shown = events.Images(tags[0])
    assert [image.step for image in shown] == [2, 2]  # the validation at iteration 2 and the one after training
    assert (shown[0].width, shown[0].height) == (48, 48)  # the SR image, at the size of coffee's HR crop (max_size)
    learning_rate = events.Scalars('learning_rate')  # beside the losses' curves, one point per logged iteration
    assert [point.step for point in learning_rate] == [1, 2]
    assert learning_rate[0].value == pytest.approx(opt['train']['optim_g']['lr'])
    assert 'losses/l_pix' in events.Tags()['scalars']
