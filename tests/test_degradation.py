"""The real-world models' degradation component (esc.models.degradation): the same training pairs as basicsr's
RealESRNet/RealESRGAN models make from the same seeds, its queue, a resume from its state, and one-line errors."""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import esc  # noqa: F401  (basicsr's degradations import on current torchvision after this)
from basicsr.models import build_model
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp

from esc.errors import ESCError
from esc.models.degradation import DEGRADATION_OPTIONS, RealESRGANDegradation, TrainingPairQueue
from esc.models.esc_model import rng_states, set_rng_states
from tests.helpers.models import model_options

OPTION_FILE = Path(__file__).resolve().parents[1] / 'options/train/ESC_Real/train_ESC_Real_X4_MSE.yml'
BATCH, SIDE, GT_SIZE, QUEUE, KERNEL = 2, 48, 32, 4, 7
CPU = torch.device('cpu')


def options(**changes) -> dict:
    """RealESRGAN's degradation options from the shipped L1-stage file, on small crops and a queue of two batches."""
    with open(OPTION_FILE) as f:
        opt = yaml.safe_load(f)
    opt.update(scale=4, gt_size=GT_SIZE, queue_size=QUEUE, **changes)
    return opt


def batches(count: int) -> list:
    """``count`` batches of smooth HR images with random normalised blur kernels, as ESCRealESRGANDataset gives
    (small kernels: the smallest resize of a small image must stay wider than a kernel's reach)."""
    generator = torch.Generator().manual_seed(7)

    def kernels() -> torch.Tensor:
        k = torch.rand(BATCH, KERNEL, KERNEL, generator=generator) ** 4
        return k / k.sum(dim=(1, 2), keepdim=True)

    out = []
    for _ in range(count):
        low = torch.rand(BATCH, 3, SIDE // 8, SIDE // 8, generator=generator)
        gt = torch.nn.functional.interpolate(low, size=(SIDE, SIDE), mode='bicubic').clamp(0, 1)
        out.append({'gt': gt, 'kernel1': kernels(), 'kernel2': kernels(), 'sinc_kernel': kernels()})
    return out


def seed(value: int = 3) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def basicsr_pairs(model_class: type, opt: dict, data: list) -> list:
    """basicsr's own model's ``feed_data`` on ``data``, on the CPU: a stand-in ``self`` with the attributes its
    constructor would have put on CUDA (the JPEG simulator's output made contiguous, as on current torch it must
    be for the second blur) and the queue already allocated there. Returns its (lq, gt, gt_usm or None) per batch."""
    jpeg = DiffJPEG(differentiable=False)
    model = SimpleNamespace(opt=opt, device=CPU, is_train=True, usm_sharpener=USMSharp(), queue_size=QUEUE,
                            jpeger=lambda x, quality: jpeg(x, quality=quality).contiguous(),
                            queue_lr=torch.zeros(QUEUE, 3, GT_SIZE // 4, GT_SIZE // 4),
                            queue_gt=torch.zeros(QUEUE, 3, GT_SIZE, GT_SIZE), queue_ptr=0)
    model._dequeue_and_enqueue = lambda: model_class._dequeue_and_enqueue(model)
    pairs = []
    for batch in data:
        model_class.feed_data(model, batch)
        pairs.append((model.lq, model.gt, getattr(model, 'gt_usm', None)))
    return pairs


@pytest.mark.parametrize('stage', ['l1', 'gan'])
def test_the_same_pairs_as_basicsr_models_from_the_same_seeds(stage):
    """Three batches (the queue fills with two, then exchanges): bit-identical LR and HR patches, so the component
    draws from the generators in basicsr's order; the GAN stage degrades the sharpened image and trains against the
    plain one, whose sharpened copy is basicsr's ``gt_usm``."""
    data = batches(3)
    if stage == 'l1':
        opt = options(gt_usm=True)
        reference_class, flags = RealESRNetModel, dict(degrade_sharpened=True, sharpened_target=True)
    else:
        opt = options(l1_gt_usm=True, percep_gt_usm=True, gan_gt_usm=False)
        reference_class, flags = RealESRGANModel, dict(degrade_sharpened=True, sharpened_target=False)
    seed()
    expected = basicsr_pairs(reference_class, opt, data)
    seed()
    degradation = RealESRGANDegradation(opt, CPU, **flags)
    for index, (batch, (lq_expected, gt_expected, gt_usm_expected)) in enumerate(zip(data, expected)):
        lq, gt = degradation(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'])
        assert lq.shape == (BATCH, 3, GT_SIZE // 4, GT_SIZE // 4) and gt.shape == (BATCH, 3, GT_SIZE, GT_SIZE)
        assert torch.equal(lq, lq_expected), f'batch {index}: LR differs'
        assert torch.equal(gt, gt_expected), f'batch {index}: HR differs'
        if gt_usm_expected is not None:
            assert torch.equal(degradation.sharpen(gt), gt_usm_expected), f'batch {index}: sharpened HR differs'
    assert degradation.queue.filled == QUEUE


def test_a_resume_from_the_state_continues_as_an_uninterrupted_run():
    """Generators' states plus the degradation's state after two batches (a full queue): the next two are the
    same."""
    data, opt = batches(4), options(gt_usm=False)
    flags = dict(degrade_sharpened=False, sharpened_target=False)
    seed()
    whole = RealESRGANDegradation(opt, CPU, **flags)
    for batch in data[:2]:
        whole(*batch.values())
    generators, state = rng_states(), whole.state_dict()
    assert set(state) == {'lr', 'gt', 'ptr'} and state['ptr'] == QUEUE
    continued = [whole(*batch.values()) for batch in data[2:]]

    seed(99)  # another history: everything that matters comes from the saved states
    resumed = RealESRGANDegradation(opt, CPU, **flags)
    set_rng_states(generators)
    resumed.load_state_dict(state)
    for (lq, gt), batch in zip(continued, data[2:]):
        lq_resumed, gt_resumed = resumed(*batch.values())
        assert torch.equal(lq, lq_resumed) and torch.equal(gt, gt_resumed)


def test_the_queue_passes_batches_through_while_filling_then_exchanges_them():
    """Two batches fill a queue of four; the third is exchanged for two pairs drawn from it, which stay paired."""
    queue = TrainingPairQueue(4)
    assert queue.state_dict() == {}
    pairs = [(torch.full((2, 1, 1, 1), float(i)), torch.full((2, 1, 2, 2), float(i))) for i in range(3)]
    for lq, gt in pairs[:2]:
        assert queue(lq, gt)[0] is lq
    assert sorted(queue.lq.flatten().tolist()) == [0, 0, 1, 1] and queue.filled == 4
    lq, gt = queue(*pairs[2])
    drawn = lq.flatten().tolist()
    assert set(drawn) <= {0.0, 1.0} and torch.equal(lq.flatten(), gt[:, 0, 0, 0])
    assert sorted(queue.lq.flatten().tolist() + drawn) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(queue.lq.flatten(), queue.gt[:, 0, 0, 0])


def test_bad_configuration_is_one_line():
    with pytest.raises(ESCError, match=r'^queue_size \(4\) must be a multiple of the batch size per GPU \(3,'):
        TrainingPairQueue(4)(torch.zeros(3, 3, 2, 2), torch.zeros(3, 3, 8, 8))
    opt = options()
    del opt[DEGRADATION_OPTIONS[3]]
    with pytest.raises(ESCError, match=rf'^{DEGRADATION_OPTIONS[3]}: missing \(a top-level option of the RealESRGAN'):
        RealESRGANDegradation(opt, CPU, degrade_sharpened=False, sharpened_target=False)


def real_world_model(**changes):
    """A tiny ESCRealESRNetModel ready to train, built as an option file builds it (no data loader)."""
    opt = {**model_options(scale=4), **{key: value for key, value in options(gt_usm=True).items()
                                        if key in (*DEGRADATION_OPTIONS, 'gt_usm', 'gt_size', 'queue_size')}}
    train = {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 10,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}
    opt.update(model_type='ESCRealESRNetModel', is_train=True, train=train, **changes)
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    return build_model(opt)


def test_the_model_degrades_training_batches_and_takes_validation_batches_as_they_are():
    model = real_world_model()
    assert isinstance(model.degradation, RealESRGANDegradation) and model.degradation.sharpened_target
    seed()
    model.feed_data(batches(1)[0])
    assert model.lq.shape == (BATCH, 3, GT_SIZE // 4, GT_SIZE // 4) and model.gt.shape == (BATCH, 3, GT_SIZE, GT_SIZE)
    state = model.rank_training_state()
    assert state['queue']['ptr'] == BATCH and torch.equal(state['queue']['lr'][:BATCH], model.lq)

    lq, gt = torch.rand(1, 3, 12, 10), torch.rand(1, 3, 48, 40)
    model.feed_data({'lq': lq, 'gt': gt, 'lq_path': ['a.png'], 'gt_path': ['b.png']})
    assert torch.equal(model.lq, lq) and torch.equal(model.gt, gt) and model.degradation.queue.filled == BATCH

    state['queue']['ptr'] = 0  # what a resumed run reads back goes into the degradation
    model.load_rank_training_state(state)
    assert model.degradation.queue.filled == 0

    with pytest.raises(ESCError, match=r"^datasets\.train: a batch without LR images needs gt, kernel1, kernel2, "
                                       r"sinc_kernel .*; this one lacks kernel2, sinc_kernel$"):
        model.feed_data({key: value for key, value in batches(1)[0].items() if key in ('gt', 'kernel1')})


def test_paired_training_has_no_degradation():
    assert real_world_model(high_order_degradation=False).degradation is None
