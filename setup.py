"""Install ESC as an (editable) package: ``pip install -e .``."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list:
    lines = (HERE / 'requirements.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


# esc/commands/export.py: torch.onnx's exporter needs onnx and onnxscript, its check onnxruntime
# (tested: 1.23, 0.7, 1.32)
EXPORT = ['onnx', 'onnxscript', 'onnxruntime']
# esc.metrics: MANIQA, MUSIQ and CLIPIQA through pyiqa (tested: 0.1.16; it leaves torch, torchvision and basicsr
# as they are, but brings about 50 packages, 1 GB: transformers, bitsandbytes, pyarrow, numba, ...)
IQA = ['pyiqa>=0.1.16,<0.2']
# esc/commands/demo.py (esc-demo): the page; gr.ImageSlider and launch(theme=..., footer_links=...) are Gradio 6
# (tested: 6.31)
DEMO = ['gradio>=6,<7']
# scripts/make_tables.py --figure draws with matplotlib (tested: 3.11)
PLOTS = ['matplotlib']
# tests/test_web_demo.py drives the page in the OS's Chromium (apt-get install chromium) through Playwright
BROWSER_TEST = ['playwright']
# esc/spandrel.py: ESC in spandrel's registry, for chaiNNer and ComfyUI (tested: 0.4.2)
SPANDREL = ['spandrel>=0.4.2,<0.5']

# every command, also as `python -m esc.<module>` and (from a checkout) `python esc/<module path>.py`
COMMANDS = {'esc-train': 'train', 'esc-test': 'test', 'esc-upscale': 'commands.upscale',
            'esc-export': 'commands.export', 'esc-evaluate-run': 'commands.evaluate_run',
            'esc-convert-flashbias': 'commands.convert_flashbias',
            'esc-convert-safetensors': 'commands.convert_safetensors', 'esc-demo': 'commands.demo',
            'esc-realworld-table': 'commands.realworld_table'}

setup(
    name='esc-sr',
    version='0.1.0',
    description='ESC: Emulating Self-attention with Convolution for efficient image super-resolution (ICCV 2025)',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['esc', 'esc.*']),
    python_requires='>=3.9',
    install_requires=requirements(),
    extras_require={'export': EXPORT, 'iqa': IQA, 'demo': DEMO, 'plots': PLOTS, 'browser-test': BROWSER_TEST,
                    'spandrel': SPANDREL,
                    'test': ['pytest', 'pytest-xdist', *EXPORT, *IQA, *DEMO, *PLOTS, *BROWSER_TEST, *SPANDREL]},
    entry_points={'console_scripts': [f'{command} = esc.{module}:main' for command, module in COMMANDS.items()]},
    license='MIT',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
