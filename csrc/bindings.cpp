// fastconv._cpp: binds the plain C++ kernels of conv.cpp (and later families) to Python. Only
// binding work happens here: checking that arrays are what the kernels index (C-contiguous, one
// float dtype, writable outputs of the right size; the Python front has validated everything a
// user can get wrong), reading the params objects, and releasing the GIL around the compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bind_util.h"
#include "conv.h"
#include "gemm.h"
#include "linear.h"
#include "pool.h"
#include "winograd.h"

namespace py = pybind11;
using fastconv::index_t;

namespace {

using namespace fastconv::bind;  // in, out, in_opt, threads, by_dtype (bind_util.h)

fastconv::ConvShape conv_shape(const py::object& p) {
  static PyObject* const names[] = {interned("N"),        interned("C_in"),     interned("H"),     interned("W"),
                                    interned("C_out"),    interned("KH"),       interned("KW"),    interned("OH"),
                                    interned("OW"),       interned("stride_h"), interned("stride_w"),
                                    interned("pad_t"),    interned("pad_l"),    interned("dil_h"), interned("dil_w"),
                                    interned("groups")};
  auto get = [&](int i) { return int_attr(p, names[i]); };
  return fastconv::ConvShape{get(0), get(1), get(2),  get(3),  get(4),  get(5),  get(6),  get(7),
                             get(8), get(9), get(10), get(11), get(12), get(13), get(14), get(15)};
}

// The algorithm a conv pass is asked to run ("auto": the heuristics); ValueError (std::
// invalid_argument) for one that does not apply to the layer (see conv2d_algorithms).
fastconv::ConvAlgo algorithm(const char* pass, const fastconv::ConvShape& s, const py::array& a, const std::string& name) {
  return fastconv::algorithm_of(s, pass, a.dtype().itemsize(), name);
}

void conv2d_forward(const py::array& x, const py::array& w, const py::object& b, py::array& y, const py::object& p,
                    int nthreads, const std::string& algo) {
  const auto s = conv_shape(p);
  const auto a = algorithm("fwd", s, x, algo);
  by_dtype("conv2d_forward", x, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "conv2d_forward";
    const T* xp = in<T>(op, "x", x, s.N * s.C_in * s.H * s.W);
    const T* wp = in<T>(op, "w", w, s.C_out * (s.C_in / s.groups) * s.KH * s.KW);
    const T* bp = in_opt<T>(op, "b", b, s.C_out);
    T* yp = out<T>(op, "y", y, s.N * s.C_out * s.OH * s.OW);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::conv2d_forward(s, xp, wp, bp, yp, nt, a);
  });
}

void conv2d_backward_input(const py::array& dy, const py::array& w, py::array& dx, const py::object& p, int nthreads,
                           const std::string& algo) {
  const auto s = conv_shape(p);
  const auto a = algorithm("dgrad", s, dy, algo);
  by_dtype("conv2d_backward_input", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "conv2d_backward_input";
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C_out * s.OH * s.OW);
    const T* wp = in<T>(op, "w", w, s.C_out * (s.C_in / s.groups) * s.KH * s.KW);
    T* dxp = out<T>(op, "dx", dx, s.N * s.C_in * s.H * s.W);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::conv2d_backward_input(s, dyp, wp, dxp, nt, a);
  });
}

void conv2d_backward_weight(const py::array& dy, const py::array& x, py::array& dw, const py::object& p,
                            int nthreads, const std::string& algo) {
  const auto s = conv_shape(p);
  const auto a = algorithm("wgrad", s, dy, algo);
  by_dtype("conv2d_backward_weight", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "conv2d_backward_weight";
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C_out * s.OH * s.OW);
    const T* xp = in<T>(op, "x", x, s.N * s.C_in * s.H * s.W);
    T* dwp = out<T>(op, "dw", dw, s.C_out * (s.C_in / s.groups) * s.KH * s.KW);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::conv2d_backward_weight(s, dyp, xp, dwp, nt, a);
  });
}

