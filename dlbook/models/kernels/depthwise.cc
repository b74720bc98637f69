// Depthwise kxk convolution gradients for XLA:CPU, as an XLA FFI handler (dlbook.ops.depthwise).
//
// XLA:CPU lowers the gradient of a depthwise convolution either as a grouped convolution or, for the
// shifted-slice form, as k*k separate reductions over the batch and both spatial axes (about 2 GFLOP/s
// on this project's CPUs). This handler computes both gradients in one pass over NHWC float32 data,
// channels innermost so that every inner loop is a contiguous, vectorisable run over the channels:
//   dw[i, j, c] = sum_{n, oh, ow} x[n, oh*s + i - pt, ow*s + j - pl, c] * dy[n, oh, ow, c]
//   dx[n, h, w, c] = sum_{i, j: (h + pt - i) % s == 0, ...} w[i, j, c] * dy[n, (h+pt-i)/s, (w+pl-j)/s, c]
// (out-of-range pixels are the zero padding). Work is split into chunks (an image and a block of rows)
// that depend only on the shapes, each chunk writes its own partial dw, and the partials are summed in
// chunk order: the result is the same whatever the number of threads.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 8 floats (one AVX register; GCC/Clang vector extension, lowered to whatever SIMD the target has)
typedef float V __attribute__((vector_size(32)));
typedef float VU __attribute__((vector_size(32), aligned(4)));  // the same, unaligned access
inline V Load(const float* p) { return *reinterpret_cast<const VU*>(p); }
inline void Store(float* p, V v) { *reinterpret_cast<VU*>(p) = v; }
// r0..r3 += a[0:32] * b[0:32], 8 channels per register
inline void MulAdd32(V& r0, V& r1, V& r2, V& r3, const float* a, const float* b) {
  r0 += Load(a) * Load(b);
  r1 += Load(a + 8) * Load(b + 8);
  r2 += Load(a + 16) * Load(b + 16);
  r3 += Load(a + 24) * Load(b + 24);
}

struct Shapes {
  int64_t n, h, w, c, kh, kw, ho, wo, s, pt, pl, row_blocks;
};

// Accumulates one image's output rows [o0, o1) into acc (kh*kw*c floats).
void KernelGradRows(const Shapes& p, const float* __restrict x, const float* __restrict dy, int64_t img,
                    int64_t o0, int64_t o1, float* __restrict acc) {
  const int64_t C = p.c;
  for (int64_t oh = o0; oh < o1; ++oh) {
    const float* dyrow = dy + ((img * p.ho + oh) * p.wo) * C;
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ih = oh * p.s + i - p.pt;
      if (ih < 0 || ih >= p.h) continue;
      const float* xrow = x + ((img * p.h + ih) * p.w) * C;
      for (int64_t j = 0; j < p.kw; ++j) {
        // output columns whose input column ow*s + j - pl lies inside the image
        int64_t lo = p.pl - j > 0 ? (p.pl - j + p.s - 1) / p.s : 0;
        int64_t hi = std::min(p.wo, (p.w - 1 + p.pl - j) / p.s + 1);
        if (hi <= lo) continue;
        float* a = acc + (i * p.kw + j) * C;
        const float* xs = xrow + (lo * p.s + j - p.pl) * C;
        const float* ds = dyrow + lo * C;
        const int64_t xstep = p.s * C;
        int64_t c0 = 0;
        for (; c0 + 32 <= C; c0 += 32) {
          V r0 = Load(a + c0), r1 = Load(a + c0 + 8), r2 = Load(a + c0 + 16), r3 = Load(a + c0 + 24);
          const float* xv = xs + c0;
          const float* dv = ds + c0;
          for (int64_t ow = lo; ow < hi; ++ow, xv += xstep, dv += C) MulAdd32(r0, r1, r2, r3, xv, dv);
          Store(a + c0, r0), Store(a + c0 + 8, r1), Store(a + c0 + 16, r2), Store(a + c0 + 24, r3);
        }
        for (; c0 + 8 <= C; c0 += 8) {
          V r0 = Load(a + c0);
          const float* xv = xs + c0;
          const float* dv = ds + c0;
          for (int64_t ow = lo; ow < hi; ++ow, xv += xstep, dv += C) r0 += Load(xv) * Load(dv);
          Store(a + c0, r0);
        }
        if (c0 < C) {
          const float* xv = xs;
          const float* dv = ds;
          for (int64_t ow = lo; ow < hi; ++ow, xv += xstep, dv += C) {
            for (int64_t k = c0; k < C; ++k) a[k] += xv[k] * dv[k];
          }
        }
      }
    }
  }
}

// Writes one image's input-gradient rows [r0, r1). `cols[iw]` lists the (tap column j, output column ow)
// pairs that reach input column iw; rows are enumerated the same way.
struct Tap {
  int64_t k, o;
};

void TapLists(int64_t n_in, int64_t n_out, int64_t k, int64_t s, int64_t pad, std::vector<Tap>& taps,
              std::vector<int64_t>& start) {
  taps.clear();
  start.assign(n_in + 1, 0);
  for (int64_t a = 0; a < n_in; ++a) {
    start[a] = static_cast<int64_t>(taps.size());
    for (int64_t j = 0; j < k; ++j) {
      const int64_t v = a + pad - j;
      if (v < 0 || v % s) continue;
      if (v / s < n_out) taps.push_back({j, v / s});
    }
  }
  start[n_in] = static_cast<int64_t>(taps.size());
}

