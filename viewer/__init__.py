"""The web viewer: static files (HTML, ES modules, CSS) served by the gateway at ``/viewer``."""
