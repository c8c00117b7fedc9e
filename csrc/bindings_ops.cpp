// Binds the kernels of activation.cpp, loss.cpp, norm.cpp, dropout.cpp and layout.cpp into fastconv._cpp
// (bind_ops is called from bindings.cpp's PYBIND11_MODULE). Binding work only, as in bindings.cpp:
// array checks (bind_util.h), sizes read from the arrays, names turned into enums, the GIL released
// around the compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "activation.h"
#include "bind_util.h"
#include "dropout.h"
#include "layout.h"
#include "loss.h"
#include "norm.h"

namespace py = pybind11;
using fastconv::index_t;
using fastconv::bind::by_dtype;
using fastconv::bind::in;
using fastconv::bind::in_opt;
using fastconv::bind::out;
using fastconv::bind::threads;

namespace {

// ---------------------------------------------------------------------------------------------
// activations (1-d runs of K elements) and softmax along one axis
// ---------------------------------------------------------------------------------------------

void activation_forward(fastconv::Activation act, const py::array& x, py::array& y, double a, double b,
                        int nthreads) {
  const char* op = "activation_forward";
  const index_t n = x.size();
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, n);
    T* yp = out<T>(op, "y", y, n);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::activation_forward(act, n, xp, yp, fastconv::ActParams{a, b}, nt);
  });
}

void activation_backward(fastconv::Activation act, const py::array& dy, const py::array& x, py::array& dx, double a,
                         double b, int nthreads) {
  const char* op = "activation_backward";
  const index_t n = x.size();
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, n);
    const T* xp = in<T>(op, "x", x, n);
    T* dxp = out<T>(op, "dx", dx, n);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::activation_backward(act, n, dyp, xp, dxp, fastconv::ActParams{a, b}, nt);
  });
}

// a's shape as (outer, D, inner) around `axis`
struct Axis {
  index_t outer = 1, D = 1, inner = 1;
};

Axis split_axis(const char* op, const py::array& a, int axis) {
  if (axis < 0 || axis >= a.ndim())
    throw py::value_error(std::string(op) + ": axis " + std::to_string(axis) + " out of range for " +
                          std::to_string(a.ndim()) + " dims");
  Axis s;
  for (int i = 0; i < a.ndim(); ++i) (i < axis ? s.outer : i == axis ? s.D : s.inner) *= a.shape(i);
  return s;
}

void softmax_forward(bool log, const py::array& x, py::array& y, int axis, int nthreads) {
  const char* op = log ? "log_softmax_forward" : "softmax_forward";
  const Axis s = split_axis(op, x, axis);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, x.size());
    T* yp = out<T>(op, "y", y, x.size());
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::softmax_forward(log, s.outer, s.D, s.inner, xp, yp, nt);
  });
}

