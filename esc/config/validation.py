"""Option-file validation: every key, at every level, against what basicsr and ESC read.

:func:`validate_options` runs on the YAML file as read and again on the parsed options
(:mod:`esc.config.reader`; ``--force_yml`` may add keys), so a typo, a value of the wrong type or options that
contradict each other stop the run in one line naming the key path — ``datasets.train.gt_sizee:
unknown option (did you mean gt_size?)`` — before any dataset or network is built.

Where the keys come from:

- sections whose ``type`` names a class or function (``network_g``/``network_d``, every loss
  ``train.*_opt``, ``train.optim_*``, ``train.scheduler``, ``val.metrics.*``): that callable's
  named parameters, with the types their annotations or defaults give;
- datasets and models, which read a dict of options: the tables below (:data:`DATASET_KEYS`,
  :data:`MODEL_KEYS`, keyed by class name; a model accepts the keys of every class in its MRO).
  basicsr's classes are listed here; ESC's own datasets and models add their entries beside their
  class, in the module that defines it.
"""
from __future__ import annotations

import difflib
import inspect
import math
import types as pytypes
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from esc.config.batch import check_batch_options, plan_batch
from esc.errors import ESCError
from esc.io.checkpoint import WEIGHTS_FORMATS

NoneType = type(None)
BAD_SAMPLE_MODES = ('error', 'skip')
"""``datasets.*.bad_samples``: stop on a sample that does not load, or skip it (:mod:`esc.data.resumable`)."""
UNION_ORIGINS = (Union, getattr(pytypes, 'UnionType', Union))  # Optional[int] and int | None (3.10+)
Types = Tuple[type, ...]
Spec = Union[Types, Dict[str, Any], Callable[[Any, str], None]]

INT: Types = (int,)
NUM: Types = (int, float)
BOOL: Types = (bool,)
STR: Types = (str,)
SEQ: Types = (list, tuple)
ANY: Types = (object,)


def optional(types: Types) -> Types:
    return types + (NoneType,)


IO_BACKEND = {'type': STR, 'db_paths': optional(SEQ + STR), 'client_keys': optional(SEQ + STR)}
COMMON_DATASET_KEYS: Dict[str, Spec] = {
    'name': STR, 'type': STR, 'phase': STR, 'scale': NUM, 'io_backend': IO_BACKEND,
    'num_worker_per_gpu': INT, 'batch_size_per_gpu': INT, 'dataset_enlarge_ratio': NUM,
    'use_shuffle': BOOL,  # unread (basicsr shuffles every training set); the official option files carry it
    'prefetch_mode': optional(STR), 'num_prefetch_queue': INT, 'pin_memory': BOOL, 'persistent_workers': BOOL,
    'bad_samples': STR, 'scan': BOOL,  # ESC: esc.data.resumable
    'total_batch_size': INT, 'accumulate_grad_batches': INT, 'max_batch_size_per_gpu': INT,  # ESC: esc.config.batch
}
_PAIRED = {'dataroot_gt': SEQ + STR, 'dataroot_lq': SEQ + STR, 'meta_info_file': optional(STR),
           'filename_tmpl': STR, 'gt_size': INT, 'use_hflip': BOOL, 'use_rot': BOOL, 'mean': optional(SEQ),
           'std': optional(SEQ), 'color': optional(STR)}
_REAL_DEGRADATION = {
    f'{key}{stage}': types for stage in ('', '2') for key, types in (
        ('blur_kernel_size', INT), ('kernel_list', SEQ), ('kernel_prob', SEQ), ('blur_sigma', SEQ),
        ('betag_range', SEQ), ('betap_range', SEQ), ('sinc_prob', NUM))
}
DATASET_KEYS: Dict[str, Dict[str, Spec]] = {
    'PairedImageDataset': _PAIRED,
    'SingleImageDataset': {'dataroot_lq': SEQ + STR, 'meta_info_file': optional(STR), 'mean': optional(SEQ),
                           'std': optional(SEQ), 'color': optional(STR),
                           'filename_tmpl': STR},  # unread; the official ESC-Real test files carry it
    'RealESRGANDataset': {'dataroot_gt': STR, 'meta_info': STR, 'gt_size': INT, 'use_hflip': BOOL, 'use_rot': BOOL,
                          'final_sinc_prob': NUM, **_REAL_DEGRADATION},
    'RealESRGANPairedDataset': {**_PAIRED, 'meta_info': optional(STR)},
}
"""Keys each dataset class reads besides :data:`COMMON_DATASET_KEYS`."""

