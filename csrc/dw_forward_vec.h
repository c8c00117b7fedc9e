// The depthwise forward's vector kernel for dense (stride and dilation 1) 3x3 and 5x5 layers, written
// once against a traits type and compiled once per instruction set: conv_depthwise.cpp includes
// this file inside a `#pragma GCC target` region and a namespace of its own for each, where `Vec<T>`
// (the vector of T and its operations) and `kRegisters` (how many vector registers there are) are
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