void conv2d_backward_bias(const py::array& dy, py::array& db, int nthreads) {
  if (dy.ndim() != 4) throw py::value_error("conv2d_backward_bias: dy must have 4 dims (N, C, OH, OW)");
  const index_t N = dy.shape(0), C = dy.shape(1), P = dy.shape(2) * dy.shape(3);
  by_dtype("conv2d_backward_bias", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "conv2d_backward_bias";
    const T* dyp = in<T>(op, "dy", dy, N * C * P);
    T* dbp = out<T>(op, "db", db, C);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::conv2d_backward_bias(N, C, P, dyp, dbp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// linear: x (M, in), w (out, in), dy (M, out)
// ---------------------------------------------------------------------------------------------

void linear_forward(const py::array& x, const py::array& w, const py::object& b, py::array& y, int nthreads) {
  if (x.ndim() != 2 || w.ndim() != 2) throw py::value_error("linear_forward: x and w must be 2-d");
  const index_t M = x.shape(0), in_f = x.shape(1), out_f = w.shape(0);
  by_dtype("linear_forward", x, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "linear_forward";
    const T* xp = in<T>(op, "x", x, M * in_f);
    const T* wp = in<T>(op, "w", w, out_f * in_f);
    const T* bp = in_opt<T>(op, "b", b, out_f);
    T* yp = out<T>(op, "y", y, M * out_f);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::linear_forward(M, in_f, out_f, xp, wp, bp, yp, nt);
  });
}

void linear_backward_input(const py::array& dy, const py::array& w, py::array& dx, int nthreads) {
  if (dy.ndim() != 2 || w.ndim() != 2) throw py::value_error("linear_backward_input: dy and w must be 2-d");
  const index_t M = dy.shape(0), out_f = w.shape(0), in_f = w.shape(1);
  by_dtype("linear_backward_input", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "linear_backward_input";
    const T* dyp = in<T>(op, "dy", dy, M * out_f);
    const T* wp = in<T>(op, "w", w, out_f * in_f);
    T* dxp = out<T>(op, "dx", dx, M * in_f);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::linear_backward_input(M, in_f, out_f, dyp, wp, dxp, nt);
  });
}

void linear_backward_weight(const py::array& dy, const py::array& x, py::array& dw, int nthreads) {
  if (dy.ndim() != 2 || x.ndim() != 2) throw py::value_error("linear_backward_weight: dy and x must be 2-d");
  const index_t M = dy.shape(0), out_f = dy.shape(1), in_f = x.shape(1);
  by_dtype("linear_backward_weight", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "linear_backward_weight";
    const T* dyp = in<T>(op, "dy", dy, M * out_f);
    const T* xp = in<T>(op, "x", x, M * in_f);
    T* dwp = out<T>(op, "dw", dw, out_f * in_f);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::linear_backward_weight(M, in_f, out_f, dyp, xp, dwp, nt);
  });
}

void linear_backward_bias(const py::array& dy, py::array& db, int nthreads) {
  if (dy.ndim() != 2) throw py::value_error("linear_backward_bias: dy must be 2-d");
  const index_t M = dy.shape(0), out_f = dy.shape(1);
  by_dtype("linear_backward_bias", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "linear_backward_bias";
    const T* dyp = in<T>(op, "dy", dy, M * out_f);
    T* dbp = out<T>(op, "db", db, out_f);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::linear_backward_bias(M, out_f, dyp, dbp, nt);
  });
}

// ---------------------------------------------------------------------------------------------
// pooling: x, dx (N, C, H, W); y, dy, indices (N, C, OH, OW)
// ---------------------------------------------------------------------------------------------

