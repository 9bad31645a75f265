"""The commands other than the training and test loops (those stay at ``esc/train.py`` and ``esc/test.py``).

Each module has a ``main`` run by its console script (``esc-upscale``, ``esc-export``, ``esc-demo``, ...), by
``python -m esc.commands.<module>`` and by ``python esc/commands/<module>.py`` from a checkout.
"""
