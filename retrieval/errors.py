"""One exception tree for the whole project.

The CLI maps these to one-line messages and exit codes, the API to HTTP status codes, in
one place each. Anything else escaping is a bug and is shown as such.
"""


class CascadeError(Exception):
    """Base of every error Cascade raises on purpose."""

    http_status = 400


class InvalidInput(CascadeError, ValueError):
    """Bad data or arguments from the user: malformed files, unknown names, bad values."""

    http_status = 422


class NotFound(CascadeError, LookupError):
    """A dataset, index, collection or document that does not exist."""

    http_status = 404


class IndexMismatch(CascadeError):
    """An index that cannot serve this request: another kind, version, dimension or model."""

    http_status = 409


class MissingDependency(CascadeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    http_status = 501


class Unauthorized(CascadeError):
    http_status = 401


class Forbidden(CascadeError):
    http_status = 403


class Conflict(CascadeError):
    http_status = 409


class PayloadTooLarge(CascadeError):
    http_status = 413


class Unavailable(CascadeError):
    """A backend (an LLM server, a Ray cluster) that did not answer after the retries."""

    http_status = 503


class Overloaded(Unavailable):
    """More work waiting than the server queues: the client should retry after ``retry_after``
    seconds (the API sends it as ``Retry-After``)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class TimedOut(CascadeError):
    """A request that ran past the server's time limit."""

    http_status = 504


def require(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingDependency` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(
            f"{module} is not installed: pip install 'cascade-search[{extra}]'"
        ) from e
