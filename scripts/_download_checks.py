"""What the option files expect to find on disk, where each piece is published, and checks of what was put there.

Nothing here downloads: :func:`check_all` looks at the files and folders a user placed under the repository root
(``datasets/``, ``experiments/pretrained_models/``) and reports, item by item, whether each is there and complete:
image counts of the benchmarks and training sets, the key counts of the training LMDBs, the network inside each
checkpoint against the option files that name it, and SHA-256 sums where the publisher gives one. Where no checksum
is published (the ESC release, DIV2K, Flickr2K, LSDIR, the benchmarks, pyiqa's weights) counts and contents are
what is checked. ``scripts/check_downloads.py`` is the command.
"""
from __future__ import annotations

import glob
import hashlib
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

ESC_RELEASE = 'https://github.com/dslisleedh/ESC/releases/tag/1.0.0'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
PRETRAINED = 'experiments/pretrained_models'
OK, MISSING, WRONG = 'ok', 'missing', 'WRONG'


@dataclass(frozen=True)
class Item:
    """One file or folder the project expects: where it goes, where it is published and how to check it."""

    group: str
    path: str
    source: str
    check: Callable[[str], Tuple[str, str]] = field(compare=False)
    """``check(absolute path)`` of an existing path: (OK or WRONG, what was found)."""


@dataclass(frozen=True)
class Finding:
    item: Item
    status: str
    detail: str

    def line(self) -> str:
        return f'{self.status:<8} {self.item.path}: {self.detail}'


def count_images(folder: str) -> int:
    return sum(1 for name in glob.glob(osp.join(folder, '*')) if name.lower().endswith(IMAGE_EXTENSIONS))


def image_folder(expected: Optional[int] = None, at_least: Optional[int] = None) -> Callable[[str], Tuple[str, str]]:
    """A folder of images: exactly ``expected`` of them, at least ``at_least``, or any number above zero."""
    def check(path: str) -> Tuple[str, str]:
        if not osp.isdir(path):
            return WRONG, 'not a folder'
        found = count_images(path)
        if expected is not None and found != expected:
            return WRONG, f'{found} images, expected {expected}'
        if found < (at_least or 1):
            return WRONG, f'{found} images, expected at least {at_least or 1}'
        return OK, f'{found} images'
    return check


def lmdb_keys(path: str) -> Optional[int]:
    """The number of entries basicsr's meta_info.txt of an LMDB folder lists; None where it is not such a folder."""
    meta = osp.join(path, 'meta_info.txt')
    if not (osp.isfile(osp.join(path, 'data.mdb')) and osp.isfile(meta)):
        return None
    with open(meta) as f:
        return sum(1 for line in f if line.strip())


def lmdb_folder(pair_with: Optional[str] = None) -> Callable[[str], Tuple[str, str]]:
    """A basicsr LMDB (data.mdb + meta_info.txt) with entries; as many as the sibling LMDB ``pair_with`` where that
    one exists (LR and HR sub-images pair one to one)."""
    def check(path: str) -> Tuple[str, str]:
        keys = lmdb_keys(path)
        if not keys:
            return WRONG, 'no data.mdb, or a meta_info.txt listing nothing (scripts/prepare_training_data.py lmdb)'
        if pair_with is not None:
            paired = lmdb_keys(osp.join(osp.dirname(path), pair_with))
            if paired is not None and paired != keys:
                return WRONG, f'{keys} entries, but {pair_with} has {paired}: they must pair one to one'
        return OK, f'{keys} entries'
    return check


def meta_info_listing(path: str) -> Tuple[str, str]:
    """A RealESRGAN meta-info file: every listed GT file exists (paths relative to the file's folder)."""
    with open(path) as f:
        listed = [line.split()[0] for line in f if line.strip()]
    if not listed:
        return WRONG, 'lists no image'
    folder = osp.dirname(path)
    absent = [name for name in listed if not osp.isfile(osp.join(folder, name))]
    if absent:
        return WRONG, f'{len(absent)} of {len(listed)} listed files are absent, e.g. {absent[0]}'
    return OK, f'{len(listed)} listed sub-images, all present'


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def published_sha256(expected: str) -> Callable[[str], Tuple[str, str]]:
    """A file whose SHA-256 (or, torch hub's convention, its leading hex digits) the publisher gives."""
    def check(path: str) -> Tuple[str, str]:
        actual = sha256_of(path)
        if not actual.startswith(expected):
            return WRONG, f'sha256 {actual}, the publisher gives {expected}'
        return OK, f'sha256 matches the published {expected if len(expected) < 64 else expected[:16] + "..."}'
    return check


def nonempty_file(path: str) -> Tuple[str, str]:
    size = osp.getsize(path)
    return (OK, f'{size / 2**20:.1f} MB (no checksum is published)') if size else (WRONG, 'empty file')


