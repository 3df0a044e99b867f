"""Every limit the server enforces, in one place, with why each default is what it is.

Imports nothing, so that the CLI can show the defaults in ``serve --help`` without loading the server.
"""

# ---- requests (server.app)
DEFAULT_HOST = "127.0.0.1"  # this machine only: serving a network is a choice made with --host
DEFAULT_PORT = 8000
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024  # a 12-megapixel phone JPEG fits; a 20 MB upload does not
DEFAULT_MAX_BATCH_FILES = 64  # keeps one batch request from holding the model for long
DEFAULT_MAX_PENDING = 64  # requests with a body in progress: twice the 32 clients the load benchmark drives
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024  # request bodies held at once: a busy server stays small
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1")  # Host headers answered unless told otherwise
RETRY_AFTER_SECONDS = 1  # a full queue drains in well under a second

# ---- images (server.lanes)
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000  # a 12-megapixel phone photo fits; a 9459x9459 PNG bomb does not
LIGHT_PIXELS = 1024 * 1024  # decodes in milliseconds: fine to hold the inference thread for
HEAVY_SLOTS = 4  # requests with large images in the heavy lane, running or waiting
PROBE_BYTES = 64 * 1024  # where image headers are (JPEG's SOF after EXIF and ICC segments included)

# ---- connections (server.protocol, server.serve)
HEADER_TIMEOUT = 10.0  # a real client sends its request line and headers in one go, in milliseconds
MAX_HEADER_BYTES = 32 * 1024  # browsers send 1-2 KiB (cookies for localhost included, a few KiB more)
BODY_IDLE_TIMEOUT = 15.0  # a body that stops arriving this long has stalled
BODY_TIMEOUT = 60.0  # the whole body (at most 10 MiB by default): ~170 KiB/s, a slow phone link
KEEP_ALIVE_TIMEOUT = 5  # uvicorn's own default: an idle kept-alive connection is closed after it
MAX_CONNECTIONS = 512  # uvicorn's limit_concurrency: far above what the admission limits let in at once