fastconv::PoolShape pool_shape(const py::object& p) {
  static PyObject* const names[] = {interned("N"),        interned("C"),        interned("H"),     interned("W"),
                                    interned("KH"),       interned("KW"),       interned("OH"),    interned("OW"),
                                    interned("stride_h"), interned("stride_w"), interned("pad_h"), interned("pad_w"),
                                    interned("dil_h"),    interned("dil_w"),    interned("count_include_pad"),
                                    interned("divisor_override")};
  auto get = [&](int i) { return int_attr(p, names[i]); };
  const py::object divisor = py::reinterpret_steal<py::object>(PyObject_GetAttr(p.ptr(), names[15]));
  if (!divisor) throw py::error_already_set();
  return fastconv::PoolShape{get(0),  get(1),  get(2),  get(3),  get(4),  get(5),         get(6),
                             get(7),  get(8),  get(9),  get(10), get(11), get(12),        get(13),
                             get(14) != 0, divisor.is_none() ? 0 : divisor.cast<index_t>()};
}

fastconv::PoolShape adaptive_shape(const py::object& p) {
  static PyObject* const names[] = {interned("N"), interned("C"), interned("H"), interned("W"), interned("OH"),
                                    interned("OW")};
  auto get = [&](int i) { return int_attr(p, names[i]); };
  return fastconv::PoolShape{get(0), get(1), get(2), get(3), 0, 0, get(4), get(5), 0, 0, 0, 0, 0, 0, false, 0};
}

const std::int64_t* indices_in(const char* op, const py::array& a, index_t size) {
  return in<std::int64_t>(op, "indices", a, size);
}

// indices None: y alone (the kernel skips their stores)
void max_pool2d_forward(const py::array& x, py::array& y, const py::object& indices, const py::object& p,
                        int nthreads) {
  const auto s = pool_shape(p);
  by_dtype("max_pool2d_forward", x, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "max_pool2d_forward";
    const T* xp = in<T>(op, "x", x, s.N * s.C * s.H * s.W);
    T* yp = out<T>(op, "y", y, s.N * s.C * s.OH * s.OW);
    std::int64_t* ip = out_opt<std::int64_t>(op, "indices", indices, s.N * s.C * s.OH * s.OW);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    fastconv::max_pool2d_forward(s, xp, yp, ip, nt);
  });
}

// Returns whether every index lay in the plane (the adapter raises the front's error otherwise).
bool max_pool2d_backward(const py::array& dy, const py::array& indices, py::array& dx, const py::object& p,
                         int nthreads) {
  const auto s = pool_shape(p);
  bool inside = true;
  by_dtype("max_pool2d_backward", dy, [&](auto tag) {
    using T = decltype(tag);
    const char* op = "max_pool2d_backward";
    const T* dyp = in<T>(op, "dy", dy, s.N * s.C * s.OH * s.OW);
    const std::int64_t* ip = indices_in(op, indices, s.N * s.C * s.OH * s.OW);
    T* dxp = out<T>(op, "dx", dx, s.N * s.C * s.H * s.W);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    inside = fastconv::max_pool2d_backward(s, dyp, ip, dxp, nt);
  });
  return inside;
}

// The four average-pool kernels share one shape: (src, dst) with sizes from the params.
template <bool Adaptive, bool Backward>
void avg_pool(const char* op, const py::array& src, py::array& dst, const py::object& p, int nthreads) {
  const auto s = Adaptive ? adaptive_shape(p) : pool_shape(p);
  const index_t big = s.N * s.C * s.H * s.W, small = s.N * s.C * s.OH * s.OW;
  by_dtype(op, src, [&](auto tag) {
    using T = decltype(tag);
    const T* sp = in<T>(op, Backward ? "dy" : "x", src, Backward ? small : big);
    T* dp = out<T>(op, Backward ? "dx" : "y", dst, Backward ? big : small);
    const int nt = threads(nthreads);
    py::gil_scoped_release release;
    if (Adaptive && Backward) fastconv::adaptive_avg_pool2d_backward(s, sp, dp, nt);
    if (Adaptive && !Backward) fastconv::adaptive_avg_pool2d_forward(s, sp, dp, nt);
    if (!Adaptive && Backward) fastconv::avg_pool2d_backward(s, sp, dp, nt);
    if (!Adaptive && !Backward) fastconv::avg_pool2d_forward(s, sp, dp, nt);
  });
}

}  // namespace

