"""The native stack reader of the sampler mode (otel_pyinstrument_processor/_native_sampler.c).

Everything else is in pyproject.toml. The extension reads CPython 3.11's frame layout, so it
is built only for CPython 3.11 on Linux, and optional: where it does not build, the sampler
mode uses its Python sampling thread (stack_sampler.py), as it does where it cannot load.
"""

import platform
import sys

from setuptools import Extension, setup

extensions = []
if (
    sys.implementation.name == "cpython"
    and sys.version_info[:2] == (3, 11)
    and platform.system() == "Linux"
):
    extensions.append(
        Extension(
            "otel_pyinstrument_processor._native_sampler",
            ["otel_pyinstrument_processor/_native_sampler.c"],
            extra_compile_args=["-O2", "-g", "-std=gnu11", "-Wall"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
