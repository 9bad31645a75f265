"""What the tests share, one module per subject; the shared fixtures are in tests/conftest.py. No test module imports
another (tests/test_suite_layout.py checks): what two test modules need goes here or into a fixture.

- :mod:`tests.helpers.paths`: the checkout (``REPO``), the official reference data beside it (``shared_path``, which
  skips where it is absent), and ``load_script`` for scripts/.
- :mod:`tests.helpers.runs`: esc/train.py and esc/test.py run as a user starts them (``run``, in this process where it
  can), tiny option files (``TINY_NET``, ``train_options``, ``write``), bicubic's PSNR on the demo's photograph
  (``BICUBIC_COFFEE_X2``) and ``assert_resumes_exactly``.
- :mod:`tests.helpers.models`: tiny ESCModels built in this process (``model_options``, ``training_model``).
- :mod:`tests.helpers.networks`: small networks with random weights (``SMALL``, ``small``, ``randomise``, ...) and
  ``onnx_modules`` (a skip where the optional ONNX packages are missing).
- :mod:`tests.helpers.files`: image pairs in the benchmark layout, images read back, a disk that fills up.
- :mod:`tests.helpers.videos`: little videos with sound, written with PyAV.
- :mod:`tests.helpers.iqa`: pyiqa's no-reference metric networks shrunk, and random weight files for them.
- :mod:`tests.helpers.baselines`: the checks the SRFormer-light, ATD-light and HiT-SRF tests share.
"""
