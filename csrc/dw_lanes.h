// Depthwise convolution with the channels in the vector lanes, as PyTorch's and oneDNN's
// channels-last kernels run it: L channels of one image at a time (L = Vec<T>::L), their planes
// transposed into a zero-padded buffer of pixels whose L lanes are the L channels, so that every
// output pixel of every tap is one vector FMA whatever the stride, the dilation or the plane's
// width, with no per-plane or per-row set-up; the outputs are transposed back in registers as they
// are stored. The plane-by-plane kernels (dw_vec.h, conv_depthwise.cpp) run a plane's rows in
// vectors: on MobileNetV2's 8x8 and 4x4 planes most of a vector lies past a row, and a strided
// layer's columns are gathered lane by lane (they ran at 0.10-0.35x PyTorch channels_last's speed
// there, 2-core AMD EPYC Zen 5, AVX-512). The transposes cost about what the FMAs do at 3x3 and
// stride 1, so large planes stay with the plane kernels (conv_depthwise.cpp chooses: dw_lanes_pays).
// conv_depthwise.cpp includes this file after dw_vec.h in each target region's namespace (see there).

// The L x L transpose of r[] in registers (lane j of r[i] -> lane i of r[j]): log2(L) stages of
// two-source shuffles; at block distance D, rows i and i + D exchange their D-lane blocks (the
// 2x2 block transpose, applied at every scale). GCC picks the instruction of each pattern.
template <int L, int D>
constexpr int lanes_pick(int j, bool high) {  // the lane of (a, b) that lane j of the result takes
  const int group = j / (2 * D) * (2 * D), k = j % (2 * D), from = high ? D : 0;
  return k < D ? group + from + k : L + group + from + k - D;
}

template <typename V, int L, int D, std::size_t... J>
inline void lanes_stage(V* r, std::index_sequence<J...>) {
  for (int i = 0; i < L; ++i)
    if (!(i & D)) {
      const V a = r[i], b = r[i + D];
      r[i] = __builtin_shufflevector(a, b, lanes_pick<L, D>(J, false)...);
      r[i + D] = __builtin_shufflevector(a, b, lanes_pick<L, D>(J, true)...);
    }
}

template <typename T, int D = Vec<T>::L / 2>
__attribute__((always_inline)) inline void lanes_transpose(typename Vec<T>::V* r) {
  constexpr int L = Vec<T>::L;
  lanes_stage<typename Vec<T>::V, L, D>(r, std::make_index_sequence<L>{});
  if constexpr (D > 1) lanes_transpose<T, D / 2>(r);
}

// Where a lanes forward of shape u finds its pixels. Its buffer holds Hp x Wp pixels of L lanes,
// zero where no source pixel lies; the source (Hs x Ws pixels: an input plane, or for a strided
// dgrad dy, spread on the stride's lattice) has pixel (i, j) at (pad_t + i*step_h, pad_l +
// j*step_w). Offsets are in elements (pixels times L).
template <typename T>
struct DwLanesPlan {
  static constexpr int L = Vec<T>::L;
  index_t Hp, Wp, P;                  // the buffer's pixels; u's output pixels
  std::vector<index_t> src_at;        // [Hs*Ws]: a source pixel's offset in the buffer, -1: past it
  std::vector<index_t> out_at;        // [P rounded up to L]: an output pixel's tap (0, 0); 0 past P
  std::vector<index_t> tap_at;        // [KH*KW]: tap (kh, kw) from there
  std::vector<std::uint32_t> taps_in; // [P]: bit t set where tap t reads a source pixel

  DwLanesPlan(const ConvShape& u, index_t Hs, index_t Ws, index_t step_h, index_t step_w)
      : Hp((u.OH - 1) * u.stride_h + (u.KH - 1) * u.dil_h + 1),
        Wp((u.OW - 1) * u.stride_w + (u.KW - 1) * u.dil_w + 1),
        P(u.OH * u.OW), src_at(Hs * Ws, -1), out_at(round_up(P, L), 0), tap_at(u.KH * u.KW), taps_in(P) {
    std::vector<bool> holds(Hp * Wp, false);  // buffer pixels that hold a source pixel
    for (index_t i = 0; i < Hs; ++i)
      for (index_t j = 0; j < Ws; ++j) {
        const index_t r = u.pad_t + i * step_h, c = u.pad_l + j * step_w;
        if (r >= 0 && r < Hp && c >= 0 && c < Wp) src_at[i * Ws + j] = (r * Wp + c) * L, holds[r * Wp + c] = true;
      }
    for (index_t kh = 0; kh < u.KH; ++kh)
      for (index_t kw = 0; kw < u.KW; ++kw) tap_at[kh * u.KW + kw] = (kh * u.dil_h * Wp + kw * u.dil_w) * L;
    for (index_t oh = 0; oh < u.OH; ++oh)
      for (index_t ow = 0; ow < u.OW; ++ow) {
        const index_t at = oh * u.stride_h * Wp + ow * u.stride_w;
        out_at[oh * u.OW + ow] = at * L;
        std::uint32_t in = 0;
        for (index_t t = 0; t < u.KH * u.KW; ++t)
          if (holds[at + tap_at[t] / L]) in |= std::uint32_t(1) << t;
        taps_in[oh * u.OW + ow] = in;
      }
  }
};

