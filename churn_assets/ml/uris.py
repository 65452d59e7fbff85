"""URIs as logs, screens and the UIs may show them."""

from urllib.parse import urlsplit, urlunsplit


def without_credentials(uri: str) -> str:
    """A URI fit for a log or a CI summary: user and password, if any, left out."""
    parsed = urlsplit(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return urlunsplit(parsed._replace(netloc=f"***@{host}"))