void InputGradRows(const Shapes& p, const float* __restrict wt, const float* __restrict dy, int64_t img,
                   int64_t r0, int64_t r1, float* __restrict dx) {
  const int64_t C = p.c;
  std::vector<Tap> rt, ct;
  std::vector<int64_t> rs, cs;
  TapLists(p.h, p.ho, p.kh, p.s, p.pt, rt, rs);
  TapLists(p.w, p.wo, p.kw, p.s, p.pl, ct, cs);
  const float* dvs[64];
  const float* wvs[64];
  for (int64_t ih = r0; ih < r1; ++ih) {
    for (int64_t iw = 0; iw < p.w; ++iw) {
      int t = 0;
      for (int64_t a = rs[ih]; a < rs[ih + 1]; ++a) {
        const float* dyrow = dy + ((img * p.ho + rt[a].o) * p.wo) * C;
        const float* wrow = wt + (rt[a].k * p.kw) * C;
        for (int64_t b = cs[iw]; b < cs[iw + 1]; ++b) {
          dvs[t] = dyrow + ct[b].o * C;
          wvs[t] = wrow + ct[b].k * C;
          ++t;
        }
      }
      float* __restrict d = dx + ((img * p.h + ih) * p.w + iw) * C;
      int64_t c0 = 0;
      for (; c0 + 32 <= C; c0 += 32) {
        V r0 = {}, r1 = {}, r2 = {}, r3 = {};
        for (int q = 0; q < t; ++q) MulAdd32(r0, r1, r2, r3, dvs[q] + c0, wvs[q] + c0);
        Store(d + c0, r0), Store(d + c0 + 8, r1), Store(d + c0 + 16, r2), Store(d + c0 + 24, r3);
      }
      for (; c0 + 8 <= C; c0 += 8) {
        V r0 = {};
        for (int q = 0; q < t; ++q) r0 += Load(dvs[q] + c0) * Load(wvs[q] + c0);
        Store(d + c0, r0);
      }
      for (int64_t k = c0; k < C; ++k) {
        float r = 0.f;
        for (int q = 0; q < t; ++q) r += dvs[q][k] * wvs[q][k];
        d[k] = r;
      }
    }
  }
}

// Runs work(0..total-1) on the calling thread and up to threads-1 pool threads; returns when all are done.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t total, F work) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t total = 0;
    F work;
    std::mutex mu;
    std::condition_variable cv;
    explicit State(F f) : work(std::move(f)) {}
  };
  auto st = std::make_shared<State>(std::move(work));
  st->total = total;
  auto run = [](const std::shared_ptr<State>& s) {
    for (;;) {
      const int64_t i = s->next.fetch_add(1);
      if (i >= s->total) return;
      s->work(i);
      if (s->done.fetch_add(1) + 1 == s->total) {
        std::lock_guard<std::mutex> lock(s->mu);
        s->cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([st, run]() { run(st); });
  run(st);
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done.load() == st->total; });
}

ffi::Error DepthwiseGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                             ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx,
                             ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pad_top,
                             int64_t pad_left) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  auto yd = dy.dimensions();
  if (xd.size() != 4 || wd.size() != 3 || yd.size() != 4)
    return ffi::Error::InvalidArgument("depthwise_grad: expected x (N,H,W,C), w (KH,KW,C), dy (N,HO,WO,C)");
  Shapes p{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], yd[1], yd[2], stride, pad_top, pad_left, 1};
  if (wd[2] != p.c || yd[0] != p.n || yd[3] != p.c || stride < 1 || p.kh * p.kw > 64)
    return ffi::Error::InvalidArgument("depthwise_grad: inconsistent shapes or stride");
  // chunks: an image and a block of rows; at least 16 chunks when the batch is small
  p.row_blocks = std::max<int64_t>(1, std::min<int64_t>(std::min(p.ho, p.h), (16 + p.n - 1) / p.n));
  const int64_t chunks = p.n * p.row_blocks;
  const int64_t kc = p.kh * p.kw * p.c;
  std::vector<float> partial(static_cast<size_t>(chunks * kc), 0.f);
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  const float* yp = dy.typed_data();
  float* dxp = dx->typed_data();
  float* part = partial.data();
  ParallelFor(pool, chunks, [=](int64_t q) {
    const int64_t img = q / p.row_blocks, b = q % p.row_blocks;
    KernelGradRows(p, xp, yp, img, b * p.ho / p.row_blocks, (b + 1) * p.ho / p.row_blocks, part + q * kc);
    InputGradRows(p, wp, yp, img, b * p.h / p.row_blocks, (b + 1) * p.h / p.row_blocks, dxp);
  });
  float* dwp = dw->typed_data();
  std::memcpy(dwp, part, sizeof(float) * kc);
  for (int64_t q = 1; q < chunks; ++q) {
    const float* src = part + q * kc;
    for (int64_t k = 0; k < kc; ++k) dwp[k] += src[k];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlbookDepthwiseGrad, DepthwiseGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // w (KH, KW, C)
                                  .Arg<ffi::Buffer<ffi::F32>>()   // dy
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dw (KH, KW, C)
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
