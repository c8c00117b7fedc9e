"""Reference dense layer: forward, backward-input, backward-weight, backward-bias on 2-d arrays.

The public op has already flattened x's leading dims, so x is (M, in_features), w is
(out_features, in_features) and y, dy are (M, out_features). Each pass is one matrix product in
the input dtype.
"""


def linear_forward(x, w, b):
    y = x @ w.T  # (M, out_features)
    if b is not None:
        y += b
    return y


def linear_backward_input(dy, w):
    return dy @ w  # (M, in_features)


def linear_backward_weight(dy, x):
    return dy.T @ x  # (out_features, in_features)


def linear_backward_bias(dy):
    return dy.sum(axis=0)  # (out_features,)
