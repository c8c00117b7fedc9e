// The depthwise vector kernels, written once against a traits type and compiled once per
// instruction set: the forward of dense (stride and dilation 1) 3x3 and 5x5 layers, and the wgrad
// of 3x3 and 5x5 layers at stride_w 1. conv_depthwise.cpp includes this file inside a
// `#pragma GCC target` region and a namespace of its own for each, where `Vec<T>` (the vector of T,
// its mask type M and their operations) and `kRegisters` (how many vector registers there are) are
// defined. So it includes nothing itself (an include here would land inside that namespace).

// One output plane of a dense (stride and dilation 1) KH x KW depthwise forward from its padded
// plane xp: the portable dw_forward_tiles (kDense) with the tile in explicit registers, where GCC's
// vector extension spilled accumulators and weights (this runs in 0.55-0.65x its time, the
// same speed as memory then). The taps' weights stay in registers for the whole plane; each input
// vector serves the KH output rows it reaches; a ragged tile's stores are masked.
template <typename T, int KH, int KW>
void dw_forward_dense(const ConvShape& s, const PaddedPlane& pp, const T* xp, const T* w, T bias, T* y) {
  using A = Vec<T>;
  using V = typename A::V;
  // R accumulators beside the KH*KW weights and a load, where the registers allow 8 (AVX-512 at
  // 3x3), else 4: 8 rows of AVX2's 16 registers spilled (the portable tile, 0.34x PyTorch there)
  constexpr int L = A::L, R = kRegisters - KH * KW - 2 >= 8 ? 8 : 4;
  static_assert(R <= kDwRows && L <= kDwTile, "the padded plane covers tiles of kDwRows x kDwTile only");
  V wv[KH * KW];
  for (int k = 0; k < KH * KW; ++k) wv[k] = A::broadcast(w[k]);
  const V b = A::broadcast(bias);
  for (index_t oh0 = 0; oh0 < s.OH; oh0 += R) {
    const int rows = static_cast<int>(min_i(R, s.OH - oh0));
    for (index_t ow0 = 0; ow0 < s.OW; ow0 += L) {
      const T* tile = xp + oh0 * pp.Wp + ow0;
      V acc[R];  // the loops unroll whole (acc[] indexed by constants stays in registers)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = b;
#pragma GCC unroll 12
      for (int i = 0; i < R + KH - 1; ++i)
#pragma GCC unroll 5
        for (int kw = 0; kw < KW; ++kw) {
          const V xv = A::load(tile + i * pp.Wp + kw);
#pragma GCC unroll 5
          for (int kh = 0; kh < KH; ++kh)
            if (i - kh >= 0 && i - kh < R) acc[i - kh] = A::fmadd(wv[kh * KW + kw], xv, acc[i - kh]);
        }
      const index_t cols = min_i(L, s.OW - ow0);
      T* yt = y + oh0 * s.OW + ow0;
      if (cols == L) {
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) A::store(yt + r * s.OW, acc[r]);
      } else {
        const typename A::M m = A::first(cols);
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) A::store(m, yt + r * s.OW, acc[r]);
      }
    }
  }
}

// One output plane (see dw_forward_plane_impl), by the vector kernel of its kernel size.
template <typename T>
void dw_forward_plane(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win, const T* x, T* xp,
                      const T* w, T bias, T* y) {
  if (x) copy_window(s, pp, win, x, xp);
  if (s.KH == 3) return dw_forward_dense<T, 3, 3>(s, pp, xp, w, bias, y);
  return dw_forward_dense<T, 5, 5>(s, pp, xp, w, bias, y);
}


// The lanes of a stride_w-1 depthwise wgrad's steps, and where they need no mask. Step v's lane l
// holds output column v*L + l, which is in the row while < OW and, for tap kw, reads input column
// v*L + l + off[kw] (off[kw] = kw*dil_w - pad_l, increasing), in the image while in [0, W).
template <typename T, int KW>
struct DwWgradSteps {
  using M = typename Vec<T>::M;
  static constexpr int L = Vec<T>::L;
  index_t steps;
  index_t off_bytes[KW];   // off[kw] in bytes
  Buffer<M> masks;         // [v*KW + kw]: the lanes of step v whose tap-kw column is in the image
  Buffer<M> dy_masks;      // [v]: the lanes inside the row (a Buffer, aligned: std::vector drops a
                           // vector mask type's alignment, and GCC's aligned stores into it faulted)
  index_t plain_lo, plain_hi;      // the steps whose lanes all lie inside the row for every tap
  index_t rows_in_lo, rows_in_hi;  // the output rows whose taps all read rows of the image