void softmax_backward(bool log, const py::array& dy, const py::array& y, py::array& dx, int axis, int nthreads) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  const Axis s = split_axis(op, y, axis);
  by_dtype(op, y, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, y.size());
    const T* yp = in<T>(op, "y", y, y.size());
    T* dxp = out<T>(op, "dx", dx, y.size());
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::softmax_backward(log, s.outer, s.D, s.inner, dyp, yp, dxp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// losses: logits (M, C); loss and dloss (M,) for reduction 'none', else 0-d
// ---------------------------------------------------------------------------------------------

fastconv::Reduction reduction_of(const char* op, const std::string& r) {
  if (r == "none") return fastconv::Reduction::none;
  if (r == "sum") return fastconv::Reduction::sum;
  if (r == "mean") return fastconv::Reduction::mean;
  throw py::value_error(std::string(op) + ": unknown reduction '" + r + "'");
}

struct Rows {
  index_t M, C;
};

Rows rows_of(const char* op, const py::array& logits) {
  if (logits.ndim() != 2) throw py::value_error(std::string(op) + ": logits must be 2-d (M, C)");
  return Rows{logits.shape(0), logits.shape(1)};
}

index_t loss_size(fastconv::Reduction r, index_t n) { return r == fastconv::Reduction::none ? n : 1; }

void cross_entropy_index_forward(const py::array& logits, const py::array& target, const py::object& weight,
                                 const std::string& reduction, std::int64_t ignore_index, double label_smoothing,
                                 py::array& loss, int nthreads) {
  const char* op = "cross_entropy_index_forward";
  const Rows s = rows_of(op, logits);
  const auto r = reduction_of(op, reduction);
  by_dtype(op, logits, [&](auto tag) {
    using T = decltype(tag);
    const T* lp = in<T>(op, "logits", logits, s.M * s.C);
    const std::int64_t* tp = in<std::int64_t>(op, "target", target, s.M);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    T* out_p = out<T>(op, "loss", loss, loss_size(r, s.M));
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::cross_entropy_index_forward(s.M, s.C, lp, tp, wp, r, ignore_index, label_smoothing, out_p, nt);
  });
}

void cross_entropy_index_backward(const py::array& dloss, const py::array& logits, const py::array& target,
                                  const py::object& weight, const std::string& reduction, std::int64_t ignore_index,
                                  double label_smoothing, py::array& dlogits, int nthreads) {
  const char* op = "cross_entropy_index_backward";
  const Rows s = rows_of(op, logits);
  const auto r = reduction_of(op, reduction);
  by_dtype(op, logits, [&](auto tag) {
    using T = decltype(tag);
    const T* dp = in<T>(op, "dloss", dloss, loss_size(r, s.M));
    const T* lp = in<T>(op, "logits", logits, s.M * s.C);
    const std::int64_t* tp = in<std::int64_t>(op, "target", target, s.M);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    T* gp = out<T>(op, "dlogits", dlogits, s.M * s.C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::cross_entropy_index_backward(s.M, s.C, dp, lp, tp, wp, r, ignore_index, label_smoothing, gp, nt);
  });
}

void cross_entropy_probs_forward(const py::array& logits, const py::array& target, const py::object& weight,
                                 const std::string& reduction, double label_smoothing, py::array& loss, int nthreads) {
  const char* op = "cross_entropy_probs_forward";
  const Rows s = rows_of(op, logits);
  const auto r = reduction_of(op, reduction);
  by_dtype(op, logits, [&](auto tag) {
    using T = decltype(tag);
    const T* lp = in<T>(op, "logits", logits, s.M * s.C);
    const T* tp = in<T>(op, "target", target, s.M * s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    T* out_p = out<T>(op, "loss", loss, loss_size(r, s.M));
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::cross_entropy_probs_forward(s.M, s.C, lp, tp, wp, r, label_smoothing, out_p, nt);
  });
}

void cross_entropy_probs_backward(const py::array& dloss, const py::array& logits, const py::array& target,
                                  const py::object& weight, const std::string& reduction, double label_smoothing,
                                  py::array& dlogits, int nthreads) {
  const char* op = "cross_entropy_probs_backward";
  const Rows s = rows_of(op, logits);
  const auto r = reduction_of(op, reduction);
  by_dtype(op, logits, [&](auto tag) {
    using T = decltype(tag);
    const T* dp = in<T>(op, "dloss", dloss, loss_size(r, s.M));
    const T* lp = in<T>(op, "logits", logits, s.M * s.C);
    const T* tp = in<T>(op, "target", target, s.M * s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    T* gp = out<T>(op, "dlogits", dlogits, s.M * s.C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::cross_entropy_probs_backward(s.M, s.C, dp, lp, tp, wp, r, label_smoothing, gp, nt);
  });
}

void mse_loss_forward(const py::array& x, const py::array& target, const std::string& reduction, py::array& loss,
                      int nthreads) {
  const char* op = "mse_loss_forward";
  const index_t K = x.size();
  const auto r = reduction_of(op, reduction);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, K);
    const T* tp = in<T>(op, "target", target, K);
    T* out_p = out<T>(op, "loss", loss, loss_size(r, K));
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::mse_loss_forward(K, xp, tp, r, out_p, nt);
  });
}

void mse_loss_backward(const py::array& dloss, const py::array& x, const py::array& target,
                       const std::string& reduction, py::array& dx, int nthreads) {
  const char* op = "mse_loss_backward";
  const index_t K = x.size();
  const auto r = reduction_of(op, reduction);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dp = in<T>(op, "dloss", dloss, loss_size(r, K));
    const T* xp = in<T>(op, "x", x, K);
    const T* tp = in<T>(op, "target", target, K);
    T* dxp = out<T>(op, "dx", dx, K);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::mse_loss_backward(K, dp, xp, tp, r, dxp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// batch norm: x, y, dy, dx (N, C, L); everything else (C,)
// ---------------------------------------------------------------------------------------------

fastconv::NormShape norm_shape(const char* op, const py::array& x) {
  if (x.ndim() != 3) throw py::value_error(std::string(op) + ": x must be 3-d (N, C, L)");
  return fastconv::NormShape{x.shape(0), x.shape(1), x.shape(2)};
}

void batch_norm_stats(const py::array& x, py::array& mean, py::array& var, int nthreads) {
  const char* op = "batch_norm_stats";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    T* mp = out<T>(op, "mean", mean, s.C);
    T* vp = out<T>(op, "var", var, s.C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_stats(s, xp, mp, vp, nt);
  });
}

void batch_norm_forward(const py::array& x, const py::array& mean, const py::array& invstd, const py::object& weight,
                        const py::object& bias, py::array& y, int nthreads) {
  const char* op = "batch_norm_forward";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    const T* bp = in_opt<T>(op, "bias", bias, s.C);
    T* yp = out<T>(op, "y", y, s.N * s.C * s.L);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_forward(s, xp, mp, ip, wp, bp, yp, nt);
  });
}

void batch_norm_backward_reduce(const py::array& dy, const py::array& x, const py::array& mean,
                                const py::array& invstd, py::array& sum_dy, py::array& sum_dy_xhat, int nthreads) {
  const char* op = "batch_norm_backward_reduce";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C * s.L);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    T* sp = out<T>(op, "sum_dy", sum_dy, s.C);
    T* sxp = out<T>(op, "sum_dy_xhat", sum_dy_xhat, s.C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_backward_reduce(s, dyp, xp, mp, ip, sp, sxp, nt);
  });
}