_SR_TRAIN = {'ema_decay': NUM, 'optim_g': 'optimizer', 'scheduler': 'scheduler', 'total_iter': NUM,
             'warmup_iter': NUM, 'pixel_opt': 'loss', 'perceptual_opt': 'loss'}
_GAN_TRAIN = {'optim_d': 'optimizer', 'gan_opt': 'loss', 'ldl_opt': 'loss', 'net_d_iters': INT,
              'net_d_init_iters': INT}
_REAL_MODEL = {
    'queue_size': INT, 'gt_size': INT, 'high_order_degradation': BOOL, 'second_blur_prob': NUM,
    **{f'{key}{stage}': types for stage in ('', '2') for key, types in (
        ('resize_prob', SEQ), ('resize_range', SEQ), ('gaussian_noise_prob', NUM), ('noise_range', SEQ),
        ('poisson_scale_range', SEQ), ('gray_noise_prob', NUM), ('jpeg_range', SEQ))},
}
MODEL_KEYS: Dict[str, Dict[str, Dict[str, Spec]]] = {
    'SRModel': {'train': _SR_TRAIN, 'val': {'val_freq': NUM, 'save_img': BOOL, 'suffix': optional(STR),
                                            'pbar': BOOL, 'metrics': 'metrics'}},
    'SRGANModel': {'train': _GAN_TRAIN},
    'RealESRNetModel': {'top': {**_REAL_MODEL, 'gt_usm': BOOL}},
    'RealESRGANModel': {'top': {**_REAL_MODEL, 'l1_gt_usm': BOOL, 'percep_gt_usm': BOOL, 'gan_gt_usm': BOOL}},
}
"""Keys each model class reads at the top level (``top``) and in ``train`` and ``val``."""

PATH_KEYS: Dict[str, Spec] = {
    **{f'{key}_{net}': types for net in ('g', 'd') for key, types in (
        ('pretrain_network', optional(STR)), ('strict_load', BOOL), ('param_key', STR))},
    'resume_state': optional(STR), 'ignore_resume_networks': optional(SEQ),
    'experiments_root': STR, 'models': STR, 'training_states': STR, 'log': STR, 'visualization': STR,
    'results_root': STR, 'root': STR,
}
LOGGER_KEYS: Dict[str, Spec] = {
    'print_freq': NUM, 'save_checkpoint_freq': NUM, 'use_tb_logger': BOOL, 'keep_last': optional(INT),
    'weights_format': STR,  # ESC: esc.io.checkpoint
    'wandb': {'project': optional(STR), 'resume_id': optional(STR), 'entity': optional(STR)},
}
TOP_KEYS: Dict[str, Spec] = {
    'name': STR, 'model_type': STR, 'scale': NUM, 'num_gpu': INT + STR, 'manual_seed': optional(INT),
    'datasets': 'datasets', 'network_g': 'network', 'network_d': 'network', 'path': PATH_KEYS, 'logger': LOGGER_KEYS,
    'dist_params': {'backend': STR, 'port': INT}, 'find_unused_parameters': BOOL,
    # derived when the options are read (esc.config.reader.read_options) or the loop sets up its process
    'is_train': BOOL, 'dist': BOOL, 'rank': INT, 'world_size': INT, 'auto_resume': BOOL, 'root_path': STR,
}
REQUIRED_TRAIN = (('train', 'total_iter'), ('train', 'optim_g'), ('logger', 'print_freq'),
                  ('logger', 'save_checkpoint_freq'))