  explicit DwWgradSteps(const ConvShape& s) : steps(ceil_div(s.OW, L)), masks(steps * KW), dy_masks(steps) {
    index_t off[KW];
    for (int kw = 0; kw < KW; ++kw) off[kw] = kw * s.dil_w - s.pad_l, off_bytes[kw] = off[kw] * index_t(sizeof(T));
    for (index_t v = 0; v < steps; ++v) {
      const index_t end = min_i(L, s.OW - v * L);
      dy_masks.data()[v] = Vec<T>::lanes(0, end);
      for (int kw = 0; kw < KW; ++kw)
        masks.data()[v * KW + kw] = Vec<T>::lanes(max_i(0, -off[kw] - v * L), min_i(end, s.W - off[kw] - v * L));
    }
    // columns v*L + off[0] >= 0 and v*L + L-1 + off[KW-1] < W, and (v+1)*L <= OW
    const index_t last_col = s.W - off[KW - 1] - L;
    // (at most `steps`: a left padding wider than the row's steps would otherwise send the masked
    // loop past the last step, reading masks that do not exist)
    plain_lo = min_i(steps, ceil_div(max_i(0, -off[0]), L));
    plain_hi = max_i(plain_lo, min_i(s.OW / L, last_col < 0 ? 0 : last_col / L + 1));
    const index_t last_row = s.H - 1 + s.pad_t - (s.KH - 1) * s.dil_h;
    rows_in_lo = ceil_div(s.pad_t, s.stride_h);
    rows_in_hi = last_row < 0 ? 0 : last_row / s.stride_h + 1;
  }
};

// Adds one image's plane of one output channel to its KH x KW sums acc[] (one vector per tap:
// KH*KW independent FMA chains instead of one), in a fixed order: rows, then L-column steps v.
// dy (OH x OW) is loaded once per step and x (H x W) once per tap. At the row's ends lanes outside
// are masked out of both the load and the FMA, so they add nothing (not dy * 0, which would turn
// an Inf in dy into NaN); in between, plain loads and FMAs (the same sums; on AVX2 a masked step
// costs a blend or an and besides).
template <typename T, int KH, int KW>
void dw_wgrad_plane_vec(const ConvShape& s, const DwWgradSteps<T, KW>& st, const T* dy, const T* x_all,
                        index_t x_at, typename Vec<T>::V* acc) {
  const T* x = x_all + x_at;
  using A = Vec<T>;
  using M = typename A::M;
  constexpr int L = A::L;
  const index_t* off_bytes = st.off_bytes;
  const M* masks = st.masks.data();
  const M* dy_masks = st.dy_masks.data();
  // the sums in a copy that lives only in registers: acc[] itself (memory) was stored back after
  // every FMA (0.7x the time without)
  typename A::V a[KH * KW];
#pragma GCC unroll 25
  for (int k = 0; k < KH * KW; ++k) a[k] = acc[k];
  for (index_t oh = 0; oh < s.OH; ++oh) {
    // x row of tap kh, and whether it lies in the image: a row in the padding masks out all its
    // lanes (its pointer is row 0, never read)
    const T* rows[KH];
    M inside[KH];
    for (int kh = 0; kh < KH; ++kh) {
      const index_t ih = oh * s.stride_h - s.pad_t + kh * s.dil_h;
      const bool in = ih >= 0 && ih < s.H;
      rows[kh] = x + (in ? ih : 0) * s.W;
      inside[kh] = A::all(in);
    }
    const T* dyr = dy + oh * s.OW;
    // the dy row and the x rows that row oh + 8 is the first to read, ahead (past the plane: the
    // next channel's, which is what comes next): 0.89-0.93x the time on MobileNetV2's 3x3 at 144 x
    // 56 x 56, batch 16 (2 threads, AVX-512; a control of the same code without it 1.00-1.01x; 2,
    // 4 and 16 rows 0.91-0.95x)
    constexpr index_t kAhead = 8;
    prefetch_span(dyr, kAhead * s.OW * index_t(sizeof(T)), s.OW * index_t(sizeof(T)));
    prefetch_span(x, ((oh + kAhead) * s.stride_h - s.pad_t + (KH - 1) * s.dil_h) * s.W * index_t(sizeof(T)),
                  s.stride_h * s.W * index_t(sizeof(T)));
    auto masked_step = [&](index_t v) {
      const typename A::V d = A::load(dy_masks[v], dyr + v * L);
      const M* m = masks + v * KW;
      // unrolled whole: a[] indexed by constants
#pragma GCC unroll 5
      for (int kh = 0; kh < KH; ++kh) {
        // pointer arithmetic as integers: a masked lane may sit before the row (column -pad)
        const std::uintptr_t xr = reinterpret_cast<std::uintptr_t>(rows[kh] + v * L);
#pragma GCC unroll 5
        for (int kw = 0; kw < KW; ++kw) {
          const M mk = A::both(m[kw], inside[kh]);
          a[kh * KW + kw] = A::fmadd(d, A::load(mk, reinterpret_cast<const T*>(xr + off_bytes[kw])), a[kh * KW + kw], mk);
        }
      }
    };
    auto plain_step = [&](index_t v) {
      const typename A::V d = A::load(dyr + v * L);
#pragma GCC unroll 5
      for (int kh = 0; kh < KH; ++kh) {
        const std::uintptr_t xr = reinterpret_cast<std::uintptr_t>(rows[kh] + v * L);
#pragma GCC unroll 5
        for (int kw = 0; kw < KW; ++kw)
          a[kh * KW + kw] = A::fmadd(d, A::load(reinterpret_cast<const T*>(xr + off_bytes[kw])), a[kh * KW + kw]);
      }
    };
    const bool rows_in = oh >= st.rows_in_lo && oh < st.rows_in_hi;
    index_t v = 0;
    for (; v < (rows_in ? st.plain_lo : st.steps); ++v) masked_step(v);
    for (; v < st.plain_hi; ++v) plain_step(v);
    for (; v < st.steps; ++v) masked_step(v);
  }
#pragma GCC unroll 25
  for (int k = 0; k < KH * KW; ++k) acc[k] = a[k];
}

