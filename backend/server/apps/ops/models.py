"""No models. The module exists because Django sends ``post_migrate`` only to apps that
have one, and ``apps.py`` creates the cache table on that signal."""
