"""What every layer shares and nothing of the project's own: the error hierarchy.

Imports run one way, ``apps.endpoints -> apps.ml -> apps.core``; this package imports
neither of the others (``test_layers.py`` checks it)."""