// r[l] = pixels [p0, p0 + L) of plane l (zeros past `pixels`, and in the lanes from `lanes` on).
template <typename T>
__attribute__((always_inline)) inline void lanes_load(const T* const* plane, index_t lanes, index_t p0,
                                                      index_t pixels, typename Vec<T>::V* r) {
  using A = Vec<T>;
  const index_t n = min_i(A::L, pixels - p0);
  const typename A::M m = A::first(n);
#pragma GCC unroll 16
  for (int l = 0; l < A::L; ++l) r[l] = l >= lanes ? A::zero() : n == A::L ? A::load(plane[l] + p0) : A::load(m, plane[l] + p0);
}

// The source planes (plane[l], l < lanes) transposed into the buffer at plan.src_at.
template <typename T>
void lanes_pack(const DwLanesPlan<T>& plan, const T* const* plane, index_t lanes, T* buf) {
  using A = Vec<T>;
  const index_t pixels = index_t(plan.src_at.size());
  for (index_t p0 = 0; p0 < pixels; p0 += A::L) {
    typename A::V r[A::L];
    lanes_load(plane, lanes, p0, pixels, r);
    lanes_transpose<T>(r);
    const index_t n = min_i(A::L, pixels - p0);
    for (index_t j = 0; j < n; ++j)
      if (plan.src_at[p0 + j] >= 0) A::store(buf + plan.src_at[p0 + j], r[j]);
  }
}

// The weights of channel block cb as vectors: lane l of wl[t] is tap t of channel cb*L + l (the
// taps flipped where `flip`; zero past C).
template <typename T>
void lanes_weights(const T* w, index_t C, index_t KK, bool flip, T* wl) {
  constexpr int L = Vec<T>::L;
  for (index_t cb = 0; cb < ceil_div(C, L); ++cb)
    for (index_t t = 0; t < KK; ++t)
      for (index_t l = 0; l < L; ++l) {
        const index_t c = cb * L + l;
        wl[(cb * KK + t) * L + l] = c < C ? w[c * KK + (flip ? KK - 1 - t : t)] : T(0);
      }
}

// A depthwise forward of shape u in lanes: its source planes (plane n * C_src + co / mult of
// `src` for output channel co, Hs x Ws pixels each, placed by the plan) into the output planes of
// y, L output channels of one image per unit, units spread statically over the threads (each
// output the same sum on any thread count: bias, then the taps in order).
template <typename T>
void lanes_forward(const ConvShape& u, const DwLanesPlan<T>& plan, const T* src, index_t C_src, index_t mult,
                   const T* wl, const T* b, T* y, int nthreads) {
  using A = Vec<T>;
  using V = typename A::V;
  constexpr int L = A::L;
  const index_t KK = u.KH * u.KW, blocks = ceil_div(u.C_out, L), P = plan.P;
  const index_t src_pixels = index_t(plan.src_at.size()), buf_elems = plan.Hp * plan.Wp * L;
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> buf(buf_elems);  // per thread; its padding (and a spread's lattice gaps) stays zero
    fill_zero(buf.data(), buf_elems);
#pragma omp for schedule(static)
    for (index_t unit = 0; unit < u.N * blocks; ++unit) {
      const index_t n = unit / blocks, c0 = unit % blocks * L, lanes = min_i(L, u.C_out - c0);
      const T* plane[L];
      for (index_t l = 0; l < lanes; ++l) plane[l] = src + (n * C_src + (c0 + l) / mult) * src_pixels;
      lanes_pack(plan, plane, lanes, buf.data());
      const T* wb = wl + c0 * KK;
      const V bias = b ? A::load(A::first(lanes), b + c0) : A::zero();
      T* yb = y + (n * u.C_out + c0) * P;
      for (index_t o0 = 0; o0 < P; o0 += L) {
        V acc[L];
        // JB pixels at a time, over all taps: their JB pointers stay in general registers (all 16
        // at once, tap by tap, went through vector registers: 1.10-1.48x the time, AVX-512)
        constexpr int JB = 8 < L ? 8 : L;
#pragma GCC unroll 2
        for (int j0 = 0; j0 < L; j0 += JB) {
          const T* at[JB];  // where each output pixel's taps start
#pragma GCC unroll 8
          for (int j = 0; j < JB; ++j) at[j] = buf.data() + plan.out_at[o0 + j0 + j], acc[j0 + j] = bias;
          for (index_t t = 0; t < KK; ++t) {
            const V wt = A::load(wb + t * L);
            const index_t off = plan.tap_at[t];
#pragma GCC unroll 8
            for (int j = 0; j < JB; ++j) acc[j0 + j] = A::fmadd(wt, A::load(at[j] + off), acc[j0 + j]);
          }
        }
        lanes_transpose<T>(acc);  // acc[l]: channel c0 + l's pixels [o0, o0 + L)
        const index_t n_out = min_i(L, P - o0);
        if (n_out == L) {
          for (index_t l = 0; l < lanes; ++l) A::store(yb + l * P + o0, acc[l]);
        } else {
          const typename A::M m = A::first(n_out);
          for (index_t l = 0; l < lanes; ++l) A::store(m, yb + l * P + o0, acc[l]);
        }
      }
    }
  }
}

