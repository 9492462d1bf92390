"""Public API modules that compose the layers below for users' own models
(docs/architecture.md); the names users import are in tf_lth/__init__.py."""
