"""The public ops, one module per family; ``fastconv/__init__.py`` re-exports them."""
