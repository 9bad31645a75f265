"""The one exception type that reaches users as a one-line message instead of a traceback."""


class ESCError(ValueError):
    """Bad input (an option, a file, a tensor): the message names the culprit in one line.

    ``esc/train.py`` and ``esc/test.py`` print it as ``error: <message>`` and exit with status 2.
    It subclasses ``ValueError`` so code that already guards against bad values keeps working.
    """
