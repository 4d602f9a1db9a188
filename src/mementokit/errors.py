"""Errors that name what is wrong and where, so the command line can print one clear line."""

from __future__ import annotations


class MementoError(Exception):
    """Base class for every error mementokit raises on purpose."""


class InputError(MementoError):
    """Bad input: names the file, the line (or row) and the field at fault, when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.reason = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(self.describe())

    def __reduce__(self):
        # Picklable (errors raised in worker processes travel back to the parent), subclasses included.
        state = dict(self.__dict__)
        return (_rebuild, (type(self), state))

    def describe(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class ConfigError(MementoError):
    """A configuration (block masking, markers, tokenizer) that cannot be used."""


class TraceFormatError(MementoError):
    """A response that breaks the Memento format in strict mode."""


class LLMError(MementoError):
    """An LLM call that failed for good (after its retries), or an answer that could not be used."""


class LLMAbort(LLMError):
    """The endpoint refuses every call in the same way (bad key, wrong URL, nothing listening): stop the run."""


class StageFailure(MementoError):
    """A pipeline stage could not produce its output for one trace.

    `permanent`: the trace can never succeed as it is (no text inside <think>, marker strings in it, answers that
    stayed unusable after every re-ask); the runner records it and skips it on reruns unless told to retry.
    """

    def __init__(self, stage: str, message: str, *, permanent: bool = False):
        self.stage = stage
        self.permanent = permanent
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_stage_failure, (type(self), self.stage, str(self), self.permanent))


def _rebuild_stage_failure(cls, stage, message, permanent):
    return cls(stage, message, permanent=permanent)


def _rebuild(cls, state):
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error.describe())
    return error
