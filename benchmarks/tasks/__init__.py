"""One module per benchmark; each documents its ``playground/data/eval`` layout in its docstring."""
