"""edgeopt's version (one place; ``edgeopt.__version__`` and cache keys read it)."""

VERSION = "0.1.0"