def validate_options(opt: Mapping[str, Any], is_train: bool) -> None:
    """Check ``opt`` (an option file's mapping, parsed or not); raise ESCError naming the first bad key path.
    Options name basicsr's registered classes, so ESC's must be registered: ``import esc.compat`` first (the
    entry points do; this module sits below the classes it checks, so it cannot)."""
    from basicsr.utils.registry import MODEL_REGISTRY

    if _registered(MODEL_REGISTRY, 'ESCModel') is None:
        raise ESCError('options cannot be checked before ESC is registered with basicsr: import esc.compat first')
    if not isinstance(opt, Mapping):
        raise ESCError('the option file does not hold a mapping of options')
    for key in ('name', 'model_type', 'datasets'):
        if key not in opt:
            raise ESCError(f'{key}: missing (required)')
    model_type = opt['model_type']
    model_class = _registered(MODEL_REGISTRY, model_type)
    if model_class is None:
        raise ESCError(f'model_type: {model_type!r} is not a registered model{_suggest(model_type, MODEL_REGISTRY)}')
    model_keys = _model_keys(model_class)
    top = {**TOP_KEYS, **model_keys['top'], 'train': model_keys['train'], 'val': model_keys['val']}
    _check_section(opt, top, '')
    if 'network_g' not in opt:
        raise ESCError('network_g: missing (required)')
    if is_train:
        for section, key in REQUIRED_TRAIN:
            if key not in (opt.get(section) or {}):
                raise ESCError(f'{section}.{key}: missing (required for training)')
        if opt.get('val') and 'val_freq' not in opt['val']:
            raise ESCError('val.val_freq: missing (required for validation during training)')
    _check_consistency(opt, is_train)


def _registered(registry: Any, name: Any) -> Any:
    """``registry[name]`` or None; basicsr's registries also resolve NAME to a NAME_basicsr entry."""
    if not isinstance(name, str):
        return None
    entries = getattr(registry, '_obj_map', registry)  # read directly: basicsr's get() prints on the fallback
    return entries.get(name, entries.get(f'{name}_basicsr'))


def _model_keys(model_class: type) -> Dict[str, Dict[str, Spec]]:
    merged: Dict[str, Dict[str, Spec]] = {'top': {}, 'train': {}, 'val': {}}
    for cls in reversed(model_class.__mro__):
        for section, keys in MODEL_KEYS.get(cls.__name__, {}).items():
            merged[section].update(keys)
    return merged


