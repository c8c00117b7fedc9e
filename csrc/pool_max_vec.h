// The max-pooling forward's vector kernels, written once with GCC's vector extensions and compiled
// once per instruction set: pool.cpp includes this file inside a `#pragma GCC target` region and a
// namespace of its own for each (avx512: 64-byte vectors, avx2: 32-byte), with kVectorBytes defined
// there. So it includes nothing itself (an include here would land inside that namespace); what it
// uses (PoolShape, InteriorCols, max_window, prefetch_rows_ahead, index_at) comes from pool.cpp.
// A region, not target_clones: GCC lowers vector compares lane by lane, with branches, in templates
// that are only inlined into a clone.

// L output columns at once (one vector of T, or half of one for narrow planes): lane l of tap (kh, kw) reads
// xs[l*SW] with xs = row ih, column ow0*sw - pad + kw*dil (SW = 0: the stride at run time).
// Each lane keeps its max and the offset of its winner from the window's origin, off = kh*dil_h*W
// + kw*dil_w (one scalar per tap for every lane), and applies the scalar scan's rule lane-wise.
template <typename T, int SW, int L>
__attribute__((always_inline)) inline void max_cols_vec(const PoolShape& s, const T* xp, index_t oh, index_t kh0,
                                                        index_t kh1, index_t ow0, T* y, std::int64_t* indices) {
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;  // the lanes of a compare
  typedef T V __attribute__((vector_size(L * sizeof(T))));
  typedef I VI __attribute__((vector_size(L * sizeof(I))));
  const index_t sw = SW ? SW : s.stride_w, ih0 = oh * s.stride_h - s.pad_h, origin = ih0 * s.W + ow0 * sw - s.pad_w;
  V best{};
  VI where{};
  for (index_t kh = kh0; kh < kh1; ++kh) {
    const T* row = xp + (origin + kh * s.dil_h * s.W);  // in the image: kh >= kh0
    for (index_t kw = 0; kw < s.KW; ++kw) {
      const T* xs = row + kw * s.dil_w;
      V v;
      if (SW == 1) {
        std::memcpy(&v, xs, sizeof(V));
      } else if (SW == 2) {  // lanes 0..L/2-1 from xs[0..L), the rest from xs[L-1..2L-1): never past xs[2L-2]
        V a, b;
        std::memcpy(&a, xs, sizeof(V));
        std::memcpy(&b, xs + L - 1, sizeof(V));
        VI even;
        for (int l = 0; l < L; ++l) even[l] = l < L / 2 ? 2 * l : 2 * l + 1;
        v = __builtin_shuffle(a, b, even);
      } else {
        for (int l = 0; l < L; ++l) v[l] = xs[l * sw];
      }
      const I off = static_cast<I>(kh * s.dil_h * s.W + kw * s.dil_w);
      if (kh == kh0 && kw == 0) {
        best = v;
        where = VI{} + off;
      } else {
        // selects as bit masks: GCC turns a vector ?: into one branch per lane
        const VI take = (v > best) | (v != v);
        best = reinterpret_cast<V>((take & reinterpret_cast<VI>(v)) | (~take & reinterpret_cast<VI>(best)));
        where = (take & off) | (~take & where);
      }
    }
  }
  std::memcpy(y + ow0, &best, sizeof(V));
  if (indices)
    for (int l = 0; l < L; ++l) indices[ow0 + l] = origin + l * sw + where[l];
}

// One (n, c) plane: vectors of L columns over the interior (the last vector of a row ends at the
// interior's end, overlapping its predecessor: the overlap is recomputed to the same values), the
// scalar scan for the border columns and for rows or planes too narrow for one vector.
template <typename T, int SW, int L>
__attribute__((always_inline)) inline void max_plane_impl(const PoolShape& s, const InteriorCols& ic, const T* xp,
                                                          T* y, std::int64_t* indices) {
  const bool vectors = ic.hi - ic.lo >= L && s.H * s.W < (index_t(1) << 31);  // offsets fit I (int32 for fp32)
  for (index_t oh = 0; oh < s.OH; ++oh) {
    T* yr = y + oh * s.OW;
    std::int64_t* ir = index_at(indices, oh * s.OW);
    prefetch_rows_ahead(s, xp, oh);
    index_t kh0 = 0, kh1 = s.KH;  // the taps whose row is in the image
    while (kh0 < s.KH && oh * s.stride_h - s.pad_h + kh0 * s.dil_h < 0) ++kh0;
    while (kh1 > kh0 && oh * s.stride_h - s.pad_h + (kh1 - 1) * s.dil_h >= s.H) --kh1;
    const index_t lo = vectors && kh0 < kh1 ? ic.lo : s.OW, hi = vectors && kh0 < kh1 ? ic.hi : s.OW;
    for (index_t ow = 0; ow < lo; ++ow) max_window(s, xp, oh, ow, yr + ow, index_at(ir, ow));
    for (index_t ow0 = lo; ow0 < hi; ow0 += L) max_cols_vec<T, SW, L>(s, xp, oh, kh0, kh1, min_i(ow0, hi - L), yr, ir);
    for (index_t ow = hi; ow < s.OW; ++ow) max_window(s, xp, oh, ow, yr + ow, index_at(ir, ow));
  }
}

template <typename T, int L>
__attribute__((always_inline)) inline void max_plane_stride(const PoolShape& s, const InteriorCols& ic, const T* xp,
                                                            T* y, std::int64_t* indices) {
  // the common strides get their own loads (a strided lane-by-lane gather is several times slower)
  if (s.stride_w == 1) return max_plane_impl<T, 1, L>(s, ic, xp, y, indices);
  if (s.stride_w == 2) return max_plane_impl<T, 2, L>(s, ic, xp, y, indices);
  max_plane_impl<T, 0, L>(s, ic, xp, y, indices);
}

template <typename T>
__attribute__((always_inline)) inline void max_plane_dispatch(const PoolShape& s, const InteriorCols& ic, const T* xp,
                                                              T* y, std::int64_t* indices) {
  // half vectors when the interior is narrower than a whole one (ResNet-20/CIFAR planes: 15 of 16
  // output columns; all scalar before, 2.7x slower than the Cython backend's loop)
  constexpr int L = kVectorBytes / sizeof(T);
  if (ic.hi - ic.lo >= L) return max_plane_stride<T, L>(s, ic, xp, y, indices);
  max_plane_stride<T, L / 2>(s, ic, xp, y, indices);
}

// One (n, c) plane of the forward, indices optional (null: none stored).
inline void max_plane(const PoolShape& s, const InteriorCols& ic, const float* xp, float* y, std::int64_t* indices) {
  max_plane_dispatch(s, ic, xp, y, indices);
}
inline void max_plane(const PoolShape& s, const InteriorCols& ic, const double* xp, double* y, std::int64_t* indices) {
  max_plane_dispatch(s, ic, xp, y, indices);
}