// The steps of a depthwise wgrad on planes of up to 128 vectors at stride 1 with OW == W (the
// "same" layers of MobileNet on CIFAR-size images: 32x32 down to 4x4): an output row and its input
// row then have the same length, so tap t of output pixel p (flattened, p = oh*OW + ow) reads input
// pixel p + shift[t], and a plane's sums run over whole L-lane steps of the flattened plane, one
// row or several per step, with no per-row work and, away from x's ends, plain loads (see
// reach_lo). DwWgradSteps (row by row, masked loads at both ends of each row) took 1.6-4x PyTorch's
// time on those layers (fp32, AVX2, Zen 1); this, 0.5-0.9x. masks[v*KH*KW + t]: the lanes of step
// v whose pixel is in the plane and whose tap-t input pixel lies in the image (its row and its
// column: a step spans rows). The forward on small planes walks the same steps (dw_forward_flat).
template <typename T, int KH, int KW>
struct DwWgradFlat {
  using M = typename Vec<T>::M;
  static constexpr int L = Vec<T>::L, KK = KH * KW;
  index_t steps;
  index_t shift_bytes[KK];
  Buffer<M> masks;
  // a plane at element `at` of x may load whole vectors unmasked where every tap's reach,
  // [at + reach_lo, at + reach_hi), lies inside x (x_elems): all but the tensor's first and last
  // planes, in practice. Masked loads (vmaskmovps) ran at ~10 cycles a tap and step on Zen 1
  index_t reach_lo = 0, reach_hi = 0, x_elems;

  // Where it applies: stride 1, OW == W, planes of at most 128 steps (the masks, 128 * KK of them,
  // 37 KiB at 3x3 on AVX2, are read by every plane: they stay in L2; larger planes take DwWgradSteps).
  static bool applies(const ConvShape& s) {
    return s.stride_h == 1 && s.stride_w == 1 && s.OW == s.W && ceil_div(s.OH * s.OW, L) <= 128;
  }

  explicit DwWgradFlat(const ConvShape& s)
      : steps(ceil_div(s.OH * s.OW, L)), masks(steps * KK), x_elems(s.N * s.C_in * s.H * s.W) {
    for (int kh = 0; kh < KH; ++kh)
      for (int kw = 0; kw < KW; ++kw) {
        const index_t shift = (kh * s.dil_h - s.pad_t) * s.W + kw * s.dil_w - s.pad_l;
        shift_bytes[kh * KW + kw] = shift * index_t(sizeof(T));
        reach_lo = min_i(reach_lo, shift);
        reach_hi = max_i(reach_hi, shift + steps * L);
      }
    for (index_t v = 0; v < steps; ++v)
      for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw) {
          unsigned bits = 0;
          for (int l = 0; l < L; ++l) {
            const index_t p = v * L + l, oh = p / s.OW, ow = p % s.OW;
            const index_t ih = oh + kh * s.dil_h - s.pad_t, iw = ow + kw * s.dil_w - s.pad_l;
            if (p < s.OH * s.OW && ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) bits |= 1u << l;
          }
          masks.data()[v * KK + kh * KW + kw] = Vec<T>::from_bits(bits);
        }
  }
};

