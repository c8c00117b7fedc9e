"""The NumPy reference backend: written to be read, and the oracle every other backend is checked
against. Its formulations deliberately differ from the fast backends' (e.g. convolution accumulates
one kernel tap at a time over strided slices of the padded input, not through an im2col matrix), so
that a shared mistake is unlikely.
"""
