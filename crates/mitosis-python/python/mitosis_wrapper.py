"""MITOSIS's ``mitosis_wrapper`` module, under its original name.

``from mitosis_wrapper import *`` in a MITOSIS function script gets
``FLAGS``, ``@tick_execution_time`` and ``@mitosis_bench`` from
:mod:`mitosis.wrapper`, where they are documented (flags and output).
"""

from mitosis.wrapper import *  # noqa: F401,F403
from mitosis.wrapper import __doc__ as _wrapper_doc

__doc__ = (__doc__ or "") + "\n" + (_wrapper_doc or "")
