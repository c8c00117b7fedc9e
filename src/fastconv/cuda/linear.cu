// Dense layer: the three products are cuBLAS GEMMs (dev.matmul in backends/cupy/linear.py), so
// this file holds only what surrounds them, mirroring csrc/linear.cpp: the bias added to the
// forward's product and the backward-bias, the column sums of dy (M, C_out). __half, float, double.
#include "common.cuh"

// y[i, j] += b[j] over y (M, C) in place, one rounding to T. The column follows the grid stride
// by an addition and a wrap (no 64-bit division per element).
template <typename T>
__global__ void add_bias(T* __restrict__ y, const T* __restrict__ b, i64 n, i64 C) {
    const i64 step = grid_stride(), dj = step % C;
    i64 j = grid_start() % C;
    for (i64 k = grid_start(); k < n; k += step) {
        y[k] = to_storage<T>(to_acc(y[k]) + to_acc(b[j]));
        j += dj;
        if (j >= C) j -= C;
    }
}

// Column sums in two fixed-order passes, so that the result depends on (M, C, rows) only, never on
// the launch: partial[r, j] = the sum of dy[i, j] over the rows i of chunk r (rows r*rows to
// (r+1)*rows - 1, in order); then db[j] = the sum of partial[r, j] over r, in order. Adjacent
// threads take adjacent columns, so every row is read coalesced.
template <typename T>
__global__ void column_partials(const T* __restrict__ dy, acc_t<T>* __restrict__ partial, i64 M, i64 C, i64 rows) {
    typedef acc_t<T> A;
    const i64 chunks = (M + rows - 1) / rows;
    for (i64 item = grid_start(); item < chunks * C; item += grid_stride()) {
        const i64 r = item / C, j = item % C, end = min(M, (r + 1) * rows);
        A s = A(0);
        for (i64 i = r * rows; i < end; ++i) s += to_acc(dy[i * C + j]);
        partial[item] = s;
    }
}

template <typename T>
__global__ void column_sums(const acc_t<T>* __restrict__ partial, T* __restrict__ db, i64 chunks, i64 C) {
    typedef acc_t<T> A;
    for (i64 j = grid_start(); j < C; j += grid_stride()) {
        A s = A(0);
        for (i64 r = 0; r < chunks; ++r) s += partial[r * C + j];
        db[j] = to_storage<T>(s);
    }
}
