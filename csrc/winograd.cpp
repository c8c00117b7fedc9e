// Winograd F(2x2, 3x3); see winograd.h for the algebra.
//
// Images are taken a chunk at a time. Each chunk is first copied, zero-padded, into planes of
// (2*TH + 2) x (2*TW + 2) per channel (TH x TW tiles per image) in which every tile's 4x4 window
// lies whole (see Planes). The chunk's GEMM columns are then cut into blocks of `nt`, one block per
// thread at a time, each in three steps on that thread's buffers:
//   1. input transform: V[xi] (C_in x nt, packed as the micro-kernel reads B) from the windows;
//   2. 16 GEMMs M[xi] (C_out x nt) = U[xi] V[xi], U (the transformed weight, packed for the
//      micro-kernel once per call) shared by all threads;
//   3. output transform: the 2x2 outputs of each tile and channel from M, + bias, into y.
// Both transforms are vector loops over consecutive GEMM columns. Wide images (along_rows) make a
// column of every tile start along the padded rows, one junk column per tile row included, so that
// consecutive columns' windows are 2 elements apart and their outputs 2 apart in y: plain vector
// loads and stores. Narrow ones, where the junk would be 20% of the GEMM, number only their tiles
// and reach windows and outputs through tables of offsets; their outputs go into padded output
// planes (2*TH x 2*TW) cropped into y after the chunk, unless OH and OW are even.
//
// wgrad (winograd_backward_weight) runs the same way in transpose: per block, V of x's windows and
// D = A dy A^T of dy's 2x2 tiles, then 16 GEMMs S[xi] += D[xi] V[xi]^T over the block's tiles, the
// threads splitting the transforms by channel and the GEMMs by xi, block after block in order; at
// the end dW = G^T S G.
//
// Workspace: shared, U (16 x C_in x C_out, rows rounded up to MR), the padded input planes of a
// chunk and, for the tables with odd OH or OW, its padded output planes (a chunk holds at most
// kChunkBytes of either, or one image); per thread, V and M of one block (16 x (C_in + C_out) x
// nt, see block_tiles) and two offset tables of nt entries. wgrad: shared, S (16 x C_out x C_in),
// a chunk of padded x and dy planes (kChunkBytes, or one image), V and D of one block (16 x (C_in +
// C_out) x 128..512 tiles, see kWgradBlockBytes) and its tables; per thread, one packed B block.
#include "winograd.h"

#include <omp.h>

#include <cstdint>
#include <vector>

#include "gemm.h"

