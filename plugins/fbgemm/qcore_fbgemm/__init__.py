"""qcore-fbgemm: qcore's backend for x86 server CPUs.

Importing this package is cheap; qcore loads ``qcore_fbgemm.plugin`` through
the ``qcore.plugins`` entry point when the registry is first used.
"""

__version__ = "0.1.0"