DETECTED_TYPES = ('ESC', 'ESCFP', 'ESCReal', 'ESCLTE')
"""The networks whose every option is read off a state dict (esc.upscaler.checkpoint_network); the others (the
paper's baselines) are checked key for key and shape for shape against the network their option file builds."""


def baseline_checkpoint(state: Mapping[str, Any], expected_network: Mapping[str, Any]) -> Tuple[str, str]:
    import torch

    from esc.archs import NETWORKS
    from esc.io.state_dict_checks import check_state_dict_fits

    options = {key: value for key, value in expected_network.items() if key not in ('type', 'param_key')}
    name = f"{expected_network['type']} x{expected_network.get('upscale', '?')}"
    with torch.device('meta'):  # shapes only: no memory
        own = NETWORKS[expected_network['type']](**options).state_dict()
    check_state_dict_fits(name, own, state)
    return OK, name


def esc_checkpoint(expected_network: Mapping[str, Any]) -> Callable[[str], Tuple[str, str]]:
    """A checkpoint holding the network an option file builds (the options it names, compared with what the
    weights say)."""
    def check(path: str) -> Tuple[str, str]:
        from esc.errors import ESCError
        from esc.upscaler import RUN_OPTIONS, _same_option, checkpoint_network, variant_name
        from esc.io.checkpoint import read_checkpoint

        try:
            state, metadata = read_checkpoint(path, expected_network.get('param_key', 'params_ema'), 'checkpoint')
            if expected_network.get('type') not in DETECTED_TYPES:  # the baselines: held against their options
                return baseline_checkpoint(state, expected_network)
            found = checkpoint_network(state, metadata)
        except ESCError as exc:
            return WRONG, str(exc)
        ignored = set(RUN_OPTIONS) - {'upscaling_factor'} | {'type', 'param_key'}
        differing = [key for key, value in expected_network.items()
                     if key not in ignored and key in found and not _same_option(found[key], value)]
        if found.get('type') != expected_network.get('type') or differing:
            what = ', '.join(f'{k} {found[k]!r} (options: {expected_network[k]!r})' for k in differing)
            return WRONG, f"holds a {variant_name(found)} x{found.get('upscaling_factor')}" + (f': {what}' if what
                                                                                               else '')
        return OK, f"{variant_name(found)} x{found.get('upscaling_factor')}"
    return check


