// Winograd F(m x m, 3x3), m = 2, 3 or 4; see winograd.h for the algebra.
//
// Everything below is written once for the output tile m (a template on Tile<m>): the tiles differ
// only in their 1-D transforms (Tile<2>, Tile<3>, Tile<4>) and in the sizes that follow from m:
// windows of a = m + 2, a*a GEMMs (16, 25 or 36), planes split into m row phases.
//
// Images are taken a chunk at a time. Each chunk is first copied, zero-padded, into planes of
// m*(TH + 1) x m*(TW + 1) per channel (TH x TW tiles per image) in which every tile's a x a window
// lies whole (see Planes). The chunk's GEMM columns are then cut into blocks of `nt`, one block per
// thread at a time, each in three steps on that thread's buffers:
//   1. input transform: V[xi] (C_in x nt, packed as the micro-kernel reads B) from the windows;
//   2. a*a GEMMs M[xi] (C_out x nt) = U[xi] V[xi], U (the transformed weight, packed for the
//      micro-kernel once per call) shared by all threads;
//   3. output transform: the m x m outputs of each tile and channel from M, + bias, into y.
// Where U is large, the team runs each (wide) block together instead, the GEMMs and the output
// transform split by U's row panels (see kWideUBytes). Both transforms are vector loops over
// consecutive GEMM columns. Wide images (along_rows) make a column of every tile start along the
// padded rows, one junk column per tile row included, so that consecutive columns' windows are m
// elements apart and their outputs m apart in y: plain vector loads and stores. Narrow ones, where
// the junk would be 20% of the GEMM, number only their tiles and reach windows and outputs through
// tables of offsets; their outputs go into padded output planes (m*TH x m*TW) cropped into y after
// the chunk, unless m divides OH and OW.
//
// wgrad (winograd_backward_weight) runs the same way in transpose: per block, V of x's windows and
// D = A dy A^T of dy's m x m tiles, then a*a GEMMs S[xi] += D[xi] V[xi]^T over the block's tiles,
// block after block in order; at the end dW = G^T S G. Where S is small the batch's two halves run
// apart, one thread each, into two S added at the end; otherwise the threads split each block's
// transforms by channel and its GEMMs by xi (see kHalfSumBytes).
//
// Workspace: shared, U (a*a x C_in x C_out, rows rounded up to MR), the padded input planes of a
// chunk and, for the tables when m does not divide OH and OW, its padded output planes (a chunk
// holds at most kChunkBytes of either, or one image); per thread, V and M of one block (a*a x (C_in
// + C_out) x nt, see block_tiles; shared in wide blocks, kWideBytes) and two offset tables of nt
// entries. wgrad: per half (or for all), S (a*a x C_out x C_in), a chunk of padded x and dy planes
// (kChunkBytes for all halves, or one image each), V and D of one block (a*a x (C_in + C_out) x
// 128..512 tiles, see kWgradBlockBytes) and its tables; per thread, one packed B block.
#include "winograd.h"

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gemm.h"
#include "lanes.h"

