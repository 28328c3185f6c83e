"""The public surface is exactly what the docs promise."""

import mlpipe


def test_public_api_is_documented_surface():
    assert sorted(mlpipe.__all__) == sorted(
        [
            "ALGORITHMS",
            "LOGICS",
            "algorithm",
            "logic",
            "Chain",
            "Dataset",
            "LineageEntry",
            "LineagePipeline",
            "__version__",
            "descendants",
            "find_chain",
            "fingerprint",
            "lineage",
            "lineage_graph",
            "load",
            "runs",
        ]
    )
    for name in mlpipe.__all__:
        assert getattr(mlpipe, name) is not None


def test_exceptions_also_subclass_builtins():
    from mlpipe import exceptions

    assert issubclass(exceptions.StageError, ValueError)
    assert issubclass(exceptions.SerializationError, TypeError)
    assert all(
        issubclass(getattr(exceptions, n), exceptions.MlpipeError) for n in exceptions.__all__
    )
