"""No command writes over a file it reads: ``-o`` naming the checkpoint, an image the command reads, or either of them
through a symbolic or hard link, is one line before any work, and the input is left byte for byte."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from esc import ESC
from esc.commands import convert_flashbias, convert_safetensors, export
from tests.helpers.runs import TINY_NET

COMMANDS = {'esc-export': (export, '.onnx', ()), 'esc-convert-flashbias': (convert_flashbias, '.pth', ('--rank', 8)),
            'esc-convert-safetensors': (convert_safetensors, '.safetensors', ())}


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    options = {k: v for k, v in TINY_NET.items() if k != 'type'}
    path = tmp_path / 'net.pth'
    torch.save({'params_ema': ESC(**options).state_dict()}, path)
    return path


def call(capsys, module, *args) -> tuple:
    with pytest.raises(SystemExit) as exit_info:
        module.main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize('command', COMMANDS)
@pytest.mark.parametrize('how', ['same path', 'symbolic link', 'hard link'])
def test_output_over_the_checkpoint_read_is_refused(tmp_path, capsys, checkpoint, command, how):
    module, suffix, required = COMMANDS[command]
    output = tmp_path / f'out{suffix}'
    if how == 'same path':
        model = output
        os.replace(checkpoint, model)
    elif how == 'symbolic link':
        model = checkpoint
        output.symlink_to(checkpoint)
    else:
        model = checkpoint
        os.link(checkpoint, output)
    before = model.read_bytes()
    status, err = call(capsys, module, *required, '--model', model, '-o', output)
    assert status == 2
    assert err.strip() == (f'error: -o: {output} is the file --model reads ({model}); a command never writes over '
                           'its input: choose another file')
    assert model.read_bytes() == before


@pytest.mark.parametrize('command, option', [('esc-export', '--verify'), ('esc-convert-flashbias', '--image')])
def test_output_over_the_photograph_read_is_refused(tmp_path, capsys, checkpoint, command, option):
    module, _, required = COMMANDS[command]
    photograph = tmp_path / 'photo.png'
    photograph.write_bytes(b'an image the command would read')
    status, err = call(capsys, module, *required, '--model', checkpoint, '-o', photograph, option, photograph)
    assert status == 2
    assert err.strip().startswith(f'error: -o: {photograph} is the file {option} reads')
    assert photograph.read_bytes() == b'an image the command would read'


@pytest.mark.parametrize('command', COMMANDS)
def test_an_output_that_is_a_folder_or_in_no_folder_is_one_line(tmp_path, capsys, checkpoint, command):
    module, suffix, required = COMMANDS[command]
    (tmp_path / f'folder{suffix}').mkdir()
    status, err = call(capsys, module, *required, '--model', checkpoint, '-o', tmp_path / f'folder{suffix}')
    assert (status, err.strip()) == (2, f"error: -o: {tmp_path / f'folder{suffix}'} is a folder; give the file to write")
    status, err = call(capsys, module, *required, '--model', checkpoint, '-o', tmp_path / 'nowhere' / f'x{suffix}')
    assert (status, err.strip()) == (2, f"error: -o: no such folder {tmp_path / 'nowhere'}")