void batch_norm_backward_input(const py::array& dy, const py::array& x, const py::array& mean,
                               const py::array& invstd, const py::object& weight, const py::array& sum_dy,
                               const py::array& sum_dy_xhat, py::array& dx, int nthreads) {
  const char* op = "batch_norm_backward_input";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C * s.L);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    const T* sp = in<T>(op, "sum_dy", sum_dy, s.C);
    const T* sxp = in<T>(op, "sum_dy_xhat", sum_dy_xhat, s.C);
    T* dxp = out<T>(op, "dx", dx, s.N * s.C * s.L);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_backward_input(s, dyp, xp, mp, ip, wp, sp, sxp, dxp, nt);
  });
}

// batch norm + hardtanh(lo, hi), fused (norm.h); lo < hi is the public op's check
void batch_norm_forward_hardtanh(const py::array& x, const py::array& mean, const py::array& invstd,
                                 const py::object& weight, const py::object& bias, double lo, double hi, py::array& y,
                                 int nthreads) {
  const char* op = "batch_norm_forward_hardtanh";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    const T* bp = in_opt<T>(op, "bias", bias, s.C);
    T* yp = out<T>(op, "y", y, s.N * s.C * s.L);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_forward_hardtanh(s, xp, mp, ip, wp, bp, T(lo), T(hi), yp, nt);
  });
}

void batch_norm_backward_reduce_hardtanh(const py::array& dy, const py::array& x, const py::array& mean,
                                         const py::array& invstd, const py::object& weight, const py::object& bias,
                                         double lo, double hi, py::array& sum_dy, py::array& sum_dy_xhat,
                                         int nthreads) {
  const char* op = "batch_norm_backward_reduce_hardtanh";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C * s.L);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    const T* bp = in_opt<T>(op, "bias", bias, s.C);
    T* sp = out<T>(op, "sum_dy", sum_dy, s.C);
    T* sxp = out<T>(op, "sum_dy_xhat", sum_dy_xhat, s.C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_backward_reduce_hardtanh(s, dyp, xp, mp, ip, wp, bp, T(lo), T(hi), sp, sxp, nt);
  });
}

