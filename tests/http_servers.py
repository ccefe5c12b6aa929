"""The background HTTP server the tests' receivers run on; it lives in app/devtools."""

from app.devtools.http_server import BackgroundHTTPServer

__all__ = ["BackgroundHTTPServer"]