// The depthwise forward of s in lanes (any kernel, stride, dilation, padding, channel multiplier).
template <typename T>
void dw_lanes_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  const DwLanesPlan<T> plan(s, s.H, s.W, 1, 1);
  Buffer<T> wl(round_up(s.C_out, Vec<T>::L) * s.KH * s.KW);
  lanes_weights(w, s.C_out, s.KH * s.KW, false, wl.data());
  lanes_forward(s, plan, x, s.C_in, s.C_out / s.groups, wl.data(), b, y, nthreads);
}

// A strided depthwise dgrad (one output channel per group) in lanes: the stride-1 forward u of dy
// spread on the stride's lattice with the flipped kernel (see depthwise_dgrad_spread, which
// checks that it applies and builds u).
template <typename T>
void dw_lanes_dgrad_spread(const ConvShape& s, const ConvShape& u, const T* dy, const T* w, T* dx, int nthreads) {
  const DwLanesPlan<T> plan(u, s.OH, s.OW, s.stride_h, s.stride_w);
  Buffer<T> wl(round_up(s.C_out, Vec<T>::L) * s.KH * s.KW);
  lanes_weights(w, s.C_out, s.KH * s.KW, true, wl.data());
  lanes_forward(u, plan, dy, s.C_out, 1, wl.data(), static_cast<const T*>(nullptr), dx, nthreads);
}

// The depthwise wgrad of s in lanes with KK taps (KK sums in registers): per channel block, its
// images in order, each image's output pixels in order, every tap that reads an input pixel (taps
// in the padding are skipped, not multiplied by zeros: an Inf in dy stays out of them, as in the
// reference; zero padding and a check of dy for Inf and NaN, to run the border pixels' taps
// unbranched, measured 0.95-1.09x this, within its null control). Blocks spread statically over
// the threads: the same bits on any thread count.
template <typename T, int KK>
void dw_lanes_wgrad(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  using A = Vec<T>;
  using V = typename A::V;
  constexpr int L = A::L;
  constexpr std::uint32_t all_in = (std::uint64_t(1) << KK) - 1;
  const DwLanesPlan<T> plan(s, s.H, s.W, 1, 1);
  const index_t blocks = ceil_div(s.C_out, L), P = plan.P, HW = s.H * s.W, mult = s.C_out / s.groups;
  index_t tap_at[KK];  // a local copy (the plan's were reloaded at every FMA)
  for (int t = 0; t < KK; ++t) tap_at[t] = plan.tap_at[t];
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> buf(plan.Hp * plan.Wp * L);  // per thread; no tap reads its padding
#pragma omp for schedule(static)
    for (index_t cb = 0; cb < blocks; ++cb) {
      const index_t c0 = cb * L, lanes = min_i(L, s.C_out - c0);
      V a[KK];
#pragma GCC unroll 25
      for (int t = 0; t < KK; ++t) a[t] = A::zero();
      for (index_t n = 0; n < s.N; ++n) {
        const T* plane[L];
        for (index_t l = 0; l < lanes; ++l) plane[l] = x + (n * s.C_in + (c0 + l) / mult) * HW;
        lanes_pack(plan, plane, lanes, buf.data());
        for (index_t l = 0; l < lanes; ++l) plane[l] = dy + (n * s.C_out + c0 + l) * P;
        for (index_t o0 = 0; o0 < P; o0 += L) {
          V d[L];  // d[j]: dy of pixel o0 + j, its L channels
          lanes_load(plane, lanes, o0, P, d);
          lanes_transpose<T>(d);
          for (index_t j = 0; j < min_i(L, P - o0); ++j) {
            const T* at = buf.data() + plan.out_at[o0 + j];
            const std::uint32_t in = plan.taps_in[o0 + j];
            if (in == all_in) {
#pragma GCC unroll 25
              for (int t = 0; t < KK; ++t) a[t] = A::fmadd(d[j], A::load(at + tap_at[t]), a[t]);
            } else {
#pragma GCC unroll 25
              for (int t = 0; t < KK; ++t)
                if (in >> t & 1) a[t] = A::fmadd(d[j], A::load(at + tap_at[t]), a[t]);
            }
          }
        }
      }
      alignas(64) T sums[KK * L];
#pragma GCC unroll 25
      for (int t = 0; t < KK; ++t) A::store(sums + t * L, a[t]);
      for (index_t l = 0; l < lanes; ++l)
        for (int t = 0; t < KK; ++t) dw[(c0 + l) * KK + t] = sums[t * L + l];
    }
  }
}

// The wgrad in lanes by its count of taps, 9 or 25 (dw_lanes_pays admits no other).
template <typename T>
void dw_lanes_wgrad_taps(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (s.KH * s.KW == 9) return dw_lanes_wgrad<T, 9>(s, dy, x, dw, nthreads);
  dw_lanes_wgrad<T, 25>(s, dy, x, dw, nthreads);
}