void batch_norm_backward_input_hardtanh(const py::array& dy, const py::array& x, const py::array& mean,
                                        const py::array& invstd, const py::object& weight, const py::object& bias,
                                        double lo, double hi, const py::object& sum_dy, const py::object& sum_dy_xhat,
                                        bool training, py::array& dx, int nthreads) {
  const char* op = "batch_norm_backward_input_hardtanh";
  const auto s = norm_shape(op, x);
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C * s.L);
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.L);
    const T* mp = in<T>(op, "mean", mean, s.C);
    const T* ip = in<T>(op, "invstd", invstd, s.C);
    const T* wp = in_opt<T>(op, "weight", weight, s.C);
    const T* bp = in_opt<T>(op, "bias", bias, s.C);
    const T* sp = in_opt<T>(op, "sum_dy", sum_dy, s.C);
    const T* sxp = in_opt<T>(op, "sum_dy_xhat", sum_dy_xhat, s.C);
    if (training && (!sp || !sxp)) throw py::value_error(std::string(op) + ": training needs sum_dy and sum_dy_xhat");
    T* dxp = out<T>(op, "dx", dx, s.N * s.C * s.L);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::batch_norm_backward_input_hardtanh(s, dyp, xp, mp, ip, wp, bp, T(lo), T(hi), sp, sxp, training, dxp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// dropout: mask is a NumPy bool array (one byte per element, 0 or 1)
// ---------------------------------------------------------------------------------------------

void dropout_forward(const py::array& x, double p, std::uint64_t seed, py::array& y, py::array& mask, int nthreads) {
  const char* op = "dropout_forward";
  const index_t n = x.size();
  by_dtype(op, x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in<T>(op, "x", x, n);
    T* yp = out<T>(op, "y", y, n);
    auto* mp = reinterpret_cast<std::uint8_t*>(out<bool>(op, "mask", mask, n));
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::dropout_forward(n, xp, p, seed, yp, mp, nt);
  });
}

