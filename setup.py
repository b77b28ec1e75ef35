"""Build the native parts: the token table and deadline heap, the seen log's sections,
and the ingest fast path."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("core._deadline", ["core/_deadline.pyx"], extra_compile_args=["-O2"]),
    Extension("core._seenpack", ["core/_seenpack.pyx"], extra_compile_args=["-O2"]),
    Extension("ingest._fastpath", ["ingest/_fastpath.pyx"], extra_compile_args=["-O2"]),
    Extension("ingest._checkinlog", ["ingest/_checkinlog.pyx"], extra_compile_args=["-O2"]),
    Extension("ingest._copyload", ["ingest/_copyload.pyx"], extra_compile_args=["-O2"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"embedsignature": True},
    ),
)