namespace fastconv {
namespace {

// ---------------------------------------------------------------------------------------------
// the tiles: 1-D transforms, each reading its input through in(k) and handing element k of its
// result to out(k, value)
// ---------------------------------------------------------------------------------------------

template <int M, typename T>
struct Tile;

// F(2, 3), points 0, 1, -1, inf: every entry of B, G and A is 0, +-1 or +-1/2, so small-integer
// data stays exact (quarters at most in U).
template <typename T>
struct Tile<2, T> {
  static constexpr int m = 2, a = 4;
  static constexpr T denominator = T(1);
  template <class In, class Out>
  static void input(In d, Out o) {  // B^T d
    o(0, d(0) - d(2));
    o(1, d(1) + d(2));
    o(2, d(2) - d(1));
    o(3, d(1) - d(3));
  }
  template <class In, class Out>
  static void weight(In g, Out o) {  // G g
    const auto g0 = g(0), g1 = g(1), g2 = g(2);
    o(0, g0);
    o(1, T(0.5) * (g0 + g1 + g2));
    o(2, T(0.5) * (g0 - g1 + g2));
    o(3, g2);
  }
  template <class In, class Out>
  static void output(In s, Out o) {  // A^T s
    const auto s1 = s(1), s2 = s(2);
    o(0, s(0) + s1 + s2);
    o(1, s1 - s2 - s(3));
  }
  template <class In, class Out>
  static void dy(In e, Out o) {  // A e (wgrad)
    const auto e0 = e(0), e1 = e(1);
    o(0, e0);
    o(1, e0 + e1);
    o(2, e0 - e1);
    o(3, -e1);
  }
  template <class In, class Out>
  static void weight_grad(In s, Out o) {  // G^T s (wgrad)
    const auto s1 = s(1), s2 = s(2);
    o(0, s(0) + T(0.5) * (s1 + s2));
    o(1, T(0.5) * (s1 - s2));
    o(2, T(0.5) * (s1 + s2) + s(3));
  }
};

// F(3, 3) on points 0, 1/2, 2, -1 and inf: of the sets of 0 and three of +-{1/4, 1/2, 3/4, 1, 5/4,
// 3/2, 2, 5/2, 3} the least error factor (see Tile<4>): 14 against 34 with 1, -1, 2. Every point
// is dyadic, so are B^T and A; G's rows hold ninths, so they are kept times 9 (integers), and the
// 2-D results of the output transform (and of wgrad's G^T S G) are divided by 81 at the end: on
// small integers every step but that division is exact, and it rounds once, so the results are
// the exact ones. 25 products per 9 outputs (2.78 against F(2x2)'s 4).
//   B^T = [1 -3/2 -3/2    1 0]   9G = [ 9  0  0]   A^T = [1   1 1  1 0]
//         [0   -2   -1    1 0]        [-8 -4 -2]         [0 1/2 2 -1 0]
//         [0 -1/2  1/2    1 0]        [ 1  2  4]         [0 1/4 4  1 1]
//         [0    1 -5/2    1 0]        [-2  2 -2]
//         [0    1 -3/2 -3/2 1]        [ 0  0  9]
template <typename T>
struct Tile<3, T> {
  static constexpr int m = 3, a = 5;
  static constexpr T denominator = T(81);  // of the 2-D output and weight-gradient transforms
  template <class In, class Out>
  static void input(In d, Out o) {  // B^T d
    const auto d1 = d(1), d2 = d(2), d3 = d(3);
    o(0, d(0) + d3 - T(1.5) * (d1 + d2));
    o(1, d3 - d2 - T(2) * d1);
    o(2, T(0.5) * (d2 - d1) + d3);
    o(3, d1 + d3 - T(2.5) * d2);
    o(4, d1 + d(4) - T(1.5) * (d2 + d3));
  }
  template <class In, class Out>
  static void weight(In g, Out o) {  // 9 G g
    const auto g0 = g(0), g1 = g(1), g2 = g(2);
    o(0, T(9) * g0);
    o(1, T(-2) * (T(4) * g0 + T(2) * g1 + g2));
    o(2, g0 + T(2) * g1 + T(4) * g2);
    o(3, T(-2) * (g0 - g1 + g2));
    o(4, T(9) * g2);
  }
  template <class In, class Out>
  static void output(In s, Out o) {  // A^T s
    const auto s1 = s(1), s2 = s(2), s3 = s(3);
    o(0, s(0) + s1 + s2 + s3);
    o(1, T(0.5) * s1 + T(2) * s2 - s3);
    o(2, T(0.25) * s1 + T(4) * s2 + s3 + s(4));
  }
  template <class In, class Out>
  static void dy(In e, Out o) {  // A e (wgrad)
    const auto e0 = e(0), e1 = e(1), e2 = e(2);
    o(0, e0);
    o(1, e0 + T(0.5) * e1 + T(0.25) * e2);
    o(2, e0 + T(2) * e1 + T(4) * e2);
    o(3, e0 - e1 + e2);
    o(4, e2);
  }
  template <class In, class Out>
  static void weight_grad(In s, Out o) {  // 9 G^T s (wgrad)
    const auto s1 = s(1), s2 = s(2), s3 = s(3);
    o(0, T(9) * s(0) - T(8) * s1 + s2 - T(2) * s3);
    o(1, T(2) * (s2 + s3 - T(2) * s1));
    o(2, T(2) * (T(2) * s2 - s1 - s3) + T(9) * s(4));
  }
};

// F(4, 3) on points 0, 1/2, 1, -1, -2 and inf: in float32 the error is dominated by the GEMMs' sums
// over the channels, which the output transform magnifies by about sum over xi of
// A^T[i][xi]^2 |G_xi|^2 |B^T_xi|^2 (rows xi of G and B^T); that factor is 31 here against 94 with
// Lavin & Gray's +-1, +-2 (measured, 0.28-0.35x the error), and 26 for the least of the sets of 0
// and +-{1/4, 1/2, 3/4, 1, 5/4, 3/2, 2, 5/2, 3, 4} (+-3/4, +-3/2), whose G holds 1/81 and 1/243 and
// so rounds small integers. Here every point is dyadic, so are B^T and A; G's rows hold fifteenths
// and thirds, so they are kept times 15 (integers), and the 2-D results of the output transform (and
// of wgrad's G^T S G) are divided by 225 at the end: on small integers every step but that division
// is exact (their magnitudes stay far inside float32's 24 bits), and it rounds once. Rows 1 and 3 of
// B^T and G are negated (the same products).
//   B^T = [1 -3/2   -2  3/2  1 0]   15G = [15  0  0]   A^T = [1   1 1  1  1 0]
//         [0    2    1   -2 -1 0]         [16  8  4]         [0 1/2 1 -1 -2 0]
//         [0   -1  1/2  5/2  1 0]         [ 5  5  5]         [0 1/4 1  1  4 0]
//         [0   -1  5/2 -1/2 -1 0]         [ 5 -5  5]         [0 1/8 1 -1 -8 1]
//         [0  1/2   -1 -1/2  1 0]         [ 1 -2  4]
//         [0    1 -3/2   -2 3/2 1]        [ 0  0 15]
template <typename T>
struct Tile<4, T> {
  static constexpr int m = 4, a = 6;
  static constexpr T denominator = T(225);  // of the 2-D output and weight-gradient transforms
  template <class In, class Out>
  static void input(In d, Out o) {  // B^T d
    const auto d1 = d(1), d2 = d(2), d3 = d(3), d4 = d(4), u = d1 - d3, v = d4 - d2;
    o(0, d(0) + v - d2 - T(1.5) * u);
    o(1, T(2) * u - v);
    o(2, d4 - d1 + T(0.5) * d2 + T(2.5) * d3);
    o(3, T(2.5) * d2 - d1 - d4 - T(0.5) * d3);
    o(4, T(0.5) * u + v);
    o(5, d1 + d(5) - T(2) * d3 + T(1.5) * v);
  }
  template <class In, class Out>
  static void weight(In g, Out o) {  // 15 G g
    const auto g0 = g(0), g1 = g(1), g2 = g(2), e = g0 + g2;
    o(0, T(15) * g0);
    o(1, T(4) * (T(4) * g0 + T(2) * g1 + g2));
    o(2, T(5) * (e + g1));
    o(3, T(5) * (e - g1));
    o(4, g0 - T(2) * g1 + T(4) * g2);
    o(5, T(15) * g2);
  }
  template <class In, class Out>
  static void output(In s, Out o) {  // A^T s
    const auto s1 = s(1), s4 = s(4), p23 = s(2) + s(3), m23 = s(2) - s(3);
    o(0, s(0) + s1 + p23 + s4);
    o(1, T(0.5) * s1 + m23 - T(2) * s4);
    o(2, T(0.25) * s1 + p23 + T(4) * s4);
    o(3, T(0.125) * s1 + m23 - T(8) * s4 + s(5));
  }
  template <class In, class Out>
  static void dy(In e, Out o) {  // A e (wgrad)
    const auto e0 = e(0), e1 = e(1), e2 = e(2), e3 = e(3), p = e0 + e2, q = e1 + e3;
    o(0, e0);
    o(1, e0 + T(0.5) * e1 + T(0.25) * e2 + T(0.125) * e3);
    o(2, p + q);
    o(3, p - q);
    o(4, e0 - T(2) * e1 + T(4) * e2 - T(8) * e3);
    o(5, e3);
  }
  template <class In, class Out>
  static void weight_grad(In s, Out o) {  // 15 G^T s (wgrad)
    const auto s1 = s(1), s4 = s(4), p23 = s(2) + s(3), m23 = s(2) - s(3);
    o(0, T(15) * s(0) + T(16) * s1 + T(5) * p23 + s4);
    o(1, T(8) * s1 + T(5) * m23 - T(2) * s4);
    o(2, T(4) * s1 + T(5) * p23 + T(4) * s4 + T(15) * s(5));
  }
};

// The 2-D result v of an output or weight-gradient transform, divided by the tile's denominator
// (F(3x3)'s 36) once at the end.
template <class W, class X>
__attribute__((always_inline)) inline X finish(X v) {
  if constexpr (W::denominator != 1) {
    return v / W::denominator;
  } else {
    return v;
  }
}

// The 2-D form of a 1-D transform f (In -> Out elements): Z = F X F^T, with X's element (r, j)
// read as src(r, j) and Z's element (i, k) handed to dst(i, k, value); f down X's columns, then
// along the rows of the result.
template <typename T, int In, int Out, class F, class Src, class Dst>
__attribute__((always_inline)) inline void transform_2d(F f, Src src, Dst dst) {
  T t[Out][In];  // F X
  for (int j = 0; j < In; ++j)
    f([&](int r) { return src(r, j); }, [&](int i, T v) { t[i][j] = v; });
  for (int i = 0; i < Out; ++i)  // (F X) F^T, row i
    f([&](int r) { return t[i][r]; }, [&](int k, T v) { dst(i, k, v); });
}

// ---------------------------------------------------------------------------------------------
// vectors of tiles: the transforms of L consecutive tiles at once, lane l for tile l
// ---------------------------------------------------------------------------------------------

// Vectors of L tiles (lanes.h) and the shuffles that move between a run of tiles' m-element rows
// (lane t*m + k: element k of tile t) and one vector per element k. Left to the vectoriser, the
// strided loads and stores of `#pragma omp simd` came out as 2-lane vectors filled by scalar
// inserts: the output transform took 30% of ResNet-50's 3x3x64 forward at 56x56 (the GEMMs 43%).

// m = 3: lane t of vector K of a run of three vectors a, b, c (element 3t + K of a|b|c): from a|b
// where 3t + K < 2L, then from c over the rest; two two-source shuffles with constant indices.
template <typename T, int K, std::size_t... t>
__attribute__((always_inline)) inline typename Lanes<T>::V split_3(typename Lanes<T>::V a, typename Lanes<T>::V b,
                                                                   typename Lanes<T>::V c, std::index_sequence<t...>) {
  using I = typename Lanes<T>::I;
  constexpr int L = Lanes<T>::L;
  constexpr I from_ab{(3 * int(t) + K < 2 * L ? 3 * int(t) + K : 0)...};
  constexpr I from_c{(3 * int(t) + K < 2 * L ? int(t) : 3 * int(t) + K - L)...};
  return __builtin_shuffle(__builtin_shuffle(a, b, from_ab), c, from_c);
}

// The inverse: lane u of vector J of the run is element e = J*L + u, element e % 3 of tile e / 3.
template <typename T, int J, std::size_t... u>
__attribute__((always_inline)) inline typename Lanes<T>::V join_3(typename Lanes<T>::V o0, typename Lanes<T>::V o1,
                                                                  typename Lanes<T>::V o2, std::index_sequence<u...>) {
  using I = typename Lanes<T>::I;
  constexpr int L = Lanes<T>::L;
  constexpr I from_01{((J * L + int(u)) % 3 < 2 ? (J * L + int(u)) % 3 * L + (J * L + int(u)) / 3 : 0)...};
  constexpr I from_2{((J * L + int(u)) % 3 < 2 ? int(u) : L + (J * L + int(u)) / 3)...};
  return __builtin_shuffle(__builtin_shuffle(o0, o1, from_01), o2, from_2);
}

// The rows of L tiles m apart, m*L elements from p: d[j], lane t = p[m*t + j], for j < m (the m
// vectors of the run), by one (m = 2) or two (m = 4) rounds of even/odd splits, or (m = 3) two
// shuffles each.
template <int M, typename T>
__attribute__((always_inline)) inline void split_lanes(const T* p, typename Lanes<T>::V (&d)[M]) {
  using Ln = Lanes<T>;
  constexpr int L = Ln::L;
  if constexpr (M == 3) {
    const auto a = load_lanes(p), b = load_lanes(p + L), c = load_lanes(p + 2 * L);
    d[0] = split_3<T, 0>(a, b, c, std::make_index_sequence<L>{});
    d[1] = split_3<T, 1>(a, b, c, std::make_index_sequence<L>{});
    d[2] = split_3<T, 2>(a, b, c, std::make_index_sequence<L>{});
  } else if constexpr (M == 2) {
    const auto a = load_lanes(p), b = load_lanes(p + L);
    d[0] = Ln::even(a, b);
    d[1] = Ln::odd(a, b);
  } else {
    static_assert(M == 4, "tiles of 2, 3 or 4");
    const auto a = load_lanes(p), b = load_lanes(p + L), c = load_lanes(p + 2 * L), e = load_lanes(p + 3 * L);
    const auto ev = Ln::even(a, b), od = Ln::odd(a, b), ev2 = Ln::even(c, e), od2 = Ln::odd(c, e);
    d[0] = Ln::even(ev, ev2);  // elements 0 mod 4
    d[1] = Ln::even(od, od2);  // 1 mod 4
    d[2] = Ln::odd(ev, ev2);   // 2 mod 4
    d[3] = Ln::odd(od, od2);   // 3 mod 4
  }
}

// The inverse: vectors o[k] (lane t: element k of tile t) into the m*L elements at p, tile t's m
// at p + m*t.
template <int M, typename T>
__attribute__((always_inline)) inline void join_lanes(const typename Lanes<T>::V (&o)[M], T* p) {
  using Ln = Lanes<T>;
  constexpr int L = Ln::L;
  if constexpr (M == 3) {
    store_lanes(p, join_3<T, 0>(o[0], o[1], o[2], std::make_index_sequence<L>{}));
    store_lanes(p + L, join_3<T, 1>(o[0], o[1], o[2], std::make_index_sequence<L>{}));
    store_lanes(p + 2 * L, join_3<T, 2>(o[0], o[1], o[2], std::make_index_sequence<L>{}));
  } else if constexpr (M == 2) {
    store_lanes(p, Ln::zip_lo(o[0], o[1]));
    store_lanes(p + L, Ln::zip_hi(o[0], o[1]));
  } else {
    static_assert(M == 4, "tiles of 2, 3 or 4");
    // (0, 2) and (1, 3) interleaved, then the two: 0 1 2 3 of each tile in turn
    const auto a0 = Ln::zip_lo(o[0], o[2]), a1 = Ln::zip_hi(o[0], o[2]);
    const auto b0 = Ln::zip_lo(o[1], o[3]), b1 = Ln::zip_hi(o[1], o[3]);
    store_lanes(p, Ln::zip_lo(a0, b0));
    store_lanes(p + L, Ln::zip_hi(a0, b0));
    store_lanes(p + 2 * L, Ln::zip_lo(a1, b1));
    store_lanes(p + 3 * L, Ln::zip_hi(a1, b1));
  }
}

// An L x L transpose in place: a[t] lane j becomes a[j] lane t. Each round of zips rotates the
// bits of the element index (t, j) left by one; log2(L) rounds turn (t, j) into (j, t).
template <typename T>
__attribute__((always_inline)) inline void transpose_lanes(typename Lanes<T>::V (&a)[Lanes<T>::L]) {
  using Ln = Lanes<T>;
  constexpr int L = Ln::L;
  for (int round = 1; round < L; round *= 2) {
    typename Ln::V b[L];
    for (int i = 0; i < L / 2; ++i) {
      b[2 * i] = Ln::zip_lo(a[i], a[i + L / 2]);
      b[2 * i + 1] = Ln::zip_hi(a[i], a[i + L / 2]);
    }
    for (int i = 0; i < L; ++i) a[i] = b[i];
  }
}

// ---------------------------------------------------------------------------------------------
// the geometry of a tile size
// ---------------------------------------------------------------------------------------------

// Tiles of m x m output pixels: TH x TW per image, the last row/column of tiles clipped when m does
// not divide OH/OW.
struct TileGrid {
  int m;
  index_t TH, TW, total;
};

TileGrid tile_grid(const ConvShape& s, int m) {
  const index_t TH = ceil_div(s.OH, m), TW = ceil_div(s.OW, m);
  return TileGrid{m, TH, TW, s.N * TH * TW};
}

// A block's V and M together take at most this many bytes (the thread's L2 is 1 MiB, which the
// stream of U shares), or hold two column panels of tiles. Measured against a floor of four
// panels: 0.85-0.97x the time on VGG's conv1_2, ResNet-50's 3x3x64 at 56 and 3x3x512 at 7; one
// panel and budgets of 256 KiB to 4 MiB were within the noise.
constexpr index_t kBlockBytes = index_t(512) << 10;

template <int M, typename T>
index_t block_tiles(const MicroKernel<T>& uk, const ConvShape& s) {
  constexpr index_t kXi = Tile<M, T>::a * Tile<M, T>::a;
  const index_t per_tile = kXi * (s.C_in + s.C_out) * index_t(sizeof(T));
  return min_i(uk.nc, max_i(2 * uk.nr, kBlockBytes / per_tile / uk.nr * uk.nr));
}

// The padded planes of a chunk of images. Input: m*(TH + 1) rows of Wp = m*(TW + 1) per channel (the
// rows past m*TH + 2 zeros, read only for columns that are dropped), stored split by row phase,
// padded row R at (R % m)*sub + (R / m)*Wp, so that tile (th, tw)'s window row r starts at th*Wp +
// m*tw + (r % m)*sub + (r / m)*Wp: tiles along a tile row, and on into the next (with one junk
// tile, tw = TW, per row: the padded row holds TW + 1 tile starts), start m elements apart. Output
// (when m does not divide OH or OW): m*TH x m*TW per channel.
struct Planes {
  index_t Wp, sub, in, OWp, out;
};

Planes planes(const TileGrid& g) {
  const index_t Wp = g.m * (g.TW + 1), sub = (g.TH + 1) * Wp;
  return Planes{Wp, sub, g.m * sub, g.m * g.TW, g.m * g.m * g.TH * g.TW};
}

// ---------------------------------------------------------------------------------------------
// the transforms, as vector loops
// ---------------------------------------------------------------------------------------------

// U = G g G^T for kMaxMR filters at once, in vectors of L filters (left to `omp simd`, GCC 12 kept
// it scalar: 11% of the 512-channel 4x4 forward's time on one thread, 2% in vectors): filter i's
// tap k is g[k*ldg + i]; element xi of filter i goes to u[xi*usize + i].
template <int M, typename T>
__attribute__((always_inline)) inline void weight_lanes_impl(Tile<M, T>, const T* g, index_t ldg, T* u,
                                                             index_t usize) {
  using W = Tile<M, T>;
  using V = typename Lanes<T>::V;
  constexpr int L = Lanes<T>::L;
  static_assert(kMaxMR % L == 0, "whole vectors of filters");
  for (int i = 0; i < kMaxMR; i += L)
    transform_2d<V, 3, W::a>([](auto in, auto out) { W::weight(in, out); },
                             [&](int r, int j) { return load_lanes(g + (3 * r + j) * ldg + i); },
                             [&](int r, int k, V v) { store_lanes(u + (W::a * r + k) * usize + i, v); });
}

// U[xi] = (G g G^T)[xi] for the output channels of row panel `panel` of the packed A operands (MR
// channels, zeros past C_out) and every input channel: packed A element (co, ci) of element xi's
// product at u + xi*usize + packed_a_index(co, ci), each depth step's MR channels contiguous.
// Returns whether every filter tap it read was finite.
template <int M, typename T>
bool transform_weight(const MicroKernel<T>& uk, const ConvShape& s, const T* w, index_t lda, const index_t* off,
                      T* u, index_t usize, index_t panel) {
  constexpr int kXi = Tile<M, T>::a * Tile<M, T>::a;
  constexpr int kSteps = 16;               // depth steps transformed together, then stored as runs
  constexpr int ldt = kSteps * kMaxMR + kMaxMR;  // a step's kMaxMR lanes spill MR..kMaxMR into the next
  const int MR = uk.mr;
  const index_t kc = depth_block(uk, s.C_in), co0 = panel * MR;
  const int lanes = static_cast<int>(min_i(MR, s.C_out - co0));
  // kSteps input channels' filters of the panel, as the A pack lays them out: tap k of channel c's
  // filter i at g[(c*9 + k)*MR + i], zero past C_out (+ kMaxMR: the last tap's lanes past MR read
  // on into it). Packed by in-register transposes where the taps lie in order (the forward's
  // weight; 16 channels are 9 whole vector blocks of taps): 0.98x the forward's time on ResNet-50's
  // 3x3x512 at 7x7, batch 16, against a scalar gather (the transform is 14% of it, mostly writing U).
  alignas(64) T g[kSteps * 9 * kMaxMR + kMaxMR] = {};
  alignas(64) T t[kXi * ldt];  // kSteps depth steps of the kXi operands: element xi at t + xi*ldt
  bool finite = true;
  for (index_t pc = 0; pc < s.C_in; pc += kc) {
    const index_t kcb = min_i(kc, s.C_in - pc);
    T* dst = u + packed_a_index(uk, s.C_out, s.C_in, co0, pc);  // depth step pc of the panel; steps MR apart
    for (index_t c = pc; c < pc + kcb; c += kSteps) {
      const int steps = static_cast<int>(min_i(kSteps, pc + kcb - c));
      uk.pack_a(steps * 9, w + co0 * lda, lda, off + c * 9, lanes, g);
      finite = finite && all_finite(g, steps * 9 * MR);
      // in order: each step overwrites the spill of the one before (its lanes past MR: junk)
      for (int k = 0; k < steps; ++k) weight_lanes(Tile<M, T>{}, g + k * 9 * MR, MR, t + k * MR, ldt);
      for (int xi = 0; xi < kXi; ++xi)
        std::memcpy(dst + xi * usize + (c - pc) * MR, t + xi * ldt, static_cast<std::size_t>(steps * MR) * sizeof(T));
    }
  }
  return finite;
}

// Plane src (H x W) into padded planes split into `m` row phases, rows of Wp: source pixel (r, c)
// at padded (r + pad_t, c + pad_l), padded row R at dst + (R % m)*sub + (R / m)*Wp, R < rows; zeros
// elsewhere, and a negative padding (dgrad's) crops instead. Returns whether every pixel of src is
// finite (Winograd takes only finite data, see winograd_forward).
template <typename T>
bool pad_plane(const T* src, index_t H, index_t W, index_t pad_t, index_t pad_l, index_t rows, int m, index_t Wp,
               index_t sub, T* dst) {
  const index_t c0 = min_i(Wp, max_i(0, pad_l)), c1 = max_i(c0, min_i(Wp, pad_l + W));
  for (index_t r = 0; r < rows; ++r) {
    T* d = dst + (r % m) * sub + (r / m) * Wp;
    const index_t ih = r - pad_t;
    if (ih < 0 || ih >= H || c1 == c0) {
      fill_zero(d, Wp);
      continue;
    }
    fill_zero(d, c0);
    std::memcpy(d + c0, src + ih * W + c0 - pad_l, static_cast<std::size_t>(c1 - c0) * sizeof(T));
    fill_zero(d + c1, Wp - c1);
  }
  return all_finite(src, H * W);
}

// Where the windows of a panel's tiles lie and where their outputs go: consecutive tiles of a
// padded plane whose rows hold TW + 1 tiles (the junk last one included), m elements apart, or
// any tiles through a table of offsets.
template <int M>
struct Strided {
  index_t at(index_t l) const { return M * l; }
};
struct Table {
  const std::int32_t* off;
  index_t at(index_t l) const { return off[l]; }
};

// V = B^T d B for tiles l < n of one column panel of V: tile l's window d (a x a) at x + where.at(l),
// its row r at + (r % m)*sub + (r / m)*Wp (see Planes); element xi to v[xi*ldv + l]. L tiles at a
// time: a window row of strided tiles split from one run (split_lanes), of tiles through a table
// by a transpose of the tiles' rows (rows of L elements: up to L - a past a window's row); F(4x4)
// reads 2 elements past the last window either way. The rest one lane each.
template <int M, typename T, class Where>
__attribute__((always_inline)) inline void input_panel_impl(Tile<M, T>, const T* x, Where where, index_t Wp,
                                                            index_t sub, index_t n, T* v, index_t ldv) {
  using W = Tile<M, T>;
  using V = typename Lanes<T>::V;
  constexpr int L = Lanes<T>::L;
  index_t l = 0;
  for (; l + L <= n; l += L) {
    V d[W::a][W::a];  // d[r][j], lane t: element (r, j) of tile l + t's window
    for (int r = 0; r < W::a; ++r) {
      const index_t row = (r % M) * sub + (r / M) * Wp;
      if constexpr (std::is_same_v<Where, Strided<M>>) {
        V lo[M], hi[M];
        split_lanes<M>(x + where.at(l) + row, lo);
        split_lanes<M>(x + where.at(l) + row + M, hi);
        for (int j = 0; j < M; ++j) d[r][j] = lo[j];
        d[r][M] = hi[0];
        d[r][M + 1] = hi[1];
      } else {
        for (int h = 0; h < W::a; h += L) {  // fp64's F(4x4): 6 elements, two vectors of 4
          V e[L];
          for (int t = 0; t < L; ++t) e[t] = load_lanes(x + where.at(l + t) + row + h);
          transpose_lanes<T>(e);
          for (int j = h; j < W::a && j < h + L; ++j) d[r][j] = e[j - h];
        }
      }
    }
    transform_2d<V, W::a, W::a>([](auto in, auto out) { W::input(in, out); },
                                [&](int r, int j) { return d[r][j]; },
                                [&](int i, int k, V val) { store_lanes(v + (W::a * i + k) * ldv + l, val); });
  }
  // v never overlaps x: tell the vectoriser, which would not version a*a + 1 streams
#pragma omp simd
  for (index_t t = l; t < n; ++t) {
    const T* p = x + where.at(t);
    transform_2d<T, W::a, W::a>([](auto in, auto out) { W::input(in, out); },
                                [&](int r, int j) { return p[(r % M) * sub + (r / M) * Wp + j]; },
                                [&](int i, int k, T val) { v[(W::a * i + k) * ldv + t] = val; });
  }
}

// Y = A^T s A + bias for tiles l < n of one output channel, element xi of tile l at s[xi*lds + l]:
// tile l's m x m outputs to y + where.at(l), rows OWp apart. L tiles at a time (join_lanes puts
// each output row's m*L elements in order: one run for strided tiles, m each through a table), the
// rest one lane each.
template <int M, typename T, class Where>
__attribute__((always_inline)) inline void output_panel_impl(Tile<M, T>, const T* s, index_t lds, Where where,
                                                             index_t OWp, index_t n, T bias, T* y) {
  using W = Tile<M, T>;
  using V = typename Lanes<T>::V;
  constexpr int L = Lanes<T>::L;
  index_t l = 0;
  for (; l + L <= n; l += L) {
    V o[M][M];  // o[i][k], lane t: output (i, k) of tile l + t
    transform_2d<V, W::a, M>([](auto in, auto out) { W::output(in, out); },
                             [&](int r, int j) { return load_lanes(s + (W::a * r + j) * lds + l); },
                             [&](int i, int k, V val) { o[i][k] = finish<W>(val) + bias; });
    for (int i = 0; i < M; ++i) {
      if constexpr (std::is_same_v<Where, Strided<M>>) {
        join_lanes<M>(o[i], y + where.at(l) + i * OWp);
      } else {
        T row[M * L];
        join_lanes<M>(o[i], row);
        for (int t = 0; t < L; ++t) std::memcpy(y + where.at(l + t) + i * OWp, row + M * t, M * sizeof(T));
      }
    }
  }
#pragma omp simd
  for (index_t t = l; t < n; ++t) {
    T* q = y + where.at(t);
    transform_2d<T, W::a, M>([](auto in, auto out) { W::output(in, out); },
                             [&](int r, int j) { return s[(W::a * r + j) * lds + t]; },
                             [&](int i, int k, T val) { q[i * OWp + k] = finish<W>(val) + bias; });
  }
}

// wgrad's transform of dy: D = A e A^T for tiles l < n, tile l's m x m dy e at dy + where.at(l),
// its row r `r*sub` elements on (the padded dy planes split by row phase); element xi to
// d[xi*ldd + l].
template <int M, typename T, class Where>
__attribute__((always_inline)) inline void dy_panel_impl(Tile<M, T>, const T* dy, Where where, index_t sub,
                                                         index_t n, T* d, index_t ldd) {
  using W = Tile<M, T>;
  using V = typename Lanes<T>::V;
  constexpr int L = Lanes<T>::L;
  index_t l = 0;
  for (; l + L <= n; l += L) {  // L tiles at a time (left to `omp simd`: 8% of a 256-channel wgrad)
    V e[M][M];  // e[r][j], lane t: element (r, j) of tile l + t
    for (int r = 0; r < M; ++r) {
      if constexpr (std::is_same_v<Where, Strided<M>>) {
        split_lanes<M>(dy + where.at(l) + r * sub, e[r]);
      } else {  // rows gathered element by element: a vector from each would read past dy's planes
        alignas(64) T row[M][L];
        for (int t = 0; t < L; ++t)
          for (int j = 0; j < M; ++j) row[j][t] = dy[where.at(l + t) + r * sub + j];
        for (int j = 0; j < M; ++j) e[r][j] = load_lanes(row[j]);
      }
    }
    transform_2d<V, M, W::a>([](auto in, auto out) { W::dy(in, out); }, [&](int r, int j) { return e[r][j]; },
                             [&](int i, int k, V val) { store_lanes(d + (W::a * i + k) * ldd + l, val); });
  }
#pragma omp simd
  for (index_t t = l; t < n; ++t) {
    const T* p = dy + where.at(t);
    transform_2d<T, M, W::a>([](auto in, auto out) { W::dy(in, out); },
                             [&](int r, int j) { return p[r * sub + j]; },
                             [&](int i, int k, T val) { d[(W::a * i + k) * ldd + t] = val; });
  }
}

// dW = G^T S G for output channel co's filters of n input channels: element xi of input channel
// ci's S at s[xi*lds + ci]; dW of ci to dw[ci*9 .. ci*9 + 9).
template <int M, typename T>
__attribute__((always_inline)) inline void weight_grad_impl(Tile<M, T>, const T* s, index_t lds, index_t n, T* dw) {
  using W = Tile<M, T>;
  using V = typename Lanes<T>::V;
  constexpr int L = Lanes<T>::L;
  index_t ci = 0;
  for (; ci + L <= n; ci += L) {  // L input channels at a time, their 9 taps each stored in order
    alignas(64) T taps[9][L];
    transform_2d<V, W::a, 3>([](auto in, auto out) { W::weight_grad(in, out); },
                             [&](int r, int j) { return load_lanes(s + (W::a * r + j) * lds + ci); },
                             [&](int i, int k, V val) { store_lanes(taps[3 * i + k], finish<W>(val)); });
    for (int t = 0; t < L; ++t)
      for (int k = 0; k < 9; ++k) dw[(ci + t) * 9 + k] = taps[k][t];
  }
#pragma omp simd
  for (index_t c = ci; c < n; ++c)
    transform_2d<T, W::a, 3>([](auto in, auto out) { W::weight_grad(in, out); },
                             [&](int r, int j) { return s[(W::a * r + j) * lds + c]; },
                             [&](int i, int k, T val) { dw[c * 9 + 3 * i + k] = finish<W>(val); });
}

// Each transform compiled per instruction set (target_clones takes no templates): per element
// type, tile and where the tiles lie.
#define FASTCONV_WINOGRAD_PANELS(T, M, Where)                                                                 \
  FASTCONV_CLONES void input_panel(Tile<M, T> tile, const T* x, Where where, index_t Wp, index_t sub, index_t n, \
                                   T* v, index_t ldv) {                                                      \
    input_panel_impl(tile, x, where, Wp, sub, n, v, ldv);                                                    \
  }                                                                                                          \
  FASTCONV_CLONES void output_panel(Tile<M, T> tile, const T* s, index_t lds, Where where, index_t OWp,       \
                                    index_t n, T bias, T* y) {                                               \
    output_panel_impl(tile, s, lds, where, OWp, n, bias, y);                                                 \
  }                                                                                                          \
  FASTCONV_CLONES void dy_panel(Tile<M, T> tile, const T* dy, Where where, index_t sub, index_t n, T* d,     \
                                index_t ldd) {                                                               \
    dy_panel_impl(tile, dy, where, sub, n, d, ldd);                                                          \
  }
#define FASTCONV_WINOGRAD_TILE(T, M)                                                                          \
  FASTCONV_WINOGRAD_PANELS(T, M, Strided<M>)                                                                 \
  FASTCONV_WINOGRAD_PANELS(T, M, Table)                                                                      \
  FASTCONV_CLONES void weight_lanes(Tile<M, T> tile, const T* g, index_t ldg, T* u, index_t usize) {         \
    weight_lanes_impl(tile, g, ldg, u, usize);                                                               \
  }                                                                                                          \
  FASTCONV_CLONES void weight_grad(Tile<M, T> tile, const T* s, index_t lds, index_t n, T* dw) {             \
    weight_grad_impl(tile, s, lds, n, dw);                                                                   \
  }
FASTCONV_WINOGRAD_TILE(float, 2)
FASTCONV_WINOGRAD_TILE(double, 2)
FASTCONV_WINOGRAD_TILE(float, 3)
FASTCONV_WINOGRAD_TILE(double, 3)
FASTCONV_WINOGRAD_TILE(float, 4)
FASTCONV_WINOGRAD_TILE(double, 4)
#undef FASTCONV_WINOGRAD_TILE
#undef FASTCONV_WINOGRAD_PANELS

// ---------------------------------------------------------------------------------------------
// blocks of columns
// ---------------------------------------------------------------------------------------------

// Chunks of images hold at most this many bytes of padded input or output planes (or one image).
constexpr index_t kChunkBytes = index_t(4) << 20;

template <typename T>
index_t chunk_images(const ConvShape& s, const Planes& pl) {
  const index_t image = max_i(s.C_in * pl.in, s.C_out * pl.out) * index_t(sizeof(T));
  return max_i(1, min_i(s.N, kChunkBytes / image));
}

// The general micro-kernel, or the few-rows one where its panels pad C_out at least 1/16 less: 64
// and 128 channels (64/128 rows against 70/140 at MR = 14) ran in 0.93-0.94x the time with it,
// while 512 (512 against 518) ran in 0.83x with the general one.
template <typename T>
const MicroKernel<T>& winograd_kernel(index_t C_out) {
  const MicroKernel<T>& general = micro_kernel<T>();
  const MicroKernel<T>& few = micro_kernel_few_rows<T>();
  return round_up(C_out, few.mr) * 16 <= round_up(C_out, general.mr) * 15 ? few : general;
}

// F(4x4)'s GEMMs sum their depth (channels; wgrad: tiles) in blocks of at most this many, each from
// zero and then added, which shortens the chains of rounded additions that dominate its float32
// error. Measured, largest error / tolerance at 32 against 256: 0.35 against 0.50 (forward, 64
// channels at 56x56), 0.50 against 0.91 (forward of VGG's conv3_1, 128 -> 256 at 28x28), 0.35
// against 0.51 (its wgrad); time 1.0-1.1x.
constexpr index_t kF4DepthBlock = 32;

template <int M, typename T>
MicroKernel<T> tile_kernel(MicroKernel<T> uk) {
  if (M > 2) uk.kc = min_i(uk.kc, kF4DepthBlock);
  return uk;
}

// Whether a chunk's GEMM columns run along the padded tile rows, TW + 1 per tile row (the junk
// tile included: at most 1/17 of the columns here), rather than through offset tables (element by
// element). Measured (F(2x2)), time of the other way: 32x32 images (TW = 16) 1.5x with tables;
// 16x16 1.12x and 8x8 1.42x along rows (11% and 20% junk).
bool along_rows(const TileGrid& g) { return g.TW >= 16; }

// The GEMM columns of a chunk of images, cut into blocks of nt: along the padded tile rows (TW + 1
// per tile row, blocks within one image), or the chunk's tiles (blocks across images).
struct Columns {
  TileGrid g;
  bool rows;
  index_t per_image, nt;  // columns per image; per block
  Columns(const TileGrid& grid, index_t block)
      : g(grid), rows(along_rows(grid)), per_image(rows ? g.TH * (g.TW + 1) : g.TH * g.TW), nt(block) {}
  index_t blocks(index_t imgs) const {
    return rows ? imgs * ceil_div(per_image, nt) : ceil_div(imgs * per_image, nt);
  }
  // Block blk: its image (rows; 0 for tiles, counted over the chunk), first column and width.
  struct Block {
    index_t img, q0, count;
  };
  Block block(index_t blk, index_t imgs) const {
    if (!rows) return Block{0, blk * nt, min_i(nt, imgs * per_image - blk * nt)};
    const index_t per = ceil_div(per_image, nt), q0 = blk % per * nt;
    return Block{blk / per, q0, min_i(nt, per_image - q0)};
  }
  // Where tile t of the chunk (tiles numbered over images) lies in planes `image` elements apart per
  // image whose tile rows start `row` elements apart: the offset tables of a block.
  std::int32_t tile_offset(index_t t, index_t image, index_t row) const {
    const index_t i = t / per_image, th = t % per_image / g.TW, tw = t % g.TW;
    return static_cast<std::int32_t>(i * image + th * row + g.m * tw);
  }
};

// ---------------------------------------------------------------------------------------------
// which tile
// ---------------------------------------------------------------------------------------------

int forced_tile = 0;  // set_winograd_tile's: 0, the chooser's; 1, none (the direct paths)
bool f4_allowed = false;  // set_winograd_f4's: whether F(4x4) is allowed at all (precision "high")

// Whether s is a layer Winograd serves and pays on (measured with F(2x2)). Enough tiles to amortise
// the weight's transform, and work enough for the fixed costs of a call (the weight's transform,
// the blocks' set-up): tiles x C_in x C_out, which the GEMMs grow with, at least 2^19. Time against
// the direct GEMM path, forward and dgrad (2-core AMD EPYC Zen 1, AVX2, transforms in vectors):
// 0.69x at 32 -> 32 on 32x32 (batch 128) and 56x56 (batch 16); 0.72-0.82x at 16 -> 64, 64 -> 16,
// 16 -> 32 and 32 -> 16 (28x28, 32x32); 0.91-0.95x at 16 -> 16 (32x32 batch 128, 56x56 batch 16),
// 0.72-0.76x at 16 -> 16 on 8x8 batch 128; but 1.07-1.41x with less work (16 -> 16 on 32x32 at
// batch 2 and 4: 2^17 and 2^18; 32 -> 32 at batch 1: 2^16 on 16x16, 2^18 on 32x32), and at 8 -> 8
// (32x32, batch 64) 0.98x forward, 1.18x dgrad. Before the transforms were vectors, 16 channels
// and 32 -> 32 on images over 16 wide took 1.06-1.29x. In fp64 only along rows: through the tables
// ResNet-50's 3x3x512 at 7x7 took 1.13-1.18x the time (fp32: 0.65x with AVX2, 0.87x AVX-512),
// along rows 0.58-0.74x. With the AVX-512 kernels, whose direct GEMM does twice the flops per
// cycle, 16 -> 16 layers did not pay (2-core AMD EPYC Zen 5, interleaved, time against the direct
// path: F(2x2) 1.08-1.29x on ResNet-20's 32x32 at batch 128, 1.03-1.22x at 28x28 and 56x56,
// 0.95-1.02x on 16x16 and 112x112; F(3x3), the chooser's on wide images, 1.04-1.25x), while 16 ->
// 32 broke even and 16 -> 64 paid (0.76-0.98x): there they need more than 32 channels in and out
// together.
bool winograd_serves(const ConvShape& s, index_t elem_bytes) {
  if (!(s.KH == 3 && s.KW == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
        s.groups == 1))
    return false;
  if (s.C_in + s.C_out <= 32 && gemm_isa_is("avx512")) return false;
  const TileGrid g = tile_grid(s, 2);
  const bool work = g.total * s.C_in * s.C_out >= (index_t(1) << 19);
  return g.total >= 64 && min_i(s.C_in, s.C_out) >= 16 && work && (elem_bytes == 4 || along_rows(g));
}

// Whether tile m's offset tables (int32) reach all of one image's padded planes.
bool offsets_fit(const ConvShape& s, int m) {
  const Planes pl = planes(tile_grid(s, m));
  return max_i(s.C_in * pl.in, s.C_out * pl.out) < (index_t(1) << 31);
}

// The tile of a layer Winograd serves: the forced one, else the pass's rule's; F(2x2) where that
// tile's offsets do not fit, 0 where Winograd is forced off or no tile's offsets fit.
int pick_tile(const ConvShape& s, int rule) {
  if (forced_tile == 1) return 0;
  const int m = forced_tile ? forced_tile : rule;
  if (offsets_fit(s, m)) return m;
  return m != 2 && offsets_fit(s, 2) ? 2 : 0;
}

// The error rules: whether tile m's float32 error stays inside the bound of the current precision
// on a layer Winograd serves (s: a forward, or dgrad's forward of dy; s.C_in is the channels each
// output sums). Largest error / tolerance against the fp64 reference, random normal data,
// forward / dgrad (F(2x2) in brackets; README.md's table): F(4x4) 0.30-0.46 at 16 and 32 channels
// (0.05-0.09), 0.43-0.69 at 64 (0.12-0.16), 0.81 summing 128 (0.27), 0.98 summing 256, 1.2-1.6 at
// 512 (0.56); F(3x3) 0.17-0.40 at 16-64 channels, 0.58 summing 256, 0.68-0.75 at 512. "highest"
// keeps to F(3x3) summing up to 256 and F(2x2) (F(4x4)'s 3-4x larger error than the direct path's
// changed whole networks' gradients, see winograd_tile); "high" (f4_allowed) lets F(4x4) reach
// 0.8-1.0 (up to 128 input channels, 384 in and out together: the layers where it was measured,
// VGG's conv3_1). Only the fp32 tiles: fp64 takes
// F(2x2) (the larger tiles' fp64 error was not measured against its tighter tolerance). The
// chooser (winograd_tile) takes among the allowed tiles by speed, so it never runs one these forbid.
bool tile_allowed(const ConvShape& s, int m, index_t elem_bytes) {
  if (m == 2) return true;
  if (elem_bytes != 4) return false;
  if (m == 3) return s.C_in <= 256;
  return m == 4 && f4_allowed && s.C_in <= 128 && s.C_in + s.C_out <= 384;
}

// wgrad's: its error grows with the pixels summed (N*OH*OW; see winograd_wgrad_tile): F(4x4) at
// precision "high" on up to 1024 pixels (0.54 of the tolerance at 784, 1.05 in one draw at 1860).
// F(3x3) is not offered: the chooser never takes it, and it ran no faster than F(2x2) where it was
// timed (1.01-1.15x its time, README.md).
bool wgrad_tile_allowed(const ConvShape& s, int m) {
  return m == 2 || (m == 4 && f4_allowed && s.N * s.OH * s.OW <= 1024);
}

// Whether wgrad's Winograd serves s (fp32, 128+ channels each way; see winograd_wgrad_tile).
bool wgrad_serves(const ConvShape& s, index_t elem_bytes) {
  return elem_bytes == 4 && winograd_serves(s, elem_bytes) && s.C_in >= 128 && s.C_out >= 128;
}

// The tiles of 2, 3, 4 that `allowed` takes and whose offsets fit.
template <class Allowed>
std::vector<int> tiles_where(const ConvShape& s, Allowed allowed) {
  std::vector<int> tiles;
  for (int m = 2; m <= 4; ++m)
    if (allowed(m) && offsets_fit(s, m)) tiles.push_back(m);
  return tiles;
}

}  // namespace

int winograd_tile(const ConvShape& s, index_t elem_bytes) {
  if (!winograd_serves(s, elem_bytes)) return 0;
  // In fp32 the larger tiles, exact on small integers (see Tile<3>, Tile<4>), where they pay and
  // their error rules allow them (tile_allowed, which has the measured errors).
  // F(4x4) at precision "high" only (set_winograd_f4), on up to 128 input channels and 384 in and
  // out together: its forward error, 3-4x the direct path's at 64 channels, flipped enough ReLUs
  // that a patched ResNet-18's gradients (CIFAR size, F(4x4) on its 64-channel layers) differed
  // from PyTorch's beyond PyTorch's own channels_last difference on 5 of 5 seeds (2-core AMD EPYC
  // Zen 5), against 1 of 5 with F(2x2) and with no Winograd at all. Its time against
  // F(2x2), 2-core AMD EPYC (AVX2), interleaved: 0.70-0.84x at 64 channels (56x56, 224x224),
  // 0.76-0.83x on ResNet-20's layers (16, 32, 64 channels), 0.79-0.87x on VGG's conv3_1 (128 -> 256,
  // 56x56), 0.94x at 128 on 28x28; but 0.99-1.13x at 256 (14x14, batch 8 and 16) and 1.02-1.6x at
  // 512 (7x7, 14x14). Else F(3x3) on layers of up to 256 channels in and out together whose images
  // run along rows (46+ output columns: 16+ tiles of 3): 0.88-0.92x F(2x2)'s time at 64 channels
  // (56x56 at batch 1 and 16, 224x224); but 0.97-1.04x at 128 -> 256 (56x56), 1.6x at 512 (7x7),
  // 1.09-1.3x through the tables (ResNet-20's 32x32, 16x16, 8x8: up to 27% of its tiles' outputs
  // past the image). fp64: F(2x2) (the larger tiles not measured there).
  // The error rules are tile_allowed's; F(4x4) wherever they allow it.
  const bool f4 = tile_allowed(s, 4, elem_bytes);
  const bool f3 = tile_allowed(s, 3, elem_bytes) && s.C_in + s.C_out <= 256 && along_rows(tile_grid(s, 3));
  return pick_tile(s, f4 ? 4 : f3 ? 3 : 2);
}

std::vector<int> winograd_tiles(const ConvShape& s, index_t elem_bytes) {
  if (!winograd_serves(s, elem_bytes)) return {};
  return tiles_where(s, [&](int m) { return tile_allowed(s, m, elem_bytes); });
}

int winograd_wgrad_tile(const ConvShape& s, index_t elem_bytes) {
  // Both of its GEMM operands are packed as it goes, D panel by panel through offsets and V^T by a
  // transposing copy, a cost against 2*min(C_in, C_out) flops per packed element: measured against
  // the direct path, time 0.72x at 512 channels (7x7, batch 16) and 0.91x at 128 -> 256 (56x56), but
  // 1.2-1.26x at 64 channels; in fp64 (half the flops per packed byte) 0.97-1.2x at 128-512.
  if (!wgrad_serves(s, elem_bytes)) return 0;
  // F(4x4) at precision "high" (see set_winograd_f4) on layers of up to 384 channels in and out
  // together or with 128 of its tiles or more (a reduction deep enough to amortise its larger
  // transforms), up to 1024 pixels summed. Time
  // against F(2x2): 0.68-0.72x on VGG's conv3_1 (128 -> 256, 196 tiles), 0.79x at 128 channels on
  // 28x28 (98 tiles), 0.79-0.89x at 512 on 7x7 at batch 32 and 64 (128, 256 tiles), 0.97-0.99x at
  // 256 on 14x14 (128, 256); but 1.03-1.13x at 512 on 7x7 at batch 16 (64 tiles) and 1.37x on 14x14
  // at batch 4 (64). At 64 channels (which the direct path serves, see above) it ran in 0.77-0.84x
  // the direct path's time, but with 0.6-4.4 of the tolerance on the suite's layers. Its error
  // grows with the pixels summed (N*OH*OW), largest error / tolerance: 0.54 at 784 (F(2x2): 0.18),
  // 1.05 at 1860 (128 channels on 30x62, one draw of several), 0.89 at 3136 (0.33), up to 1.0 at
  // 3591 (129 -> 128 channels on 19x21); on the points +-3/4,
  // +-3/2 (0.85x this error) it was 0.89 at 8192, 1.54 at 12544 (F(2x2): 0.63), 3.3-4.4 at 50176
  // (F(2x2): 1.7-2.2).
  // The error rule is wgrad_tile_allowed's; the channels and tiles, speed.
  const bool f4 = wgrad_tile_allowed(s, 4) && (s.C_in + s.C_out <= 384 || tile_grid(s, 4).total >= 128);
  return pick_tile(s, f4 ? 4 : 2);
}

std::vector<int> winograd_wgrad_tiles(const ConvShape& s, index_t elem_bytes) {
  if (!wgrad_serves(s, elem_bytes)) return {};
  return tiles_where(s, [&](int m) { return wgrad_tile_allowed(s, m); });
}

void set_winograd_f4(bool allowed) { f4_allowed = allowed; }

void set_winograd_tile(int m) {
  if (m < 0 || m > 4)
    throw std::invalid_argument("set_winograd_tile: the tile must be 0 (the chooser's), 1 (none), 2, 3 or 4, got " +
                                std::to_string(m));
  forced_tile = m;
}

namespace {

// ---------------------------------------------------------------------------------------------
// the passes, per tile
// ---------------------------------------------------------------------------------------------

// Wide blocks: where U is at least this large (362+ channels each way with F(2x2)), the team runs
// each block together, of up to kWideBytes of V and M: the input transform split by channel, the
// GEMMs and the output transform by U's row panels, each thread on the panels it transformed. U is
// then read once a block, by the thread that wrote it, against once per block of every thread (a
// block holds at most kBlockBytes): ResNet-18-CIFAR's 512-channel 4x4 layer (batch 32: 128 tiles)
// read its 16 MiB U four times a call, ResNet-50's 512 at 7x7 (batch 16) eight. Measured (2-core
// AMD EPYC Zen 5, 2 threads), time against the blocks: those two 0.98x and 0.88x with the cores on
// one die, 0.72x and 0.84x on two; but 1.11-1.17x on 256 channels (U of 4 MiB) at 8x8, batch 32,
// on one die (1.05-1.09x on two), so they keep the blocks. Blocks of 4 and 2 MiB of V and M: 0.92
// and 1.07x on the 7x7 layer.
constexpr index_t kWideUBytes = index_t(8) << 20;
constexpr index_t kWideBytes = index_t(8) << 20;

template <int M, typename T>
bool forward_tiles(const ConvShape& s, const T* x, const T* w, index_t lda, const index_t* off, const T* b, T* y,
                   int nthreads) {
  using W = Tile<M, T>;
  constexpr index_t kXi = W::a * W::a;
  const MicroKernel<T> uk = tile_kernel<M>(winograd_kernel<T>(s.C_out));
  const TileGrid g = tile_grid(s, M);
  const Planes pl = planes(g);
  const index_t chunk = chunk_images<T>(s, pl);
  // The kXi operands of each kind lie one cache line more than their size apart: a size that is a
  // multiple of 4 KiB (most are) would put element p of all of them in one set of L1, whose 8 ways
  // the transforms, writing or reading them all at once, would thrash (the weight's transform ran 6x
  // slower so at 512 channels).
  const index_t line = 64 / index_t(sizeof(T)), rows = round_up(s.C_out, uk.mr), panels = rows / uk.mr;
  const index_t usize = packed_a_size(uk, s.C_out, s.C_in) + line;
  const bool wide = kXi * usize * index_t(sizeof(T)) >= kWideUBytes;
  // Blocks of a chunk's columns, at least two per thread (of one column panel at least): a small
  // layer's one block left a thread idle (1 x 64 x 16x16, 64 filters: a third of the time in
  // libgomp's wait). Wide blocks: as many columns as kWideBytes holds.
  const index_t columns = chunk * (along_rows(g) ? g.TH * (g.TW + 1) : g.TH * g.TW);
  const index_t per_tile = kXi * (s.C_in + s.C_out) * index_t(sizeof(T));
  const index_t wide_tiles = max_i(uk.nr, kWideBytes / per_tile / uk.nr * uk.nr);
  const index_t two_a_thread = max_i(uk.nr, round_up(ceil_div(columns, 2 * nthreads), uk.nr));
  const index_t nt = wide ? min_i(min_i(uk.nc, round_up(columns, uk.nr)), wide_tiles)
                          : min_i(block_tiles<M>(uk, s), two_a_thread);
  const Columns cols(g, nt);
  const bool rows_mode = cols.rows;
  const index_t vsize = s.C_in * nt + line, msize = s.C_out * nt + line;  // nt: a multiple of NR
  const index_t P = s.OH * s.OW;
  // the tables' outputs go straight into y when every tile lies whole in the image
  const bool direct = rows_mode || (M * g.TH == s.OH && M * g.TW == s.OW);
  Buffer<T> u(kXi * usize);  // shared: the transformed weight
  // shared: a chunk's padded input planes; rows mode reads up to M*NR elements past a plane's end
  // (a last panel's columns past the image's last tile), and F(4x4)'s vectors 2 more
  Buffer<T> xp(chunk * s.C_in * pl.in + M * uk.nr + line);
  Buffer<T> yp(direct ? 0 : chunk * s.C_out * pl.out);  // shared: its padded output planes
  Buffer<T> wide_v(wide ? kXi * vsize : 0), wide_m(wide ? kXi * msize : 0);  // shared: a wide block's V and M
  fill_zero(xp.data() + chunk * s.C_in * pl.in, M * uk.nr + line);
  bool w_finite = true, x_finite = true;
#pragma omp parallel num_threads(nthreads)
  {
    // Static: a wide block's GEMMs take the panels this loop gave the thread (OpenMP assigns two
    // static loops of as many iterations in one region alike). nowait: the padding loop below ends
    // in a barrier before any block reads U or the flag.
#pragma omp for schedule(static) nowait reduction(&& : w_finite)
    for (index_t panel = 0; panel < panels; ++panel)
      w_finite = transform_weight<M>(uk, s, w, lda, off, u.data(), usize, panel) && w_finite;
    Buffer<T> own_v(wide ? 0 : kXi * vsize), own_m(wide ? 0 : kXi * msize);  // per thread: one block's V and M
    T* const v = wide ? wide_v.data() : own_v.data();
    T* const m = wide ? wide_m.data() : own_m.data();
    Buffer<std::int32_t> win(rows_mode ? 0 : nt), out(rows_mode ? 0 : nt);  // the tables of a block
    Buffer<T> edge(rows_mode ? M * M * (g.TW + 1) : 0);  // the M output rows of a clipped run
    for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
      const index_t imgs = min_i(chunk, s.N - n0);
#pragma omp for schedule(static) reduction(&& : x_finite)
      for (index_t job = 0; job < imgs * s.C_in; ++job)
        x_finite = pad_plane(x + (n0 * s.C_in + job) * s.H * s.W, s.H, s.W, s.pad_t, s.pad_l, M * (g.TH + 1), M,
                             pl.Wp, pl.sub, xp.data() + job * pl.in) &&
                   x_finite;
      // every thread reads the flags between this loop's barrier and the next write to them (the
      // next chunk's reduction, two barriers on), so all of them leave together
      if (!(w_finite && x_finite)) break;
      T* yc = direct ? y + n0 * s.C_out * P : yp.data();  // planes of OH x OW, or of the padded output
      const index_t ow = direct ? s.OW : pl.OWp, oplane = direct ? P : pl.out;
      // A block's tables (each thread its own), and its input transform of channel ci into V: its
      // count columns rounded up to whole column panels.
      const auto tables = [&](index_t q0, index_t count) {
        if (!rows_mode)
          for (index_t c = 0; c < round_up(count, uk.nr); ++c) {
            // the last panel's columns past the block repeat its last tile: finite, and dropped
            const index_t t = q0 + min_i(c, count - 1);
            win.data()[c] = cols.tile_offset(t, s.C_in * pl.in, pl.Wp);
            out.data()[c] = cols.tile_offset(t, s.C_out * oplane, M * ow);
          }
      };
      const auto input = [&](index_t img, index_t q0, index_t count, index_t ci) {
        const T* xb = xp.data() + img * s.C_in * pl.in + (rows_mode ? M * q0 : 0);
        for (index_t c = 0; c < count; c += uk.nr) {  // column panel c / NR of depth row ci
          T* vp = v + packed_b_index(uk, s.C_in, nt, ci, c);
          if (rows_mode)
            input_panel(W{}, xb + ci * pl.in + M * c, Strided<M>{}, pl.Wp, pl.sub, uk.nr, vp, vsize);
          else
            input_panel(W{}, xb + ci * pl.in, Table{win.data() + c}, pl.Wp, pl.sub, uk.nr, vp, vsize);
        }
      };
      // The GEMMs of row panels [p0, p1) (C_out x count of each M[xi]), then their channels' outputs.
      const auto multiply = [&](index_t img, index_t q0, index_t count, index_t p0, index_t p1) {
        for (index_t xi = 0; xi < kXi; ++xi)
          gemm_unit(uk, PrepackedA<T>{u.data() + xi * usize, s.C_out}, s.C_in, p0, p1,
                    PrepackedB<T>{v + xi * vsize, nt}, 0, count, PlainC<T>{m + xi * msize, nt},
                    static_cast<T*>(nullptr), false);
        for (index_t co = p0 * uk.mr; co < min_i(s.C_out, p1 * uk.mr); ++co) {
          const T bias = b ? b[co] : T(0);
          const T* mc = m + co * nt;
          if (!rows_mode) {
            output_panel(W{}, mc, msize, Table{out.data()}, ow, count, bias, yc + co * oplane);
            continue;
          }
          // runs of one tile row each, its junk tile left out; a run whose tiles reach past the
          // image (M not dividing OH or OW) goes through `edge` and is cropped
          T* yo = yc + (img * s.C_out + co) * P;
          for (index_t q = q0; q < q0 + count;) {
            const index_t th = q / (g.TW + 1), tw = q % (g.TW + 1);
            const index_t len = min_i(q0 + count - q, g.TW + 1 - tw), tiles = min_i(len, g.TW - tw);
            const index_t out_rows = min_i(M, s.OH - M * th);
            // the run's tiles that lie whole in y go there; the clipped rest (the last tile of a
            // row, or a last tile row) through `edge`: every row of F(3x3) on 56x56 has one
            const index_t whole = out_rows == M ? min_i(tiles, (s.OW - M * tw) / M) : 0;
            T* dst = yo + M * th * s.OW + M * tw;
            if (whole > 0) output_panel(W{}, mc + q - q0, msize, Strided<M>{}, s.OW, whole, bias, dst);
            if (tiles > whole) {
              const index_t rest = tiles - whole, run = min_i(M * rest, s.OW - M * (tw + whole));  // output columns
              output_panel(W{}, mc + q - q0 + whole, msize, Strided<M>{}, M * rest, rest, bias, edge.data());
              for (index_t r = 0; r < out_rows; ++r)
                std::memcpy(dst + M * whole + r * s.OW, edge.data() + r * M * rest,
                            static_cast<std::size_t>(run) * sizeof(T));
            }
            q += len;
          }
        }
      };
      if (wide) {
        for (index_t blk = 0; blk < cols.blocks(imgs); ++blk) {  // the team, block after block
          const auto [img, q0, count] = cols.block(blk, imgs);
          tables(q0, count);
#pragma omp for schedule(static)
          for (index_t ci = 0; ci < s.C_in; ++ci) input(img, q0, count, ci);
#pragma omp for schedule(static) nowait
          for (index_t panel = 0; panel < panels; ++panel) multiply(img, q0, count, panel, panel + 1);
#pragma omp barrier
        }
      } else {
        // static, as the padding loop above: a thread's blocks are (nearly) the images it padded,
        // and only the blocks at the halves' border write output rows both threads write. Where
        // this VM's two vCPUs sat on different dies (see kHalfSumBytes), dynamic blocks (either
        // thread reading the other's planes, and writing the other's output rows) took 1.02-1.06x
        // the time.
#pragma omp for schedule(static)
        for (index_t blk = 0; blk < cols.blocks(imgs); ++blk) {
          const auto [img, q0, count] = cols.block(blk, imgs);
          tables(q0, count);
          for (index_t ci = 0; ci < s.C_in; ++ci) input(img, q0, count, ci);
          multiply(img, q0, count, 0, panels);
        }
      }
      if (!direct) {  // crop the padded output planes into y
#pragma omp for schedule(static)
        for (index_t job = 0; job < imgs * s.C_out; ++job)
          for (index_t r = 0; r < s.OH; ++r)
            std::memcpy(y + (n0 * s.C_out + job) * P + r * s.OW, yp.data() + job * pl.out + r * pl.OWp,
                        static_cast<std::size_t>(s.OW) * sizeof(T));
      }
    }
  }
  return w_finite && x_finite;
}

// wgrad's blocks hold the transforms of this many bytes of tiles (V of x and D of dy), and 128 to
// 512 tiles: the depth of each block's a*a GEMMs, which add into S (a*a x C_out x C_in) once per
// block.
constexpr index_t kWgradBlockBytes = index_t(2) << 20;

// Halves: where S is at most kHalfSumBytes and the batch has 2+ images, its two halves run apart,
// each with padded planes, transforms and an S of its own, S = the first's + the second's at the
// end: on 2 threads each core works on its own data and meets the other only there. Otherwise the
// threads share each block, its transforms split by channel and its GEMMs by xi: V and D cross
// between the cores every block, three barriers a block. This VM's two vCPUs sometimes sit on
// different dies (a core-to-core round trip of 390 ns against 80 ns): the shared blocks then ran
// ResNet-18-CIFAR's 128-channel wgrad 1.7x slower (9.7 ms against 5.7; one thread 9.3). The halves
// follow from the shape alone, so the bits do not depend on the thread count.
constexpr index_t kHalfSumBytes = index_t(2) << 20;

template <typename T>
void add_to(T* dst, const T* src, index_t n) {
  for (index_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <int M, typename T>
bool backward_weight_tiles(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  using W = Tile<M, T>;
  constexpr index_t kXi = W::a * W::a;
  const MicroKernel<T> uk = tile_kernel<M>(micro_kernel<T>(s.C_out));
  const TileGrid g = tile_grid(s, M);
  const Planes pl = planes(g);
  // dy padded to planes of M*TH rows of Wp, split by row phase like x's: tile (th, tw)'s row r at
  // th*Wp + M*tw + r*dsub; the junk tiles of rows mode read zeros
  const index_t dsub = g.TH * pl.Wp, dplane = M * dsub;
  const index_t image = (s.C_in * pl.in + s.C_out * dplane) * index_t(sizeof(T));
  const index_t nt = min_i(512, max_i(128, kWgradBlockBytes / (kXi * (s.C_in + s.C_out) * index_t(sizeof(T)))));
  const Columns cols(g, nt);  // tiles, as the forward's columns
  const bool rows_mode = cols.rows;
  const index_t line = 64 / index_t(sizeof(T));  // the operands of a kind a line more apart (see the forward)
  const index_t xsize = s.C_in * nt + line, dsize = s.C_out * nt + line, ssize = s.C_out * s.C_in + line;
  const index_t halves = s.N >= 2 && kXi * ssize * index_t(sizeof(T)) <= kHalfSumBytes ? 2 : 1;
  const index_t per_half = ceil_div(s.N, halves), chunk = max_i(1, min_i(per_half, kChunkBytes / halves / image));
  // per half: a chunk's padded x and dy planes (rows mode reads 2 elements past x's last plane, 4
  // with F(4x4)'s vectors: `line` covers them), the block's transforms V (kXi x C_in x nt) and D
  // (kXi x C_out x nt), S and the block's tables
  const index_t xp_size = chunk * s.C_in * pl.in + line, dp_size = chunk * s.C_out * dplane;
  Buffer<T> xp(halves * xp_size), dp(halves * dp_size);
  Buffer<T> v(halves * kXi * xsize), d(halves * kXi * dsize), sum(halves * kXi * ssize);
  Buffer<std::int32_t> win(rows_mode ? 0 : halves * nt), dwin(rows_mode ? 0 : halves * nt);
  std::vector<index_t> off(static_cast<std::size_t>(nt + kPrefetchRows));  // D read in place: depth p at p
  for (index_t p = 0; p < nt + kPrefetchRows; ++p) off[p] = p;
  for (index_t h = 0; h < halves; ++h) fill_zero(xp.data() + h * xp_size + chunk * s.C_in * pl.in, line);
  // Set only while padding, read by every thread of a team after that loop's barrier: a team
  // leaves together.
  std::atomic<bool> non_finite{false};
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: one packed block of V^T
    // Images [h * per_half, ...) into half h's S: by the whole team (`team`) or by one thread.
    const auto run_half = [&](index_t h, bool team) {
      T *xh = xp.data() + h * xp_size, *dh = dp.data() + h * dp_size;
      T *vh = v.data() + h * kXi * xsize, *d_h = d.data() + h * kXi * dsize, *sh = sum.data() + h * kXi * ssize;
      std::int32_t *winh = win.data() + (rows_mode ? 0 : h * nt), *dwinh = dwin.data() + (rows_mode ? 0 : h * nt);
      const index_t n_end = min_i(s.N, (h + 1) * per_half);
      bool first = true;
      for (index_t n0 = h * per_half; n0 < n_end; n0 += chunk) {
        const index_t imgs = min_i(chunk, n_end - n0);
        team_for(team, imgs * (s.C_in + s.C_out), [&](index_t job) {
          const index_t img = job / (s.C_in + s.C_out), c = job % (s.C_in + s.C_out);
          const bool ok = c < s.C_in ? pad_plane(x + ((n0 + img) * s.C_in + c) * s.H * s.W, s.H, s.W, s.pad_t, s.pad_l,
                                                 M * (g.TH + 1), M, pl.Wp, pl.sub, xh + (img * s.C_in + c) * pl.in)
                                     : pad_plane(dy + ((n0 + img) * s.C_out + c - s.C_in) * s.OH * s.OW, s.OH, s.OW,
                                                 index_t(0), index_t(0), M * g.TH, M, pl.Wp, dsub,
                                                 dh + (img * s.C_out + c - s.C_in) * dplane);
          if (!ok) non_finite.store(true, std::memory_order_relaxed);
        }, true);
        if (non_finite.load(std::memory_order_relaxed)) return;
        for (index_t blk = 0; blk < cols.blocks(imgs); ++blk) {  // S adds the blocks in order
          const auto [img, q0, count] = cols.block(blk, imgs);
          if (!rows_mode)
            team_for(team, count, [&](index_t c) {
              winh[c] = cols.tile_offset(q0 + c, s.C_in * pl.in, pl.Wp);
              dwinh[c] = cols.tile_offset(q0 + c, s.C_out * dplane, pl.Wp);
            }, true);
          const index_t shift = rows_mode ? M * q0 : 0;
          const T* xb = xh + img * s.C_in * pl.in + shift;
          const T* db = dh + img * s.C_out * dplane + shift;
          team_for(team, s.C_in + s.C_out, [&](index_t c) {
            if (c < s.C_in && rows_mode)
              input_panel(W{}, xb + c * pl.in, Strided<M>{}, pl.Wp, pl.sub, count, vh + c * nt, xsize);
            else if (c < s.C_in)
              input_panel(W{}, xb + c * pl.in, Table{winh}, pl.Wp, pl.sub, count, vh + c * nt, xsize);
            else if (rows_mode)
              dy_panel(W{}, db + (c - s.C_in) * dplane, Strided<M>{}, dsub, count, d_h + (c - s.C_in) * nt, dsize);
            else
              dy_panel(W{}, db + (c - s.C_in) * dplane, Table{dwinh}, dsub, count, d_h + (c - s.C_in) * nt, dsize);
          }, true);
          // S[xi] (C_out x C_in) += D[xi] (C_out x count) V[xi]^T; D's panels packed as the kernel
          // goes. Static: a thread keeps its xi block after block, S[xi] in its own caches
          team_for(team, kXi, [&](index_t xi) {
            gemm_unit(uk, InPlaceA<T>{d_h + xi * dsize, nt, off.data(), s.C_out, true}, count, 0,
                      ceil_div(s.C_out, uk.mr), StridedB<T>{vh + xi * xsize, 1, nt}, 0, s.C_in,
                      PlainC<T>{sh + xi * ssize, s.C_in}, bbuf.data(), !first);
          }, true);
          first = false;
        }
      }
    };
    if (halves == 1)
      run_half(0, true);
    else
      team_for(true, halves, [&](index_t h) { run_half(h, false); }, true);
    // (the loops end in barriers: every thread sees the flag, S is whole)
    if (!non_finite.load(std::memory_order_relaxed)) {
      team_for(true, s.C_out, [&](index_t co) {
        T* row = sum.data() + co * s.C_in;  // S[xi][co][:] at row + xi * ssize
        if (halves == 2)
          for (index_t xi = 0; xi < kXi; ++xi)
            add_to(row + xi * ssize, row + (kXi + xi) * ssize, s.C_in);
        weight_grad(W{}, row, ssize, s.C_in, dw + co * s.C_in * 9);
      }, true);
    }
  }
  return !non_finite.load();
}

}  // namespace

template <typename T>
bool winograd_forward(const ConvShape& s, int m, const T* x, const T* w, index_t lda, const index_t* off, const T* b,
                      T* y, int nthreads) {
  switch (m) {
    case 4: return forward_tiles<4>(s, x, w, lda, off, b, y, nthreads);
    case 3: return forward_tiles<3>(s, x, w, lda, off, b, y, nthreads);
    case 2: return forward_tiles<2>(s, x, w, lda, off, b, y, nthreads);
    default: throw std::logic_error("winograd_forward: no tile " + std::to_string(m));  // the callers pass 2, 3, 4
  }
}

template <typename T>
bool winograd_backward_weight(const ConvShape& s, int m, const T* dy, const T* x, T* dw, int nthreads) {
  switch (m) {
    case 4: return backward_weight_tiles<4>(s, dy, x, dw, nthreads);
    case 3: return backward_weight_tiles<3>(s, dy, x, dw, nthreads);
    case 2: return backward_weight_tiles<2>(s, dy, x, dw, nthreads);
    default: throw std::logic_error("winograd_backward_weight: no tile " + std::to_string(m));
  }
}

template bool winograd_forward<float>(const ConvShape&, int, const float*, const float*, index_t, const index_t*,
                                      const float*, float*, int);
template bool winograd_forward<double>(const ConvShape&, int, const double*, const double*, index_t, const index_t*,
                                       const double*, double*, int);

template bool winograd_backward_weight<float>(const ConvShape&, int, const float*, const float*, float*, int);
template bool winograd_backward_weight<double>(const ConvShape&, int, const double*, const double*, double*, int);

}  // namespace fastconv