void bind_ops(pybind11::module_& m);  // bindings_ops.cpp: activations, losses, batch norm, dropout

PYBIND11_MODULE(_cpp, m) {
  m.doc() = "fastconv's C++ kernels (private: use fastconv's public ops with backend='cpp')";
  bind_ops(m);

  m.def("conv2d_forward", &conv2d_forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("p"),
        py::arg("nthreads"), py::arg("algo") = "auto",
        "y = conv2d(x, w) + b into the preallocated y; p is a fastconv ConvParams; algo: 'auto', 'winograd' (the "
        "chooser's tile, where it takes Winograd) or one that conv2d_algorithms lists");
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("p"),
        py::arg("nthreads"), py::arg("algo") = "auto");
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("p"),
        py::arg("nthreads"), py::arg("algo") = "auto");
  m.def(
      "conv2d_algorithms",
      [](const py::object& p, const std::string& pass, const py::dtype& dtype) {
        py::list names;
        for (const std::string& n : fastconv::conv2d_algorithms(conv_shape(p), pass, dtype.itemsize())) names.append(n);
        return py::tuple(names);
      },
      py::arg("p"), py::arg("pass_"), py::arg("dtype"),
      "the algorithms of pass 'fwd', 'dgrad' or 'wgrad' that apply to ConvParams p in dtype, in the order the "
      "heuristics try them");
  m.def(
      "conv2d_uses_winograd",
      [](const py::object& p, const std::string& pass, const py::dtype& dtype) {
        return fastconv::conv2d_uses_winograd(conv_shape(p), pass, dtype.itemsize());
      },
      py::arg("p"), py::arg("pass_"), py::arg("dtype"),
      "the output tile m (2, 3 or 4) of the Winograd F(m x m, 3x3) that pass 'fwd', 'dgrad' or 'wgrad' of ConvParams p "
      "in dtype runs as (given finite data), 0 where it does not run as Winograd");
  m.def("set_winograd_f4", &fastconv::set_winograd_f4, py::arg("allowed"),
        "whether Winograd may take F(4x4) where it pays (fastconv.set_float32_conv_precision('high'))");
  m.def("set_winograd_tile", &fastconv::set_winograd_tile, py::arg("m"),
        "make every pass that runs as Winograd use tile m (2, 3 or 4), or none (1), or the chooser's (0): for tests and "
        "benchmarks");
  m.def(
      "conv2d_wgrad_uses_dot", [](const py::object& p) { return fastconv::conv2d_wgrad_uses_dot(conv_shape(p)); },
      py::arg("p"), "whether fp32 wgrad of ConvParams p runs as dot products along the pixels (given finite x)");
  m.def(
      "conv2d_dgrad_uses_subpixel",
      [](const py::object& p) { return fastconv::conv2d_dgrad_uses_subpixel(conv_shape(p)); }, py::arg("p"),
      "whether fp32 dgrad of ConvParams p runs as one forward of dy per phase of dx (given finite w)");
  m.def(
      "conv2d_depthwise_uses_lanes",
      [](const py::object& p, const std::string& pass, const py::dtype& dtype) {
        return fastconv::depthwise_uses_lanes(conv_shape(p), pass, dtype.itemsize());
      },
      py::arg("p"), py::arg("pass_"), py::arg("dtype"),
      "whether pass 'fwd', 'dgrad' or 'wgrad' of the depthwise ConvParams p in dtype runs with the channels in the "
      "vector lanes (given finite w)");
  m.def("conv2d_backward_bias", &conv2d_backward_bias, py::arg("dy"), py::arg("db"), py::arg("nthreads"));

  m.def("linear_forward", &linear_forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("nthreads"));
  m.def("linear_backward_input", &linear_backward_input, py::arg("dy"), py::arg("w"), py::arg("dx"),
        py::arg("nthreads"));
  m.def("linear_backward_weight", &linear_backward_weight, py::arg("dy"), py::arg("x"), py::arg("dw"),
        py::arg("nthreads"));
  m.def("linear_backward_bias", &linear_backward_bias, py::arg("dy"), py::arg("db"), py::arg("nthreads"));

  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("p"),
        py::arg("nthreads"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("dy"), py::arg("indices"), py::arg("dx"), py::arg("p"),
        py::arg("nthreads"));
  m.def(
      "avg_pool2d_forward",
      [](const py::array& x, py::array& y, const py::object& p, int nt) { avg_pool<false, false>("avg_pool2d_forward", x, y, p, nt); },
      py::arg("x"), py::arg("y"), py::arg("p"), py::arg("nthreads"));
  m.def(
      "avg_pool2d_backward",
      [](const py::array& dy, py::array& dx, const py::object& p, int nt) { avg_pool<false, true>("avg_pool2d_backward", dy, dx, p, nt); },
      py::arg("dy"), py::arg("dx"), py::arg("p"), py::arg("nthreads"));
  m.def(
      "adaptive_avg_pool2d_forward",
      [](const py::array& x, py::array& y, const py::object& p, int nt) {
        avg_pool<true, false>("adaptive_avg_pool2d_forward", x, y, p, nt);
      },
      py::arg("x"), py::arg("y"), py::arg("p"), py::arg("nthreads"));
  m.def(
      "adaptive_avg_pool2d_backward",
      [](const py::array& dy, py::array& dx, const py::object& p, int nt) {
        avg_pool<true, true>("adaptive_avg_pool2d_backward", dy, dx, p, nt);
      },
      py::arg("dy"), py::arg("dx"), py::arg("p"), py::arg("nthreads"));

  m.def("gemm_isa", &fastconv::gemm_isa, "the micro-kernel set in use: 'avx512', 'avx2' or 'generic'");
  m.def("set_gemm_isa", &fastconv::set_gemm_isa, py::arg("name"),
        "use another micro-kernel set ('auto' = the best this CPU has); ValueError if unavailable");
  m.def("kernel_gflops", &fastconv::kernel_gflops, py::arg("seconds"), py::call_guard<py::gil_scoped_release>(),
        "GFLOP/s of the fp32 micro-kernel in use on one core now, its panels in L1 (median of 1 ms slices)");
  m.def("core_round_trip_ns", &fastconv::core_round_trip_ns, py::arg("seconds"),
        py::call_guard<py::gil_scoped_release>(),
        "ns for two threads to hand a cache line to each other and back now (median of slices of 200)");
  m.def("cores_apart", &fastconv::cores_apart, py::arg("nthreads"), py::call_guard<py::gil_scoped_release>(),
        "whether a team of nthreads has threads on different dies now (measured at most every 100 ms)");
  m.def("set_cores_apart", &fastconv::set_cores_apart, py::arg("forced"),
        "-1: measure (the default); 0 or 1: answer so for every team of 2+ threads (tests)");
  m.def(
      "cache_sizes",
      [] {
        const fastconv::CacheSizes& c = fastconv::cache_sizes();
        py::dict d;
        d["l2"] = c.l2, d["l2_source"] = c.l2_source;
        return d;
      },
      "the L2 size (bytes per core) the blocking is taken from, and where it came from: 'env' "
      "(FASTCONV_L2_BYTES), 'sysfs' or 'default'");
  m.def(
      "gemm_blocking",
      [](const std::string& dtype) {
        py::dict d;
        auto fill = [&](const auto& uk) { d["mr"] = uk.mr, d["nr"] = uk.nr, d["kc"] = uk.kc, d["nc"] = uk.nc; };
        if (dtype == "float32") fill(fastconv::micro_kernel<float>());
        else if (dtype == "float64") fill(fastconv::micro_kernel<double>());
        else throw py::value_error("gemm_blocking: dtype must be 'float32' or 'float64', got '" + dtype + "'");
        return d;
      },
      py::arg("dtype") = "float32", "the general micro-kernel in use: its tile (mr x nr) and its blocks (kc x nc)");
  m.def("set_conv_chunk_bytes", &fastconv::set_conv_chunk_bytes, py::arg("nbytes"),
        "bound each chunk of flat copies and each plane the depthwise loops pad to nbytes instead of 4 MiB (0 "
        "restores it), so that small images run in several bands: for tests; ValueError if negative");
  m.def("workspace_peak_bytes", &fastconv::workspace_peak_bytes,
        "most bytes of kernel workspace held at once since workspace_reset_peak()");
  m.def("workspace_reset_peak", &fastconv::workspace_reset_peak);
  m.def("set_workspace_cache_bytes", &fastconv::set_workspace_cache_bytes, py::arg("nbytes"),
        "keep at most nbytes of freed workspace blocks (256 KiB and larger) for later calls instead of handing them "
        "back to the system (default 128 MiB; 0 keeps none and frees the kept ones); ValueError if negative");
  m.def("workspace_cache_bytes", &fastconv::workspace_cache_bytes, "the bound set_workspace_cache_bytes set");
  m.def("workspace_cached_bytes", &fastconv::workspace_cached_bytes, "bytes of workspace blocks kept now");
  // Output arrays from the kept blocks: a large output freed by the caller (the last reference
  // gone) goes back to them, and the next call's output of that size takes it without a page
  // fault. np.empty's memory of 32 MiB and more is always mmap'ed afresh by glibc, and the kernel
  // zeroes every page of it on first touch: the 1x1 256 <- 64 dgrad at 56x56, batch 16 (a 51 MB
  // dx) took 7.9-10.9 ms into fresh arrays and 4.9-5.2 into one kept array (2-core Zen 5).
  m.def(
      "empty",
      [](const py::sequence& dims, const py::object& dtype_like) {
        const py::dtype dtype = py::dtype::from_args(dtype_like);
        std::vector<py::ssize_t> shape;
        std::size_t bytes = static_cast<std::size_t>(dtype.itemsize());
        bool too_big = false;  // past what the product can count: NumPy raises its own error then
        for (const auto& item : dims) {
          const auto d = item.cast<py::ssize_t>();
          if (d < 0) throw py::value_error("empty: negative dimension " + std::to_string(d));
          shape.push_back(d);
          too_big |= __builtin_mul_overflow(bytes, static_cast<std::size_t>(d), &bytes);
        }
        if (too_big || bytes < fastconv::kKeptBlockBytes || bytes > static_cast<std::size_t>(PTRDIFF_MAX))
          return py::array(dtype, shape);  // small ones: glibc's heap serves them anyway
        struct Block {
          void* p;
          std::size_t capacity;
        };
        auto* block = new Block{nullptr, 0};
        try {
          block->p = fastconv::workspace_alloc(static_cast<std::size_t>(fastconv::round_up(
                                                   static_cast<fastconv::index_t>(bytes), 64)),
                                               block->capacity);
        } catch (...) {
          delete block;
          throw;
        }
        py::capsule owner(block, [](void* b) {
          auto* k = static_cast<Block*>(b);
          fastconv::workspace_free(k->p, k->capacity);
          delete k;
        });
        return py::array(dtype, shape, block->p, owner);
      },
      py::arg("shape"), py::arg("dtype"),
      "an uninitialised C-contiguous array; one of 256 KiB or more in a kept block (see "
      "set_workspace_cache_bytes), given back to the kept blocks when the array is freed");
}