namespace fastconv {
namespace {

// Tiles of 2x2 output pixels: TH x TW per image, the last row/column of tiles clipped when OH/OW
// is odd.
struct TileGrid {
  index_t TH, TW, total;
};

TileGrid tile_grid(const ConvShape& s) {
  const index_t TH = ceil_div(s.OH, 2), TW = ceil_div(s.OW, 2);
  return TileGrid{TH, TW, s.N * TH * TW};
}

// A block's V and M together take at most this many bytes (the thread's L2 is 1 MiB, which the
// stream of U shares), or hold two column panels of tiles. Measured against a floor of four
// panels: 0.85-0.97x the time on VGG's conv1_2, ResNet-50's 3x3x64 at 56 and 3x3x512 at 7; one
// panel and budgets of 256 KiB to 4 MiB were within the noise.
constexpr index_t kBlockBytes = index_t(512) << 10;

template <typename T>
index_t block_tiles(const MicroKernel<T>& uk, const ConvShape& s) {
  const index_t per_tile = 16 * (s.C_in + s.C_out) * index_t(sizeof(T));
  return min_i(uk.nc, max_i(2 * uk.nr, kBlockBytes / per_tile / uk.nr * uk.nr));
}

// The padded planes of a chunk of images. Input: 2*TH + 2 rows of Wp = 2*TW + 2 per channel,
// stored split by row parity, the even rows (TH + 1 of them) then the odd ones (odd rows start
// `odd` elements in), so that tile (th, tw)'s window rows 0..3 start at th*Wp + 2*tw + {0, odd,
// Wp, odd + Wp}: tiles along a tile row, and on into the next (with one junk tile, tw = TW, per
// row: the padded row holds TW + 1 tile starts), start 2 elements apart. Output (when OH or OW is
// odd): 2*TH x 2*TW per channel.
struct Planes {
  index_t Wp, odd, in, OWp, out;
};

Planes planes(const TileGrid& g) {
  const index_t Wp = 2 * g.TW + 2;
  return Planes{Wp, (g.TH + 1) * Wp, 2 * (g.TH + 1) * Wp, 2 * g.TW, 4 * g.TH * g.TW};
}

// U = G g G^T for kMaxMR filters at once (a whole vector loop: GCC 12 leaves a loop of fewer
// iterations than lanes scalar): filter i's tap k is g[k*ldg + i]; element xi of filter i goes to
// u[xi*usize + i].
template <typename T>
__attribute__((always_inline)) inline void weight_lanes_impl(const T* g, index_t ldg, T* u, index_t usize) {
#pragma omp simd
  for (int i = 0; i < kMaxMR; ++i) {
    T gg[4][3];  // G g
    for (int j = 0; j < 3; ++j) {
      const T g0 = g[j * ldg + i], g1 = g[(3 + j) * ldg + i], g2 = g[(6 + j) * ldg + i];
      gg[0][j] = g0;
      gg[1][j] = T(0.5) * (g0 + g1 + g2);
      gg[2][j] = T(0.5) * (g0 - g1 + g2);
      gg[3][j] = g2;
    }
    for (int r = 0; r < 4; ++r) {  // (G g) G^T, row r
      u[(4 * r + 0) * usize + i] = gg[r][0];
      u[(4 * r + 1) * usize + i] = T(0.5) * (gg[r][0] + gg[r][1] + gg[r][2]);
      u[(4 * r + 2) * usize + i] = T(0.5) * (gg[r][0] - gg[r][1] + gg[r][2]);
      u[(4 * r + 3) * usize + i] = gg[r][2];
    }
  }
}
FASTCONV_CLONES void weight_lanes(const float* g, index_t ldg, float* u, index_t usize) {
  weight_lanes_impl(g, ldg, u, usize);
}
FASTCONV_CLONES void weight_lanes(const double* g, index_t ldg, double* u, index_t usize) {
  weight_lanes_impl(g, ldg, u, usize);
}

// U[xi] = (G g G^T)[xi] for the output channels of row panel `panel` of the packed A operands (MR
// channels, zeros past C_out) and every input channel: packed A element (co, ci) of element xi's
// product at u + xi*usize + packed_a_index(co, ci), each depth step's MR channels contiguous.
// Returns whether every filter tap it read was finite.
template <typename T>
bool transform_weight(const MicroKernel<T>& uk, const ConvShape& s, const T* w, index_t lda, const index_t* off,
                      T* u, index_t usize, index_t panel) {
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
  alignas(64) T t[16 * ldt];  // kSteps depth steps of the 16 operands: element xi at t + xi*ldt
  bool finite = true;
  for (index_t pc = 0; pc < s.C_in; pc += kc) {
    const index_t kcb = min_i(kc, s.C_in - pc);
    T* dst = u + packed_a_index(uk, s.C_out, s.C_in, co0, pc);  // depth step pc of the panel; steps MR apart
    for (index_t c = pc; c < pc + kcb; c += kSteps) {
      const int steps = static_cast<int>(min_i(kSteps, pc + kcb - c));
      uk.pack_a(steps * 9, w + co0 * lda, lda, off + c * 9, lanes, g);
      finite = finite && all_finite(g, steps * 9 * MR);
      // in order: each step overwrites the spill of the one before (its lanes past MR: junk)
      for (int k = 0; k < steps; ++k) weight_lanes(g + k * 9 * MR, MR, t + k * MR, ldt);
      for (int xi = 0; xi < 16; ++xi)
        std::memcpy(dst + xi * usize + (c - pc) * MR, t + xi * ldt, static_cast<std::size_t>(steps * MR) * sizeof(T));
    }
  }
  return finite;
}

// Plane src (H x W) into padded planes split by row parity, rows of Wp: source pixel (r, c) at
// padded (r + pad_t, c + pad_l), padded row R at dst + (R % 2)*odd + (R / 2)*Wp, R < rows; zeros
// elsewhere, and a negative padding (dgrad's) crops instead. Returns whether every pixel of src is
// finite (Winograd takes only finite data, see winograd_forward).
template <typename T>
bool pad_plane(const T* src, index_t H, index_t W, index_t pad_t, index_t pad_l, index_t rows, index_t Wp,
               index_t odd, T* dst) {
  const index_t c0 = min_i(Wp, max_i(0, pad_l)), c1 = max_i(c0, min_i(Wp, pad_l + W));
  for (index_t r = 0; r < rows; ++r) {
    T* d = dst + (r % 2) * odd + (r / 2) * Wp;
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
// padded plane whose rows hold TW + 1 tiles (the junk last one included), 2 elements apart, or
// any tiles through a table of offsets.
struct Strided {
  index_t at(index_t l) const { return 2 * l; }
};
struct Table {
  const std::int32_t* off;
  index_t at(index_t l) const { return off[l]; }
};

// V = B^T d B for tiles l < n of one column panel of V: tile l's window d (4x4) at x + where.at(l),
// its rows at + {0, odd, Wp, odd + Wp} (see Planes); element xi to v[xi*ldv + l].
template <typename T, class Where>
__attribute__((always_inline)) inline void input_panel_impl(const T* x, Where where, index_t Wp, index_t odd,
                                                            index_t n, T* v, index_t ldv) {
  // v never overlaps x: tell the vectoriser, which would not version 17 streams
#pragma omp simd
  for (index_t l = 0; l < n; ++l) {
    const T* p = x + where.at(l);
    T d[4][4];
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 4; ++j) d[r][j] = p[(r % 2) * odd + (r / 2) * Wp + j];
    T t[4][4];  // B^T d
    for (int j = 0; j < 4; ++j) {
      t[0][j] = d[0][j] - d[2][j];
      t[1][j] = d[1][j] + d[2][j];
      t[2][j] = d[2][j] - d[1][j];
      t[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B, row i
      v[(4 * i + 0) * ldv + l] = t[i][0] - t[i][2];
      v[(4 * i + 1) * ldv + l] = t[i][1] + t[i][2];
      v[(4 * i + 2) * ldv + l] = t[i][2] - t[i][1];
      v[(4 * i + 3) * ldv + l] = t[i][1] - t[i][3];
    }
  }
}

// Y = A^T m A + bias for tiles l < n of one output channel, element xi of tile l at m[xi*ldm + l]:
// tile l's 2x2 outputs to y + where.at(l), rows OWp apart.
template <typename T, class Where>
__attribute__((always_inline)) inline void output_panel_impl(const T* m, index_t ldm, Where where, index_t OWp,
                                                             index_t n, T bias, T* y) {
#pragma omp simd
  for (index_t l = 0; l < n; ++l) {
    T s[2][4];  // A^T m
    for (int j = 0; j < 4; ++j) {
      const T m0 = m[j * ldm + l], m1 = m[(4 + j) * ldm + l], m2 = m[(8 + j) * ldm + l], m3 = m[(12 + j) * ldm + l];
      s[0][j] = m0 + m1 + m2;
      s[1][j] = m1 - m2 - m3;
    }
    T* q = y + where.at(l);
    q[0] = s[0][0] + s[0][1] + s[0][2] + bias;
    q[1] = s[0][1] - s[0][2] - s[0][3] + bias;
    q[OWp] = s[1][0] + s[1][1] + s[1][2] + bias;
    q[OWp + 1] = s[1][1] - s[1][2] - s[1][3] + bias;
  }
}

// wgrad's transform of dy: D = A e A^T for tiles l < n, tile l's 2x2 dy e at dy + where.at(l),
// its second row `odd` elements on (the row-split padded dy planes); element xi to d[xi*ldd + l].
template <typename T, class Where>
__attribute__((always_inline)) inline void dy_panel_impl(const T* dy, Where where, index_t odd, index_t n, T* d,
                                                         index_t ldd) {
#pragma omp simd
  for (index_t l = 0; l < n; ++l) {
    const T* p = dy + where.at(l);
    const T e[2][2] = {{p[0], p[1]}, {p[odd], p[odd + 1]}};
    T a[4][2];  // A e: rows e0, e0 + e1, e0 - e1, -e1
    for (int j = 0; j < 2; ++j) {
      a[0][j] = e[0][j];
      a[1][j] = e[0][j] + e[1][j];
      a[2][j] = e[0][j] - e[1][j];
      a[3][j] = -e[1][j];
    }
    for (int i = 0; i < 4; ++i) {  // (A e) A^T, row i
      d[(4 * i + 0) * ldd + l] = a[i][0];
      d[(4 * i + 1) * ldd + l] = a[i][0] + a[i][1];
      d[(4 * i + 2) * ldd + l] = a[i][0] - a[i][1];
      d[(4 * i + 3) * ldd + l] = -a[i][1];
    }
  }
}

// dW = G^T S G for output channel co's filters of n input channels: element xi of input channel
// ci's S at s[xi*lds + ci]; dW of ci to dw[ci*9 .. ci*9 + 9).
template <typename T>
__attribute__((always_inline)) inline void weight_grad_impl(const T* s, index_t lds, index_t n, T* dw) {
#pragma omp simd
  for (index_t ci = 0; ci < n; ++ci) {
    T r[3][4];  // G^T S: rows S0 + (S1 + S2)/2, (S1 - S2)/2, (S1 + S2)/2 + S3
    for (int j = 0; j < 4; ++j) {
      const T s0 = s[j * lds + ci], s1 = s[(4 + j) * lds + ci], s2 = s[(8 + j) * lds + ci], s3 = s[(12 + j) * lds + ci];
      r[0][j] = s0 + T(0.5) * (s1 + s2);
      r[1][j] = T(0.5) * (s1 - s2);
      r[2][j] = T(0.5) * (s1 + s2) + s3;
    }
    for (int i = 0; i < 3; ++i) {  // (G^T S) G, row i
      dw[ci * 9 + 3 * i + 0] = r[i][0] + T(0.5) * (r[i][1] + r[i][2]);
      dw[ci * 9 + 3 * i + 1] = T(0.5) * (r[i][1] - r[i][2]);
      dw[ci * 9 + 3 * i + 2] = T(0.5) * (r[i][1] + r[i][2]) + r[i][3];
    }
  }
}

#define FASTCONV_WINOGRAD_PANELS(T, Where)                                                                    \
  FASTCONV_CLONES void input_panel(const T* x, Where where, index_t Wp, index_t odd, index_t n, T* v,        \
                                   index_t ldv) {                                                            \
    input_panel_impl(x, where, Wp, odd, n, v, ldv);                                                          \
  }                                                                                                          \
  FASTCONV_CLONES void output_panel(const T* m, index_t ldm, Where where, index_t OWp, index_t n, T bias, T* y) { \
    output_panel_impl(m, ldm, where, OWp, n, bias, y);                                                       \
  }                                                                                                          \
  FASTCONV_CLONES void dy_panel(const T* dy, Where where, index_t odd, index_t n, T* d, index_t ldd) {       \
    dy_panel_impl(dy, where, odd, n, d, ldd);                                                                \
  }
FASTCONV_WINOGRAD_PANELS(float, Strided)
FASTCONV_WINOGRAD_PANELS(double, Strided)
FASTCONV_WINOGRAD_PANELS(float, Table)
FASTCONV_WINOGRAD_PANELS(double, Table)
#undef FASTCONV_WINOGRAD_PANELS
FASTCONV_CLONES void weight_grad(const float* s, index_t lds, index_t n, float* dw) { weight_grad_impl(s, lds, n, dw); }
FASTCONV_CLONES void weight_grad(const double* s, index_t lds, index_t n, double* dw) {
  weight_grad_impl(s, lds, n, dw);
}

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

// Whether a chunk's GEMM columns run along the padded tile rows, TW + 1 per tile row (the junk
// tile included: at most 1/17 of the columns here), rather than through offset tables (element by
// element). Measured, time of the other way: 32x32 images (TW = 16) 1.5x with tables; 16x16 1.12x
// and 8x8 1.42x along rows (11% and 20% junk).
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
    return static_cast<std::int32_t>(i * image + th * row + 2 * tw);
  }
};

}  // namespace

bool winograd_applies(const ConvShape& s, index_t elem_bytes) {
  if (!(s.KH == 3 && s.KW == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
        s.groups == 1))
    return false;
  const TileGrid g = tile_grid(s);
  const Planes pl = planes(g);
  // Enough tiles to amortise the weight's transform, and channels enough that the GEMMs outweigh
  // the input and output transforms (measured against the direct GEMM path, forward and dgrad,
  // time: 0.87-0.91x at 64 channels on 8x8 images, 0.58-0.78x at 64-256 channels on 56x56 and
  // 224x224, but 1.01-1.18x at 16 and 32 channels). In fp64 only along rows: through the tables
  // ResNet-50's 3x3x512 at 7x7 took 1.13-1.18x the time (fp32: 0.65x with AVX2, 0.87x AVX-512),
  // along rows 0.58-0.74x. The offset tables are int32: one image's padded planes must fit.
  return g.total >= 64 && s.C_in >= 64 && s.C_out >= 64 && (elem_bytes == 4 || along_rows(g)) &&
         max_i(s.C_in * pl.in, s.C_out * pl.out) < (index_t(1) << 31);
}

bool winograd_wgrad_applies(const ConvShape& s, index_t elem_bytes) {
  // Both of its GEMM operands are packed as it goes, D panel by panel through offsets and V^T by a
  // transposing copy, a cost against 2*min(C_in, C_out) flops per packed element: measured against
  // the direct path, time 0.72x at 512 channels (7x7, batch 16) and 0.91x at 128 -> 256 (56x56), but
  // 1.2-1.26x at 64 channels; in fp64 (half the flops per packed byte) 0.97-1.2x at 128-512.
  return elem_bytes == 4 && winograd_applies(s, elem_bytes) && s.C_in >= 128 && s.C_out >= 128;
}

template <typename T>
bool winograd_forward(const ConvShape& s, const T* x, const T* w, index_t lda, const index_t* off, const T* b, T* y,
                      int nthreads) {
  const MicroKernel<T>& uk = winograd_kernel<T>(s.C_out);
  const TileGrid g = tile_grid(s);
  const Planes pl = planes(g);
  const index_t nt = block_tiles(uk, s), chunk = chunk_images<T>(s, pl);
  const Columns cols(g, nt);
  const bool rows_mode = cols.rows;
  // The 16 operands of each kind lie one cache line more than their size apart: a size that is a
  // multiple of 4 KiB (most are) would put element p of all 16 in one set of L1, whose 8 ways the
  // transforms, writing or reading all 16 at once, would thrash (the weight's transform ran 6x
  // slower so at 512 channels).
  const index_t line = 64 / index_t(sizeof(T)), rows = round_up(s.C_out, uk.mr);
  const index_t usize = packed_a_size(uk, s.C_out, s.C_in) + line, vsize = s.C_in * nt + line;
  const index_t msize = s.C_out * nt + line;  // nt: a multiple of NR
  const index_t P = s.OH * s.OW;
  // the tables' outputs go straight into y when every tile lies whole in the image
  const bool direct = rows_mode || (2 * g.TH == s.OH && 2 * g.TW == s.OW);
  Buffer<T> u(16 * usize);  // shared: the transformed weight
  // shared: a chunk's padded input planes; rows mode reads up to 2*NR elements past a plane's end
  Buffer<T> xp(chunk * s.C_in * pl.in + 2 * uk.nr);
  Buffer<T> yp(direct ? 0 : chunk * s.C_out * pl.out);  // shared: its padded output planes
  fill_zero(xp.data() + chunk * s.C_in * pl.in, 2 * uk.nr);
  bool w_finite = true, x_finite = true;
#pragma omp parallel num_threads(nthreads)
  {
    // nowait: the padding loop below ends in a barrier before any block reads U or the flag
#pragma omp for schedule(static) nowait reduction(&& : w_finite)
    for (index_t panel = 0; panel < rows / uk.mr; ++panel)
      w_finite = transform_weight(uk, s, w, lda, off, u.data(), usize, panel) && w_finite;
    Buffer<T> v(16 * vsize), m(16 * msize);  // per thread: one block's V (packed) and M
    Buffer<std::int32_t> win(rows_mode ? 0 : nt), out(rows_mode ? 0 : nt);  // the tables of a block
    Buffer<T> edge(rows_mode ? 4 * (g.TW + 1) : 0);  // the two output rows of a clipped run
    for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
      const index_t imgs = min_i(chunk, s.N - n0);
#pragma omp for schedule(static) reduction(&& : x_finite)
      for (index_t job = 0; job < imgs * s.C_in; ++job)
        x_finite = pad_plane(x + (n0 * s.C_in + job) * s.H * s.W, s.H, s.W, s.pad_t, s.pad_l, 2 * g.TH + 2, pl.Wp,
                             pl.odd, xp.data() + job * pl.in) &&
                   x_finite;
      // every thread reads the flags between this loop's barrier and the next write to them (the
      // next chunk's reduction, two barriers on), so all of them leave together
      if (!(w_finite && x_finite)) break;
      T* yc = direct ? y + n0 * s.C_out * P : yp.data();  // planes of OH x OW, or of the padded output
      const index_t ow = direct ? s.OW : pl.OWp, oplane = direct ? P : pl.out;
#pragma omp for schedule(dynamic, 1)
      for (index_t blk = 0; blk < cols.blocks(imgs); ++blk) {
        const auto [img, q0, count] = cols.block(blk, imgs);
        const index_t width = round_up(count, uk.nr);
        if (!rows_mode)
          for (index_t c = 0; c < width; ++c) {
            // the last panel's columns past the block repeat its last tile: finite, and dropped
            const index_t t = q0 + min_i(c, count - 1);
            win.data()[c] = cols.tile_offset(t, s.C_in * pl.in, pl.Wp);
            out.data()[c] = cols.tile_offset(t, s.C_out * oplane, 2 * ow);
          }
        const T* xb = xp.data() + img * s.C_in * pl.in + (rows_mode ? 2 * q0 : 0);
        for (index_t ci = 0; ci < s.C_in; ++ci)
          for (index_t c = 0; c < width; c += uk.nr) {  // column panel c / NR of depth row ci
            T* vp = v.data() + packed_b_index(uk, s.C_in, nt, ci, c);
            if (rows_mode)
              input_panel(xb + ci * pl.in + 2 * c, Strided{}, pl.Wp, pl.odd, uk.nr, vp, vsize);
            else
              input_panel(xb + ci * pl.in, Table{win.data() + c}, pl.Wp, pl.odd, uk.nr, vp, vsize);
          }
        for (index_t xi = 0; xi < 16; ++xi)
          gemm_unit(uk, PrepackedA<T>{u.data() + xi * usize, s.C_out}, s.C_in, 0, rows / uk.mr,
                    PrepackedB<T>{v.data() + xi * vsize, nt}, 0, count, PlainC<T>{m.data() + xi * msize, nt},
                    static_cast<T*>(nullptr), false);
        for (index_t co = 0; co < s.C_out; ++co) {
          const T bias = b ? b[co] : T(0);
          const T* mc = m.data() + co * nt;
          if (!rows_mode) {
            output_panel(mc, msize, Table{out.data()}, ow, count, bias, yc + co * oplane);
            continue;
          }
          // runs of one tile row each, its junk tile left out; a run whose tiles reach past the
          // image (odd OH or OW) goes through `edge` and is cropped
          T* yo = yc + (img * s.C_out + co) * P;
          for (index_t q = q0; q < q0 + count;) {
            const index_t th = q / (g.TW + 1), tw = q % (g.TW + 1);
            const index_t len = min_i(q0 + count - q, g.TW + 1 - tw), tiles = min_i(len, g.TW - tw);
            const index_t run = min_i(2 * tiles, s.OW - 2 * tw);  // output columns of the run
            const bool rows2 = 2 * th + 1 < s.OH;
            T* dst = yo + 2 * th * s.OW + 2 * tw;
            if (tiles > 0 && rows2 && run == 2 * tiles) {
              output_panel(mc + q - q0, msize, Strided{}, s.OW, tiles, bias, dst);
            } else if (tiles > 0) {
              output_panel(mc + q - q0, msize, Strided{}, 2 * tiles, tiles, bias, edge.data());
              std::memcpy(dst, edge.data(), static_cast<std::size_t>(run) * sizeof(T));
              if (rows2) std::memcpy(dst + s.OW, edge.data() + 2 * tiles, static_cast<std::size_t>(run) * sizeof(T));
            }
            q += len;
          }
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

// wgrad's blocks hold the transforms of this many bytes of tiles (V of x and D of dy, shared by the
// threads), and 128 to 512 tiles: the depth of each block's 16 GEMMs, which add into S (16 x C_out
// x C_in) once per block.
constexpr index_t kWgradBlockBytes = index_t(2) << 20;

template <typename T>
bool winograd_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  const MicroKernel<T>& uk = micro_kernel<T>(s.C_out);
  const TileGrid g = tile_grid(s);
  const Planes pl = planes(g);
  // dy padded to planes of 2*TH rows of Wp, split by row parity like x's: tile (th, tw)'s 2x2 at
  // th*Wp + 2*tw and `dodd` on; the junk tiles of rows mode read zeros
  const index_t dodd = g.TH * pl.Wp, dplane = 2 * dodd;
  const index_t image = (s.C_in * pl.in + s.C_out * dplane) * index_t(sizeof(T));
  const index_t chunk = max_i(1, min_i(s.N, kChunkBytes / image));
  const index_t nt = min_i(512, max_i(128, kWgradBlockBytes / (16 * (s.C_in + s.C_out) * index_t(sizeof(T)))));
  const Columns cols(g, nt);  // tiles, as the forward's columns
  const bool rows_mode = cols.rows;
  const index_t line = 64 / index_t(sizeof(T));  // the 16 operands of a kind a line more apart (see the forward)
  const index_t xsize = s.C_in * nt + line, dsize = s.C_out * nt + line, ssize = s.C_out * s.C_in + line;
  // shared: a chunk's padded x and dy planes (rows mode reads 2 elements past x's last plane), the
  // block's transforms V (16 x C_in x nt) and D (16 x C_out x nt), S and the block's tables
  Buffer<T> xp(chunk * s.C_in * pl.in + line), dp(chunk * s.C_out * dplane);
  Buffer<T> v(16 * xsize), d(16 * dsize), sum(16 * ssize);
  Buffer<std::int32_t> win(rows_mode ? 0 : nt), dwin(rows_mode ? 0 : nt);
  std::vector<index_t> off(static_cast<std::size_t>(nt + kPrefetchRows));  // D read in place: depth p at p
  for (index_t p = 0; p < nt + kPrefetchRows; ++p) off[p] = p;
  fill_zero(xp.data() + chunk * s.C_in * pl.in, line);
  bool finite = true, first = true;
#pragma omp parallel num_threads(nthreads) firstprivate(first)
  {
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: one packed block of V^T
    for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
      const index_t imgs = min_i(chunk, s.N - n0);
#pragma omp for schedule(static) reduction(&& : finite)
      for (index_t job = 0; job < imgs * (s.C_in + s.C_out); ++job) {
        const index_t img = job / (s.C_in + s.C_out), c = job % (s.C_in + s.C_out);
        const bool ok = c < s.C_in ? pad_plane(x + ((n0 + img) * s.C_in + c) * s.H * s.W, s.H, s.W, s.pad_t, s.pad_l,
                                               2 * g.TH + 2, pl.Wp, pl.odd, xp.data() + (img * s.C_in + c) * pl.in)
                                   : pad_plane(dy + ((n0 + img) * s.C_out + c - s.C_in) * s.OH * s.OW, s.OH, s.OW,
                                               index_t(0), index_t(0), 2 * g.TH, pl.Wp, dodd,
                                               dp.data() + (img * s.C_out + c - s.C_in) * dplane);
        finite = ok && finite;
      }
      // every thread reads the flag between this loop's barrier and the next write to it (the next
      // chunk's reduction, several barriers on), so all of them leave together
      if (!finite) break;
      for (index_t blk = 0; blk < cols.blocks(imgs); ++blk) {  // every thread, in step: S adds the blocks in order
        const auto [img, q0, count] = cols.block(blk, imgs);
        if (!rows_mode) {
#pragma omp single
          for (index_t c = 0; c < count; ++c) {
            win.data()[c] = cols.tile_offset(q0 + c, s.C_in * pl.in, pl.Wp);
            dwin.data()[c] = cols.tile_offset(q0 + c, s.C_out * dplane, pl.Wp);
          }
        }
        const index_t shift = rows_mode ? 2 * q0 : 0;
        const T* xb = xp.data() + img * s.C_in * pl.in + shift;
        const T* db = dp.data() + img * s.C_out * dplane + shift;
#pragma omp for schedule(static)
        for (index_t c = 0; c < s.C_in + s.C_out; ++c) {
          if (c < s.C_in && rows_mode)
            input_panel(xb + c * pl.in, Strided{}, pl.Wp, pl.odd, count, v.data() + c * nt, xsize);
          else if (c < s.C_in)
            input_panel(xb + c * pl.in, Table{win.data()}, pl.Wp, pl.odd, count, v.data() + c * nt, xsize);
          else if (rows_mode)
            dy_panel(db + (c - s.C_in) * dplane, Strided{}, dodd, count, d.data() + (c - s.C_in) * nt, dsize);
          else
            dy_panel(db + (c - s.C_in) * dplane, Table{dwin.data()}, dodd, count, d.data() + (c - s.C_in) * nt,
                     dsize);
        }
        // S[xi] (C_out x C_in) += D[xi] (C_out x count) V[xi]^T; D's panels packed as the kernel goes
#pragma omp for schedule(dynamic, 1)
        for (index_t xi = 0; xi < 16; ++xi)
          gemm_unit(uk, InPlaceA<T>{d.data() + xi * dsize, nt, off.data(), s.C_out, true}, count, 0,
                    ceil_div(s.C_out, uk.mr), StridedB<T>{v.data() + xi * xsize, 1, nt}, 0, s.C_in,
                    PlainC<T>{sum.data() + xi * ssize, s.C_in}, bbuf.data(), !first);
        first = false;
      }
    }
    if (finite) {
#pragma omp for schedule(static)
      for (index_t co = 0; co < s.C_out; ++co)
        weight_grad(sum.data() + co * s.C_in, ssize, s.C_in, dw + co * s.C_in * 9);
    }
  }
  return finite;
}

template bool winograd_forward<float>(const ConvShape&, const float*, const float*, index_t, const index_t*,
                                      const float*, float*, int);
template bool winograd_forward<double>(const ConvShape&, const double*, const double*, index_t, const index_t*,
                                       const double*, double*, int);

template bool winograd_backward_weight<float>(const ConvShape&, const float*, const float*, float*, int);
template bool winograd_backward_weight<double>(const ConvShape&, const double*, const double*, double*, int);

}  // namespace fastconv