// Adds one image's plane of one output channel to its sums acc[] (see DwWgradFlat), in a fixed
// order: steps, and within one the taps. Lanes outside the plane or whose tap falls in the padding
// are masked out of the loads and the FMAs, as in the row-by-row dw_wgrad_plane_vec above; dy's
// ragged last step is loaded under the mask of the plane's lanes.
template <typename T, int KH, int KW>
void dw_wgrad_plane_vec(const ConvShape& s, const DwWgradFlat<T, KH, KW>& st, const T* dy, const T* x_all,
                        index_t x_at, typename Vec<T>::V* acc) {
  using A = Vec<T>;
  using M = typename A::M;
  constexpr int L = A::L, KK = KH * KW;
  const M* masks = st.masks.data();
  typename A::V a[KK];  // in registers (see dw_wgrad_plane_vec above)
#pragma GCC unroll 25
  for (int k = 0; k < KK; ++k) a[k] = acc[k];
  const index_t P = s.OH * s.OW, whole = P / L;
  const T* x = x_all + x_at;
  // integers: lanes may sit outside the plane, or (masked) outside x
  const std::uintptr_t x0 = reinterpret_cast<std::uintptr_t>(x);
  auto step = [&](index_t v, typename A::V d, auto in_tensor) {
    const M* m = masks + v * KK;
#pragma GCC unroll 25
    for (int k = 0; k < KK; ++k) {
      const T* p = reinterpret_cast<const T*>(x0 + v * L * index_t(sizeof(T)) + st.shift_bytes[k]);
      if constexpr (in_tensor) {  // lanes outside the plane read x's other planes: fmadd_any drops them
        a[k] = A::fmadd_any(d, A::load(p), a[k], m[k]);
      } else {
        a[k] = A::fmadd(d, A::load(m[k], p), a[k], m[k]);
      }
    }
  };
  auto steps = [&](auto in_tensor) {
    index_t v = 0;
    for (; v < whole; ++v) step(v, A::load(dy + v * L), in_tensor);
    if (v < st.steps) step(v, A::load(A::first(P - v * L), dy + v * L), in_tensor);  // the ragged last step
  };
  if (x_at + st.reach_lo >= 0 && x_at + st.reach_hi <= st.x_elems) {
    steps(std::true_type{});
  } else {
    steps(std::false_type{});
  }
#pragma GCC unroll 25
  for (int k = 0; k < KK; ++k) acc[k] = a[k];
}

// One output plane of a depthwise forward on a small "same" plane (DwWgradFlat's case: stride 1,
// OW == W): output pixel p is the sum over taps t of w[t] * x[p + shift[t]], L pixels a step over
// the flattened plane, with no padded copy and no per-row work. Lanes whose tap falls in the
// padding read zero (the padded plane's zeros: w * 0 as there), lanes past the plane are not
// stored. The taps are summed in the tiles' order (kh, then kw; bias first): the same bits as
// dw_forward_dense. In x (x_elems), away from its ends, loads are plain and the padding lanes
// zeroed after (a masked load ran at ~10 cycles on Zen 1); at its ends, masked loads.
template <typename T, int KH, int KW>
void dw_forward_flat_plane(const ConvShape& s, const DwWgradFlat<T, KH, KW>& st, const T* x_all, index_t x_at,
                           const T* w, T bias, T* y) {
  using A = Vec<T>;
  using M = typename A::M;
  constexpr int L = A::L, KK = KH * KW;
  const M* masks = st.masks.data();
  typename A::V wv[KK];
#pragma GCC unroll 25
  for (int k = 0; k < KK; ++k) wv[k] = A::broadcast(w[k]);
  const typename A::V b = A::broadcast(bias);
  const index_t P = s.OH * s.OW, whole = P / L;
  const std::uintptr_t x0 = reinterpret_cast<std::uintptr_t>(x_all + x_at);  // integers: lanes may lie outside x
  auto step = [&](index_t v, auto in_tensor) {
    const M* m = masks + v * KK;
    typename A::V acc = b;
#pragma GCC unroll 25
    for (int k = 0; k < KK; ++k) {
      const T* p = reinterpret_cast<const T*>(x0 + v * L * index_t(sizeof(T)) + st.shift_bytes[k]);
      if constexpr (in_tensor) {
        acc = A::fmadd(wv[k], A::zero_outside(A::load(p), m[k]), acc);
      } else {
        acc = A::fmadd(wv[k], A::load(m[k], p), acc);
      }
    }
    if (v < whole) {
      A::store(y + v * L, acc);
    } else {
      A::store(A::first(P - v * L), y + v * L, acc);
    }
  };
  if (x_at + st.reach_lo >= 0 && x_at + st.reach_hi <= st.x_elems) {
    for (index_t v = 0; v < st.steps; ++v) step(v, std::true_type{});
  } else {
    for (index_t v = 0; v < st.steps; ++v) step(v, std::false_type{});
  }
}