void dropout_backward(const py::array& dy, const py::array& mask, double p, py::array& dx, int nthreads) {
  const char* op = "dropout_backward";
  const index_t n = dy.size();
  by_dtype(op, dy, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = in<T>(op, "dy", dy, n);
    const auto* mp = reinterpret_cast<const std::uint8_t*>(in<bool>(op, "mask", mask, n));
    T* dxp = out<T>(op, "dx", dx, n);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::dropout_backward(n, dyp, mp, p, dxp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// memory format: a batch of transposes (NCHW <-> NHWC)
// ---------------------------------------------------------------------------------------------

void transpose_batched(const py::array& src, py::array& dst, int nthreads) {
  const char* op = "transpose_batched";
  if (src.ndim() != 3 || dst.ndim() != 3)
    throw py::value_error(std::string(op) + ": src and dst must be 3-d (N, R, C) and (N, C, R), got " +
                          std::to_string(src.ndim()) + "-d and " + std::to_string(dst.ndim()) + "-d");
  const index_t N = src.shape(0), R = src.shape(1), C = src.shape(2);
  if (dst.shape(0) != N || dst.shape(1) != C || dst.shape(2) != R)
    throw py::value_error(std::string(op) + ": dst must have shape (" + std::to_string(N) + ", " + std::to_string(C) +
                          ", " + std::to_string(R) + "), the transposes of src's (N, R, C) = (" + std::to_string(N) +
                          ", " + std::to_string(R) + ", " + std::to_string(C) + ")");
  if (src.data() == dst.data() && src.size() > 1) throw py::value_error(std::string(op) + ": dst must not be src");
  by_dtype(op, src, [&](auto tag) {
    using T = decltype(tag);
    const T* sp = in<T>(op, "src", src, N * R * C);
    T* dp = out<T>(op, "dst", dst, N * R * C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::transpose_batched(N, R, C, sp, dp, nt);
  });
}

}  // namespace

void bind_ops(py::module_& m) {
  using fastconv::Activation;
  py::enum_<Activation>(m, "Activation", "which elementwise activation activation_forward/backward compute")
      .value("relu", Activation::relu)
      .value("leaky_relu", Activation::leaky_relu)
      .value("elu", Activation::elu)
      .value("gelu", Activation::gelu)
      .value("gelu_tanh", Activation::gelu_tanh)
      .value("sigmoid", Activation::sigmoid)
      .value("tanh", Activation::tanh)
      .value("softplus", Activation::softplus)
      .value("silu", Activation::silu);
  m.def("activation_forward", &activation_forward, py::arg("act"), py::arg("x"), py::arg("y"), py::arg("a"),
        py::arg("b"), py::arg("nthreads"),
        "y = act(x) elementwise; a, b: negative_slope | (alpha, scale) | (beta, threshold), else unused");
  m.def("activation_backward", &activation_backward, py::arg("act"), py::arg("dy"), py::arg("x"), py::arg("dx"),
        py::arg("a"), py::arg("b"), py::arg("nthreads"));
  m.def("softmax_forward", &softmax_forward, py::arg("log"), py::arg("x"), py::arg("y"), py::arg("axis"),
        py::arg("nthreads"), "softmax (log=False) or log_softmax (log=True) of x along axis into y");
  m.def("softmax_backward", &softmax_backward, py::arg("log"), py::arg("dy"), py::arg("y"), py::arg("dx"),
        py::arg("axis"), py::arg("nthreads"), "dx from the forward's output y");

  m.def("cross_entropy_index_forward", &cross_entropy_index_forward, py::arg("logits"), py::arg("target"),
        py::arg("weight"), py::arg("reduction"), py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("loss"),
        py::arg("nthreads"));
  m.def("cross_entropy_index_backward", &cross_entropy_index_backward, py::arg("dloss"), py::arg("logits"),
        py::arg("target"), py::arg("weight"), py::arg("reduction"), py::arg("ignore_index"),
        py::arg("label_smoothing"), py::arg("dlogits"), py::arg("nthreads"));
  m.def("cross_entropy_probs_forward", &cross_entropy_probs_forward, py::arg("logits"), py::arg("target"),
        py::arg("weight"), py::arg("reduction"), py::arg("label_smoothing"), py::arg("loss"), py::arg("nthreads"));
  m.def("cross_entropy_probs_backward", &cross_entropy_probs_backward, py::arg("dloss"), py::arg("logits"),
        py::arg("target"), py::arg("weight"), py::arg("reduction"), py::arg("label_smoothing"), py::arg("dlogits"),
        py::arg("nthreads"));
  m.def("mse_loss_forward", &mse_loss_forward, py::arg("x"), py::arg("target"), py::arg("reduction"), py::arg("loss"),
        py::arg("nthreads"));
  m.def("mse_loss_backward", &mse_loss_backward, py::arg("dloss"), py::arg("x"), py::arg("target"),
        py::arg("reduction"), py::arg("dx"), py::arg("nthreads"));

  m.def("transpose_batched", &transpose_batched, py::arg("src"), py::arg("dst"), py::arg("nthreads"),
        "dst[n] = src[n].T for C-contiguous src (N, R, C) and dst (N, C, R): NCHW <-> NHWC");

  m.def("batch_norm_stats", &batch_norm_stats, py::arg("x"), py::arg("mean"), py::arg("var"), py::arg("nthreads"));
  m.def("batch_norm_forward", &batch_norm_forward, py::arg("x"), py::arg("mean"), py::arg("invstd"), py::arg("weight"),
        py::arg("bias"), py::arg("y"), py::arg("nthreads"));
  m.def("batch_norm_backward_reduce", &batch_norm_backward_reduce, py::arg("dy"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("sum_dy"), py::arg("sum_dy_xhat"), py::arg("nthreads"));
  m.def("batch_norm_backward_input", &batch_norm_backward_input, py::arg("dy"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("weight"), py::arg("sum_dy"), py::arg("sum_dy_xhat"), py::arg("dx"),
        py::arg("nthreads"));

  m.def("batch_norm_forward_hardtanh", &batch_norm_forward_hardtanh, py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("weight"), py::arg("bias"), py::arg("min_val"), py::arg("max_val"), py::arg("y"),
        py::arg("nthreads"), "y = clamp(batch_norm(x), min_val, max_val)");
  m.def("batch_norm_backward_reduce_hardtanh", &batch_norm_backward_reduce_hardtanh, py::arg("dy"), py::arg("x"),
        py::arg("mean"), py::arg("invstd"), py::arg("weight"), py::arg("bias"), py::arg("min_val"),
        py::arg("max_val"), py::arg("sum_dy"), py::arg("sum_dy_xhat"), py::arg("nthreads"));
  m.def("batch_norm_backward_input_hardtanh", &batch_norm_backward_input_hardtanh, py::arg("dy"), py::arg("x"),
        py::arg("mean"), py::arg("invstd"), py::arg("weight"), py::arg("bias"), py::arg("min_val"),
        py::arg("max_val"), py::arg("sum_dy"), py::arg("sum_dy_xhat"), py::arg("training"), py::arg("dx"),
        py::arg("nthreads"));

  m.def("dropout_forward", &dropout_forward, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("y"), py::arg("mask"),
        py::arg("nthreads"), "y = x * mask / (1 - p) with mask drawn from (seed, element index) alone");
  m.def("dropout_backward", &dropout_backward, py::arg("dy"), py::arg("mask"), py::arg("p"), py::arg("dx"),
        py::arg("nthreads"));
}
