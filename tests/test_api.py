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
            "find_run",
            "fingerprint",
            "lineage",
            "lineage_graph",
            "load",
            "load_stage",
            "promote",
            "reproduce",
            "Reproduction",
            "runs",
            "score",
        ]
    )
    assert isinstance(mlpipe.__version__, str) and mlpipe.__version__[:1].isdigit()
    for name in set(mlpipe.__all__) - {"__version__"}:
        # mlpipe's own documented class or function, or an instance of its own documented class.
        obj = getattr(mlpipe, name)
        owner = obj if callable(obj) else type(obj)
        assert owner.__module__.startswith("mlpipe.") and owner.__doc__, name


def test_exceptions_also_subclass_builtins():
    from mlpipe import exceptions

    assert issubclass(exceptions.StageError, ValueError)
    assert issubclass(exceptions.SerializationError, TypeError)
    assert all(
        issubclass(getattr(exceptions, n), exceptions.MlpipeError) for n in exceptions.__all__
    )
