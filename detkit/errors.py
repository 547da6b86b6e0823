"""The one exception type for a bad input, so that the tools can tell it from a bug.

An :class:`InputError` says that something a user gave detkit is wrong (a data file, a config
value, an exported model) and its message names it and what was expected. ``tools/train.py``,
``tools/test.py`` and ``tools/demo.py`` print such a message and exit with status 1; any other
exception keeps its traceback, since it is detkit's fault, not the input's.
"""
from __future__ import annotations


class InputError(ValueError):
    """A user's input is wrong; the message names the file, line, key or value and what was
    expected. A ``ValueError``, so that ``except ValueError`` still catches it."""
