"""Exceptions raised by mlpipe.

Each class also subclasses the matching builtin, so callers can catch either.
"""

__all__ = [
    "MlpipeError",
    "NotFoundError",
    "PromotionError",
    "RegistrationError",
    "SerializationError",
    "SourceError",
    "StageError",
    "TargetTypeError",
    "TrackingError",
]


class MlpipeError(Exception):
    """Base class of every exception mlpipe raises on its own behalf."""


class SerializationError(MlpipeError, TypeError):
    """A fitted stage could not be serialized, or a stored one not loaded.

    Neither cloudpickle nor dill could serialize it; or, with ``serializer="skops"``,
    skops cannot save it or it holds a type that skops and mlpipe's allow-list do
    not trust.
    """


class StageError(MlpipeError, ValueError):
    """A pipeline or one of its stages is set up in a way mlpipe cannot log."""


class TargetTypeError(MlpipeError, ValueError):
    """An algorithm cannot fit the target: a classifier on a continuous target, a
    regressor on class labels, a binary-only option on more classes, or a target with
    missing values. Raised before anything is fitted or logged."""


class SourceError(MlpipeError, ValueError):
    """Data could not be read from its source (a database, a file)."""


class RegistrationError(MlpipeError, ValueError):
    """A logic or algorithm would take a name that is already registered.

    The message says where the registered one comes from (a built-in, an entry point,
    or a module); pass ``replace=True`` to replace it, or pick another name.
    """


class NotFoundError(MlpipeError, LookupError):
    """No run matches what was asked for; the message lists what exists instead."""


class TrackingError(MlpipeError, RuntimeError):
    """The tracking store failed (or could not be reached) while a stage was logged."""


class PromotionError(MlpipeError, ValueError):
    """A model version was not promoted: it scores lower than the alias holder, its
    score was measured on another data version, or it was never scored. The message
    gives both scores and data versions; nothing was changed."""
