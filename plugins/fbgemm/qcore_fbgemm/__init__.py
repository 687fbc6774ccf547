"""qcore-fbgemm: qcore's backend for x86 server CPUs.

Importing this package is cheap; qcore loads ``qcore_fbgemm.plugin`` through
the ``qcore.plugins`` entry point when the registry is first used.
"""

__version__ = "0.1.0"

# The recommended dynamic configuration (see benchmarks/RESULTS.md), one call away,
# imported on first access so that importing the package stays cheap.
_RECOMMENDED = ("quantize_dynamic_recommended", "recommended_dynamic_qconfig_spec",
                "recommended_dynamic_qconfig", "recommended_recurrent_qconfig", "recommended_embedding_qconfig")


def __getattr__(name: str):
    if name in _RECOMMENDED:
        from qcore_fbgemm.dynamic import recommended

        return getattr(recommended, name)
    raise AttributeError(f"module 'qcore_fbgemm' has no attribute {name!r}")