// The forward of a 3x3 or 5x5 depthwise layer on small "same" planes, plane by plane in memory
// order (see dw_forward_flat_plane); false: it does not apply (see dw_forward_flat_applies).
template <typename T>
bool dw_forward_flat(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  const auto run = [&](auto kh) {
    constexpr int K = decltype(kh)::value;
    const DwWgradFlat<T, K, K> st(s);
    const index_t mult = s.C_out / s.groups, P = s.OH * s.OW, HW = s.H * s.W;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t u = 0; u < s.N * s.C_out; ++u) {
      const index_t n = u / s.C_out, co = u % s.C_out;
      dw_forward_flat_plane<T, K, K>(s, st, x, (n * s.C_in + co / mult) * HW, w + co * K * K, b ? b[co] : T(0),
                                     y + u * P);
    }
    return true;
  };
  if (s.KH == 3 && s.KW == 3) return run(std::integral_constant<int, 3>{});
  if (s.KH == 5 && s.KW == 5) return run(std::integral_constant<int, 5>{});
  return false;
}

// Every channel of a depthwise wgrad with stride_w 1 and a KH x KW the kernel is instantiated
// for. Each thread takes a run of channels and walks the images in memory order, image by image
// and, within one, its channels' planes one after the other (a stream the prefetchers follow;
// channel by channel, all images each, jumped C planes at every image: 1.06x the time, once, on
// AVX2 at MobileNetV2's 3x3 at 144 x 56 x 56, batch 16);
// each channel's sums stay in the order images, rows, steps, and the lanes are summed at the end
// in a fixed order: the same bits on any thread count.
// Steps: DwWgradSteps (row by row) or DwWgradFlat (small planes, flattened); the plane kernel is
// the dw_wgrad_plane_vec overload of its type.
template <typename T, int KH, int KW, typename Steps>
void dw_wgrad_channels(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  using A = Vec<T>;
  const index_t mult = s.C_out / s.groups;
  const Steps st(s);
#pragma omp parallel num_threads(nthreads)
  {
    const index_t per = ceil_div(s.C_out, omp_get_num_threads());
    const index_t c0 = min_i(s.C_out, omp_get_thread_num() * per), c1 = min_i(s.C_out, c0 + per);
    Buffer<typename A::V> acc((c1 - c0) * KH * KW);  // per thread: its channels' sums
    for (index_t k = 0; k < (c1 - c0) * KH * KW; ++k) acc.data()[k] = A::zero();
    for (index_t n = 0; n < s.N; ++n)
      for (index_t co = c0; co < c1; ++co)
        dw_wgrad_plane_vec<T, KH, KW>(s, st, dy + (n * s.C_out + co) * s.OH * s.OW, x,
                                      (n * s.C_in + co / mult) * s.H * s.W, acc.data() + (co - c0) * KH * KW);
    for (index_t co = c0; co < c1; ++co)
      for (int k = 0; k < KH * KW; ++k) dw[co * KH * KW + k] = A::sum(acc.data()[(co - c0) * KH * KW + k]);
  }
}

template <typename T, int KH, int KW>
void dw_wgrad_sized(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (DwWgradFlat<T, KH, KW>::applies(s))
    return dw_wgrad_channels<T, KH, KW, DwWgradFlat<T, KH, KW>>(s, dy, x, dw, nthreads);
  dw_wgrad_channels<T, KH, KW, DwWgradSteps<T, KW>>(s, dy, x, dw, nthreads);
}

// The wgrad by the kernel of its size (3x3 or 5x5; at 5x5 AVX2 spills accumulators and still
// takes 0.61x the portable time); false: the caller takes the portable path.
template <typename T>
bool dw_wgrad(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (s.KH == 3 && s.KW == 3) return dw_wgrad_sized<T, 3, 3>(s, dy, x, dw, nthreads), true;
  if (s.KH == 5 && s.KW == 5) return dw_wgrad_sized<T, 5, 5>(s, dy, x, dw, nthreads), true;
  return false;
}