BENCHMARKS = {'Set5': 5, 'Set14': 14, 'B100': 100, 'Urban100': 100, 'Manga109': 109}
BENCHMARK_SOURCES = {
    'Set5': 'Bevilacqua et al., BMVC 2012: http://people.rennes.inria.fr/Aline.Roumy/results/SR_BMVC12.html',
    'Set14': 'Zeyde et al., 2010: https://sites.google.com/site/romanzeyde/research-interests',
    'B100': 'the 100 test images of BSD300: https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/',
    'Urban100': 'Huang et al., CVPR 2015: https://github.com/jbhuang0604/SelfExSR',
    'Manga109': 'http://www.manga109.org/ (on request, for academic use)',
}
DIV2K = 'https://data.vision.ee.ethz.ch/cvl/DIV2K/'
FLICKR2K = 'https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar (from the EDSR authors, github.com/LimBee/NTIRE2017)'
LSDIR = 'https://github.com/ofsoundof/LSDIR (files: https://huggingface.co/ofsoundof/LSDIR)'
DIVERSEG = 'https://github.com/gohtanii/DiverSeg-dataset (built from ImageNet and PASS with its lists)'
DFLIP_LEAST = 800 + 2650 + 84991
"""DIV2K's, Flickr2K's and LSDIR's training images; DiverSeg-IP adds its own."""
VGG19 = ('vgg19-dcbb9e9d.pth', 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth', 'dcbb9e9d')


def option_checkpoints(root: str) -> Dict[str, Dict[str, Any]]:
    """Every checkpoint under experiments/pretrained_models/ that an option file names, with the network options
    (and ``param_key``) of the first option file naming it."""
    expected: Dict[str, Dict[str, Any]] = {}
    for option_file in sorted(glob.glob(osp.join(root, 'options', '**', '*.yml'), recursive=True)):
        with open(option_file) as f:
            opt = yaml.safe_load(f) or {}
        path = (opt.get('path') or {}).get('pretrain_network_g')
        if isinstance(path, str) and path.startswith(PRETRAINED + '/') and path not in expected:
            network = dict(opt.get('network_g') or {})
            network['param_key'] = (opt.get('path') or {}).get('param_key_g', 'params_ema')
            expected[path] = network
    return expected


def release_name(project_name: str) -> str:
    """The file name under which the official release publishes a checkpoint this project names otherwise: the
    official test options name ESC-light and ESC-FP without the dataset (``ESC_light_X2.pth``), and ESC-Real's
    GAN-stage weights ``ESC_Real_X4_GAN.pth``."""
    for variant in ('ESC_light', 'ESC_FP'):
        if project_name.startswith(f'{variant}_DIV2K_'):
            return project_name.replace('_DIV2K_', '_')
    return {'ESC_Real_X4.pth': 'ESC_Real_X4_GAN.pth'}.get(project_name, project_name)


def catalogue(root: str) -> List[Item]:
    """Everything the option files and READMEs name, in the order the READMEs list them."""
    from esc.metrics.no_reference import METRICS

    items: List[Item] = []
    for name, count in BENCHMARKS.items():
        items.append(Item('benchmarks', f'datasets/{name}/HR', BENCHMARK_SOURCES[name], image_folder(count)))
        for r in (2, 3, 4):
            items.append(Item('benchmarks', f'datasets/{name}/LR_bicubic/X{r}',
                              f'made from HR/ by scripts/prepare_benchmarks.py datasets/{name}', image_folder(count)))
    items += [
        Item('div2k', 'datasets/DIV2K/DIV2K_train_HR', f'{DIV2K} (DIV2K_train_HR.zip)', image_folder(800)),
        Item('div2k', 'datasets/DIV2K/DIV2K_valid_HR', f'{DIV2K} (DIV2K_valid_HR.zip)', image_folder(100)),
    ]
    for r in (2, 3, 4):
        items.append(Item('div2k', f'datasets/DIV2K/DIV2K_train_LR_bicubic/X{r}',
                          f'{DIV2K} (DIV2K_train_LR_bicubic_X{r}.zip)', image_folder(800)))
    items.append(Item('div2k', 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb',
                      'made by scripts/prepare_training_data.py extract + lmdb (datasets/README.md)', lmdb_folder()))
    for r in (2, 3, 4):
        items.append(Item('div2k', f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{r}_sub.lmdb',
                          'made by scripts/prepare_training_data.py extract + lmdb (datasets/README.md)',
                          lmdb_folder(pair_with='DIV2K_train_HR_sub.lmdb')))
    items += [
        Item('dflip', 'datasets/DFLIP/HR', f'DIV2K {DIV2K}, Flickr2K {FLICKR2K}, LSDIR {LSDIR}, DiverSeg-IP {DIVERSEG}',
             image_folder(at_least=DFLIP_LEAST)),
        Item('real', 'datasets/DF2K/DF2K_HR', f'DIV2K {DIV2K} (800 training HR images) and Flickr2K {FLICKR2K}',
             image_folder(800 + 2650)),
        Item('real', 'datasets/DF2KOST/meta_info.txt', 'made by scripts/prepare_training_data.py real from DIV2K + '
             'Flickr2K HR and OST (docs/training.md, "Real-world SR")', meta_info_listing),
        Item('real', 'datasets/RealSRSet', 'any folder of real LR photographs; RealSRSet: '
             'https://github.com/cszn/BSRGAN (testsets/RealSRSet)', image_folder()),
        Item('vgg', f'{PRETRAINED}/{VGG19[0]}', VGG19[1], published_sha256(VGG19[2])),
    ]
    for metric, spec in METRICS.items():
        check = published_sha256(spec.sha256) if spec.sha256 else nonempty_file
        items.append(Item('iqa', spec.default_path(), spec.published_at, check))
    for path, network in option_checkpoints(root).items():
        items.append(Item('checkpoints', path, f'{ESC_RELEASE} (asset {release_name(osp.basename(path))})',
                          esc_checkpoint(network)))
    return items


GROUPS = ('benchmarks', 'div2k', 'dflip', 'real', 'vgg', 'iqa', 'checkpoints')


def check_all(root: str, groups: Iterable[str] = GROUPS, only_present: bool = False) -> List[Finding]:
    """Check every item of ``groups`` under ``root``: OK, MISSING (with where to get it) or WRONG (with what)."""
    wanted = set(groups)
    findings = []
    for item in catalogue(root):
        if item.group not in wanted:
            continue
        path = osp.join(root, item.path)
        if not osp.exists(path):
            if not only_present:
                findings.append(Finding(item, MISSING, f'get it from {item.source}'))
            continue
        status, detail = item.check(path)
        findings.append(Finding(item, status, detail))
    return findings


def summary(findings: Sequence[Finding]) -> str:
    counts = {status: sum(f.status == status for f in findings) for status in (OK, MISSING, WRONG)}
    return f'{counts[OK]} ok, {counts[MISSING]} missing, {counts[WRONG]} wrong'