# --- walking sections -------------------------------------------------------------------------------------------
def _check_section(value: Any, spec: Mapping[str, Spec], path: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ESCError(f'{path.rstrip(".") or "options"}: must be a mapping of options, got {value!r}')
    for key, item in value.items():
        where = f'{path}{key}'
        if key not in spec:
            raise ESCError(f'{where}: unknown option{_suggest(key, spec)}')
        _check_value(item, spec[key], where)


def _check_value(value: Any, spec: Any, path: str) -> None:
    if spec is None:
        return
    if isinstance(spec, tuple):
        _check_type(value, spec, path)
    elif isinstance(spec, dict):
        _check_section(value, spec, f'{path}.')
    else:
        SECTION_CHECKS[spec](value, path)


def _check_type(value: Any, types: Types, path: str) -> None:
    if isinstance(value, bool) and bool not in types and object not in types:
        raise ESCError(f'{path}: must be {_describe(types)}, got {value!r}')
    if isinstance(value, types):
        if isinstance(value, float) and not math.isfinite(value) and float in types:
            raise ESCError(f'{path}: must be finite, got {value!r}')
        return
    hint = ''
    if isinstance(value, str) and float in types:
        try:
            float(value)
            hint = f' (YAML reads {value} as text: write !!float {value} or a decimal point)'
        except ValueError:
            pass
    raise ESCError(f'{path}: must be {_describe(types)}, got {value!r}{hint}')


def _describe(types: Types) -> str:
    names = {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string', list: 'a list',
             tuple: 'a list', NoneType: '~ (null)', dict: 'a mapping'}
    if float in types:
        types = tuple(t for t in types if t is not int)
    words = list(dict.fromkeys(names[t] for t in types if t in names)) or [t.__name__ for t in types]
    return ' or '.join(words)


def _suggest(key: Any, known: Any) -> str:
    names = getattr(known, '_obj_map', known)  # a basicsr Registry iterates over (name, object) pairs
    close = difflib.get_close_matches(str(key), [str(k) for k in names], n=1)
    return f' (did you mean {close[0]}?)' if close else ''


# --- sections whose keys come from a registry, a table or a signature ------------------------------------------
def _check_datasets(value: Any, path: str) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY

    if not isinstance(value, Mapping) or not value:
        raise ESCError(f'{path}: must map phases (train, val, test_1, ...) to datasets, got {value!r}')
    for phase, dataset in value.items():
        where = f'{path}.{phase}'
        if not isinstance(dataset, Mapping):
            raise ESCError(f'{where}: must be a mapping of dataset options, got {dataset!r}')
        dataset_type = dataset.get('type')
        dataset_class = _registered(DATASET_REGISTRY, dataset_type)
        if dataset_class is None:
            raise ESCError(f'{where}.type: {dataset_type!r} is not a registered dataset'
                           f'{_suggest(dataset_type, DATASET_REGISTRY)}')
        tables = [DATASET_KEYS[c.__name__] for c in reversed(dataset_class.__mro__) if c.__name__ in DATASET_KEYS]
        if not tables:
            raise ESCError(f'{where}.type: {dataset_type} has no option table in esc.config.validation.DATASET_KEYS')
        _check_section(dataset, {k: v for table in [COMMON_DATASET_KEYS, *tables] for k, v in table.items()},
                       f'{where}.')


def _check_network(value: Any, path: str) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    _check_typed(value, path, ARCH_REGISTRY, 'network')


def _check_loss(value: Any, path: str) -> None:
    from basicsr.utils.registry import LOSS_REGISTRY

    _check_typed(value, path, LOSS_REGISTRY, 'loss')


def _check_metrics(value: Any, path: str) -> None:
    from basicsr.utils.registry import METRIC_REGISTRY

    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ESCError(f'{path}: must map metric names to metric options, got {value!r}')
    for name, metric in value.items():
        _check_typed(metric, f'{path}.{name}', METRIC_REGISTRY, 'metric', extra={'better': STR},
                     skip=('img', 'img2'))


def _check_optimizer(value: Any, path: str) -> None:
    import torch

    _check_typed(value, path, {k: v for k, v in vars(torch.optim).items()
                               if isinstance(v, type) and issubclass(v, torch.optim.Optimizer)}, 'torch.optim optimizer',
                 skip=('params',))


def _check_scheduler(value: Any, path: str) -> None:
    from basicsr.models import lr_scheduler

    schedulers = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                  'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
    _check_typed(value, path, schedulers, 'scheduler', skip=('optimizer', 'last_epoch'))


SECTION_CHECKS: Dict[str, Callable[[Any, str], None]] = {
    'datasets': _check_datasets, 'network': _check_network, 'loss': _check_loss, 'metrics': _check_metrics,
    'optimizer': _check_optimizer, 'scheduler': _check_scheduler,
}


def _check_typed(value: Any, path: str, registry: Any, what: str, extra: Optional[Dict[str, Spec]] = None,
                 skip: Tuple[str, ...] = ()) -> None:
    """A section ``{type: NAME, ...}``: NAME must be in ``registry`` and the other keys its parameters."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ESCError(f'{path}: must be a mapping with a type, got {value!r}')
    name = value.get('type')
    if name is None:
        raise ESCError(f'{path}.type: missing (required)')
    target = _registered(registry, name)
    if target is None:
        raise ESCError(f'{path}.type: {name!r} is not a known {what}{_suggest(name, registry)}')
    spec = {'type': STR, **(extra or {}), **parameter_types(target, skip)}
    _check_section(value, spec, f'{path}.')


def parameter_types(target: Callable[..., Any], skip: Tuple[str, ...] = ()) -> Dict[str, Types]:
    """The keyword options ``target`` (a class or function) takes, each with the types it accepts:
    from its annotation where that is a plain type, else from its default; ``**kwargs`` admit nothing."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: fall back to defaults
        hints = {}
    types: Dict[str, Types] = {}
    for name, param in inspect.signature(function).parameters.items():
        if name in ('self', *skip) or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        types[name] = _types_of(hints.get(name), param.default)
    return types


def _types_of(annotation: Any, default: Any) -> Types:
    accepted: Tuple[Any, ...] = ()
    if annotation is not None:
        is_union = typing.get_origin(annotation) in UNION_ORIGINS
        args = typing.get_args(annotation) if is_union else (annotation,)
        accepted = tuple(typing.get_origin(a) or a for a in args)
        if not all(isinstance(a, type) for a in accepted):
            return ANY
    elif default is not inspect.Parameter.empty and default is not None:
        accepted = (type(default),)
    else:
        return ANY
    if default is None:
        accepted += (NoneType,)
    if float in accepted:
        accepted += (int,)
    if tuple in accepted or list in accepted:
        accepted += (list, tuple)
    return tuple(dict.fromkeys(accepted))


# --- options that must agree with each other ------------------------------------------------------------------
def _check_consistency(opt: Mapping[str, Any], is_train: bool) -> None:
    scale = opt.get('scale')
    network = opt.get('network_g') or {}
    factor_key = 'upscaling_factor' if 'upscaling_factor' in network else 'upscale'  # ESC's name, the baselines'
    factor = network.get(factor_key)
    if scale is not None and factor is not None and factor != scale:
        raise ESCError(f'network_g.{factor_key}: {factor} differs from scale: {scale}')
    for phase, dataset in opt['datasets'].items():
        gt_size = dataset.get('gt_size')
        if isinstance(scale, int) and isinstance(gt_size, int) and gt_size % scale:
            raise ESCError(f'datasets.{phase}.gt_size: {gt_size} is not divisible by scale {scale}')
        if is_train and not (phase == 'train' or phase.split('_')[0] == 'val'):
            raise ESCError(f'datasets.{phase}: training takes phases train and val* only')
        if is_train and phase == 'train':
            if 'num_worker_per_gpu' not in dataset:
                raise ESCError('datasets.train.num_worker_per_gpu: missing (required for training)')
            if 'world_size' in opt:  # the process group is up: the number of processes is known
                plan_batch(dataset, opt['world_size'])
            else:
                check_batch_options(dataset)
    if is_train and 'train' not in opt['datasets']:
        raise ESCError('datasets.train: missing (required for training)')
    keep_last = (opt.get('logger') or {}).get('keep_last')
    if keep_last is not None and keep_last < 1:
        raise ESCError(f'logger.keep_last: must be at least 1 (or ~ to keep every state), got {keep_last}')
    weights_format = (opt.get('logger') or {}).get('weights_format', WEIGHTS_FORMATS[0])
    if weights_format not in WEIGHTS_FORMATS:
        raise ESCError(f"logger.weights_format: must be one of {', '.join(WEIGHTS_FORMATS)}, got {weights_format!r}")
    for phase, dataset in opt['datasets'].items():
        if dataset.get('bad_samples', 'error') not in BAD_SAMPLE_MODES:
            raise ESCError(f"datasets.{phase}.bad_samples: must be one of {', '.join(BAD_SAMPLE_MODES)}, "
                           f"got {dataset['bad_samples']!r}")
    window, multiple = network.get('window_size'), (opt.get('val') or {}).get('pad_to_multiple')
    if isinstance(window, int) and isinstance(multiple, int) and multiple % window:
        raise ESCError(f'val.pad_to_multiple: {multiple} is not a multiple of network_g.window_size {window}; '
                       'the test padding must give whole attention windows')
