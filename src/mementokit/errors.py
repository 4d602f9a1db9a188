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


def _rebuild(cls, state):
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error.describe())
    return error
