"""The native extension's build: numpy's headers are found here, which pyproject.toml's
declarative table cannot do. Everything else about the package is in pyproject.toml."""

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        # Category names and ModelInfer requests without a Python object per element
        # (server/textcodes.py, server/oip_codec.py). Optional: where no C compiler is at
        # hand the install goes on, and the server decodes in Python.
        Extension(
            "server._textcodes",
            sources=["server/_textcodes.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
