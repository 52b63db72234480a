// cuda-sim self-test: the emulation layer checked against scalar definitions, and each of its bug detectors
// checked against a deliberately wrong kernel. Always built with ASan + UBSan (sim/sim.cmake).
//
//   mla_sim_selftest --list         name<TAB>kind<TAB>description per test; kind is
//                                     pass   : must exit 0 (a positive test)
//                                     detect : must exit 0, meaning the deliberately wrong kernel WAS caught
//                                     asan   : must die with an AddressSanitizer report (non-zero exit)
//   mla_sim_selftest --run NAME     one test; prints one result line
//   mla_sim_selftest                every pass / detect test
// The random seed is MLA_SIM_SEED (default 20240531), printed by every test.
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cuda_compat.cuh"
#include "selftest_kernels.h"

using namespace mla_selftest;

namespace {

uint64_t g_seed = 20240531;
std::string g_detail;  // the test's result line detail

struct Failure {
  std::string msg;
};

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) {                                        \
      char _b[512];                                       \
      std::snprintf(_b, sizeof _b, __VA_ARGS__);          \
      throw Failure{std::string(#cond) + ": " + _b};      \
    }                                                     \
  } while (0)

void note(const std::string& s) {
  if (!g_detail.empty()) g_detail += "; ";
  g_detail += s;
}

std::string fmts(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmts(const char* f, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(b, sizeof b, f, ap);
  va_end(ap);
  return b;
}

uint16_t to_bf16_bits(float f) {
  __nv_bfloat16 h = __float2bfloat16(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
uint16_t to_f16_bits(float f) {
  __half h = __float2half(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float from_bits(uint16_t b, bool f16) {
  if (f16) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ----------------------------------------------------------------------------------------------------------------
// mma: A 16x16, B 16x8, C 16x8 distributed to lanes as the PTX ISA figures show them, register by register:
//   A reg r of lane (g,t) = {A[g + 8*(r&1)][2t + 8*(r>>1)], A[..][.. + 1]}
//   B reg r               = {B[2t + 8r][g], B[2t + 8r + 1][g]}
//   C/D element i         = C[g + 8*(i>>1)][2t + (i&1)]
void test_mma(bool f16) {
  std::mt19937_64 rng(g_seed);
  std::uniform_real_distribution<float> U(-2.f, 2.f);
  uint16_t A[16][16], B[16][8];
  float C[16][8];
  for (auto& r : A)
    for (auto& v : r) v = f16 ? to_f16_bits(U(rng)) : to_bf16_bits(U(rng));
  for (auto& r : B)
    for (auto& v : r) v = f16 ? to_f16_bits(U(rng)) : to_bf16_bits(U(rng));
  for (auto& r : C)
    for (auto& v : r) v = U(rng);
  std::vector<uint32_t> a(128), b(64);
  std::vector<float> c(128), d(128, -1.f);
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
      a[4 * lane + r] = A[row][col] | (static_cast<uint32_t>(A[row][col + 1]) << 16);
    }
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * t + 8 * r;
      b[2 * lane + r] = B[k][g] | (static_cast<uint32_t>(B[k + 1][g]) << 16);
    }
    for (int i = 0; i < 4; ++i) c[4 * lane + i] = C[g + 8 * (i >> 1)][2 * t + (i & 1)];
  }
  run_mma(f16, a.data(), b.data(), c.data(), d.data());
  double max_err = 0;
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int m = g + 8 * (i >> 1), n = 2 * t + (i & 1);
      double ref = C[m][n], mag = std::fabs(C[m][n]);
      for (int k = 0; k < 16; ++k) {
        const double p = double(from_bits(A[m][k], f16)) * from_bits(B[k][n], f16);
        ref += p;
        mag += std::fabs(p);
      }
      const double err = std::fabs(d[4 * lane + i] - ref);
      max_err = std::max(max_err, err / (mag + 1e-30));
      CHECK(err <= 1e-6 * mag + 1e-7, "lane %d elem %d (D[%d][%d]) = %.9g, scalar product %.9g", lane, i, m, n,
            d[4 * lane + i], ref);
    }
  }
  note(fmts("max relative error %.2e", max_err));
}

void test_mma_ldmatrix_gemm(bool f16) {
  std::mt19937_64 rng(g_seed + 1);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  std::vector<uint16_t> A(256), B(128);
  for (auto& v : A) v = f16 ? to_f16_bits(U(rng)) : to_bf16_bits(U(rng));
  for (auto& v : B) v = f16 ? to_f16_bits(U(rng)) : to_bf16_bits(U(rng));
  std::vector<float> D(128, -7.f);
  run_mma_ldmatrix_gemm(f16, A.data(), B.data(), D.data());
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double ref = 0, mag = 0;
      for (int k = 0; k < 16; ++k) {
        const double p = double(from_bits(A[m * 16 + k], f16)) * from_bits(B[k * 8 + n], f16);
        ref += p;
        mag += std::fabs(p);
      }
      CHECK(std::fabs(D[m * 8 + n] - ref) <= 1e-6 * mag + 1e-7, "D[%d][%d] = %.9g, A*B = %.9g", m, n, D[m * 8 + n],
            ref);
    }
  note("ldmatrix.x4 (A) + ldmatrix.x2.trans (B) + mma == A*B");
}

// ldmatrix: lane l gets, in register j, {M_j[l/4][2(l%4)], M_j[l/4][2(l%4)+1]} (trans: {M_j[2(l%4)][l/4], ...}),
// where row r of matrix j is the 16 bytes lane 8j + p points at, p being the lane with row_of_lane == r.
void test_ldmatrix(int count, bool trans) {
  std::mt19937_64 rng(g_seed + 2 + count * 2 + trans);
  std::vector<uint16_t> mats(256);
  for (auto& v : mats) v = static_cast<uint16_t>(rng());
  std::vector<int> row_of_lane(32);
  for (int j = 0; j < 4; ++j) {
    int perm[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    std::shuffle(perm, perm + 8, rng);
    for (int r = 0; r < 8; ++r) row_of_lane[8 * j + r] = perm[r];
  }
  std::vector<uint32_t> out(128, 0);
  run_ldmatrix(count, trans, mats.data(), row_of_lane.data(), out.data());
  // The matrix as ldmatrix sees it: its row r is the row supplied by lane 8j + r.
  auto M = [&](int j, int r, int c) { return mats[j * 64 + row_of_lane[8 * j + r] * 8 + c]; };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < count; ++j) {
      const uint16_t lo = trans ? M(j, 2 * t, g) : M(j, g, 2 * t);
      const uint16_t hi = trans ? M(j, 2 * t + 1, g) : M(j, g, 2 * t + 1);
      const uint32_t want = lo | (static_cast<uint32_t>(hi) << 16);
      CHECK(out[4 * lane + j] == want, "lane %d reg %d = 0x%08x, want 0x%08x", lane, j, out[4 * lane + j], want);
    }
  }
  note(fmts("x%d%s: 32 lanes x %d registers match the PTX layout", count, trans ? ".trans" : "", count));
}

// cvt.rn.f16x2.e4m3x2 on every byte in both halves: each e4m3 value (sign, 4-bit exponent of bias 7, 3-bit mantissa,
// subnormals m * 2^-9, 0x7F / 0xFF NaN) decoded here by its definition must equal the f16 the emulation returns
// (every e4m3 value is an f16), and NaN gives 0x7FFF.
void test_cvt_e4m3x2() {
  std::vector<uint16_t> in(256);
  for (int i = 0; i < 256; ++i) in[i] = static_cast<uint16_t>(i | ((255 - i) << 8));
  std::vector<uint32_t> out(256, 0);
  run_cvt_e4m3x2(in.data(), out.data(), 256);
  auto want = [](int b) -> uint32_t {
    const int mag = b & 0x7f, e = mag >> 3, m = mag & 7;
    if (mag == 0x7f) return 0x7fffu;
    const double v = (b & 0x80 ? -1.0 : 1.0) * (e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10));
    const _Float16 h = static_cast<_Float16>(v);
    CHECK(static_cast<double>(h) == v, "byte 0x%02x: %g is not an f16", b, v);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    return bits;
  };
  for (int i = 0; i < 256; ++i) {
    const uint32_t expect = want(i) | (want(255 - i) << 16);
    CHECK(out[i] == expect, "bytes 0x%02x, 0x%02x: 0x%08x, want 0x%08x", i, 255 - i, out[i], expect);
  }
  note("256 byte pairs: every e4m3 value (both halves, subnormals, signed zeros, NaN) to its f16");
}

// Reference shuffle per the CUDA programming guide / PTX shfl.sync; returns the source lane, or -1 for "own value".
int shfl_src(int mode, int lane, int operand, int width) {
  const int lo = lane & ~(width - 1), hi = lo + width - 1;
  switch (mode) {
    case 0: return lo + (operand & (width - 1));
    case 1: return lane - operand >= lo ? lane - operand : -1;
    case 2: return lane + operand <= hi ? lane + operand : -1;
    default: return (lane ^ operand) <= hi ? (lane ^ operand) : -1;
  }
}

void test_shfl(int mode) {
  std::mt19937_64 rng(g_seed + 10 + mode);
  const unsigned masks[] = {0xffffffffu, 0x0000ffffu, 0xffff0000u, 0x00ff00ffu};
  const int threads = 64;
  int checked = 0, configs = 0;
  for (int width = 1; width <= 32; width *= 2) {
    for (unsigned mask : masks) {
      std::vector<int> in(threads), op(threads), out(threads, 12345);
      for (int i = 0; i < threads; ++i) {
        in[i] = static_cast<int>(rng() & 0x7fffffff);
        op[i] = mode == 0 ? static_cast<int>(rng() % 64) : mode == 3 ? static_cast<int>(rng() % 32)
                                                                     : static_cast<int>(rng() % (width + 2));
      }
      run_shfl(mode, width, mask, threads, in.data(), op.data(), out.data());
      ++configs;
      for (int tid = 0; tid < threads; ++tid) {
        const int lane = tid % 32, warp = tid / 32;
        if (!((mask >> lane) & 1u)) {
          CHECK(out[tid] == -1, "non-participating lane wrote");
          continue;
        }
        int src = shfl_src(mode, lane, op[tid], width);
        if (src < 0) src = lane;
        if (!((mask >> src) & 1u)) continue;  // undefined: source lane not in the mask
        const int want = in[warp * 32 + src];
        CHECK(out[tid] == want, "mode %d width %d mask 0x%08x tid %d operand %d: got %d want %d (lane %d)", mode,
              width, mask, tid, op[tid], out[tid], want, src);
        ++checked;
      }
    }
  }
  note(fmts("%d configurations (widths 1..32 x 4 masks), %d lanes checked", configs, checked));
}

void test_shfl_double() {
  std::vector<double> in(32), out(32);
  for (int i = 0; i < 32; ++i) in[i] = 1.0 / (i + 3) + 1e-300 * i;
  run_shfl_double(in.data(), out.data());
  for (int i = 0; i < 32; ++i) CHECK(out[i] == in[31 - i], "lane %d", i);
  note("64-bit shuffle exact");
}

void test_vote() {
  std::mt19937_64 rng(g_seed + 20);
  const unsigned masks[] = {0xffffffffu, 0x0f0f0f0fu, 0x80000001u};
  int configs = 0;
  for (unsigned mask : masks)
    for (int density = 0; density < 3; ++density) {
      const int threads = 64;
      std::vector<int> pred(threads);
      for (int i = 0; i < threads; ++i)
        pred[i] = density == 0 ? 0 : density == 2 ? static_cast<int>(rng() % 5 + 1) : static_cast<int>(rng() % 2);
      std::vector<unsigned> ballot(threads);
      std::vector<int> any(threads), all(threads);
      run_vote(mask, threads, pred.data(), ballot.data(), any.data(), all.data());
      ++configs;
      for (int w = 0; w < 2; ++w) {
        unsigned want = 0;
        for (int l = 0; l < 32; ++l)
          if (((mask >> l) & 1u) && pred[w * 32 + l]) want |= 1u << l;
        for (int l = 0; l < 32; ++l) {
          const int tid = w * 32 + l;
          if (!((mask >> l) & 1u)) {
            CHECK(ballot[tid] == 0xdeadbeefu, "outside mask");
            continue;
          }
          CHECK(ballot[tid] == want, "ballot tid %d: 0x%08x want 0x%08x", tid, ballot[tid], want);
          CHECK(any[tid] == (want != 0), "any tid %d", tid);
          CHECK(all[tid] == (want == mask), "all tid %d", tid);
        }
      }
    }
  note(fmts("%d configurations", configs));
}

void test_atomics() {
  const int blocks = 3, threads = 96, n = blocks * threads;
  std::mt19937_64 rng(g_seed + 30);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  std::vector<float> values(n);
  for (auto& v : values) v = std::round(U(rng) * 256.f) / 256.f;  // exactly summable in float
  int icounter = 0, imax = INT32_MIN, imin = INT32_MAX, exch = -1;
  float fsum = 0.f;
  unsigned cas = 0;
  run_atomics(blocks, threads, values.data(), &icounter, &fsum, &imax, &imin, &cas, &exch);
  double sum = 0;
  int wmax = INT32_MIN, wmin = INT32_MAX;
  for (float v : values) {
    sum += v;
    wmax = std::max(wmax, static_cast<int>(v * 1000.f));
    wmin = std::min(wmin, static_cast<int>(v * 1000.f));
  }
  CHECK(icounter == n, "atomicAdd(int): %d", icounter);
  CHECK(fsum == static_cast<float>(sum), "atomicAdd(float): %.9g want %.9g", fsum, sum);
  CHECK(imax == wmax && imin == wmin, "atomicMax/Min");
  CHECK(cas == static_cast<unsigned>(n), "atomicCAS loop: %u", cas);
  CHECK(exch >= 0 && exch < n, "atomicExch");
  note(fmts("%d threads", n));
}

void test_cp_async() {
  const int rows = 16, valid = 11;
  std::vector<float> in(valid * 8);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) + 0.5f;
  for (cudasim::Order o : cudasim::kAllOrders) {  // every landing-time rule (see README.md)
    cudasim::ScopedOrder scope(o, g_seed);
    std::vector<float> out(rows * 8, -1.f);
    cudasim::reset_traffic();
    run_cp_async(in.data(), rows, valid, out.data());
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 8; ++c) {
        const float want = r < valid ? in[r * 8 + c] : 0.f;
        CHECK(out[r * 8 + c] == want, "order %s row %d col %d: %g want %g", cudasim::order_name(o), r, c,
              out[r * 8 + c], want);
      }
    const auto& rec = cudasim::last_launch();
    CHECK(rec.bytes_read == static_cast<uint64_t>(valid) * 32 && rec.loads == static_cast<uint64_t>(valid) * 2,
          "order %s: cp.async bytes read %" PRIu64 " in %" PRIu64 " loads", cudasim::order_name(o), rec.bytes_read,
          rec.loads);
    CHECK(rec.bytes_written == static_cast<uint64_t>(rows) * 32, "bytes written %" PRIu64, rec.bytes_written);
  }
  note("copies + zero-fill through two commit groups, in all 3 orders (landing times); 352 bytes read, counted at "
       "issue (zero-fill rows read nothing)");
}

// The landing-time rule itself: a thread reading its cp.async destination right after issue (before any wait or
// scheduling point) sees the poison in forward order (lands at the wait), the data in reverse order (lands at
// issue), and either, per copy, in random order.
void test_cp_async_landing() {
  std::vector<float> in(128);
  for (int i = 0; i < 128; ++i) in[i] = static_cast<float>(i) + 0.25f;
  int landed[3] = {0, 0, 0};
  for (cudasim::Order o : cudasim::kAllOrders) {
    cudasim::ScopedOrder scope(o, g_seed);
    std::vector<float> out(128, -1.f);
    run_bad_cp_async_no_wait(in.data(), out.data());
    int n = 0;
    for (int i = 0; i < 128; ++i) {
      CHECK(std::isnan(out[i]) || out[i] == in[i], "order %s element %d: %g", cudasim::order_name(o), i, out[i]);
      n += !std::isnan(out[i]);
    }
    CHECK(n % 4 == 0, "a 16-byte copy landed in part");
    landed[static_cast<int>(o)] = n / 4;
  }
  CHECK(landed[0] == 0, "forward: %d copies landed before their wait", landed[0]);
  CHECK(landed[1] == 32, "reverse: %d of 32 copies landed at issue", landed[1]);
  note(fmts("copies visible right after issue: forward 0/32, reverse 32/32, random %d/32", landed[2]));
}

// The 2-stage cp.async pipeline (with its trailing barrier) against a host reference, bit-identical in all orders.
std::vector<float> pipeline_input(int tiles) {
  std::mt19937_64 rng(g_seed + 50);
  std::vector<float> in(static_cast<size_t>(tiles) * 512);
  for (auto& v : in) v = static_cast<float>(static_cast<int>(rng() % 257) - 128) / 16.f;
  return in;
}
std::vector<float> pipeline_reference(const std::vector<float>& in, int tiles) {
  std::vector<float> out(128);
  for (int t = 0; t < 128; ++t) {
    float acc = 0.f;
    for (int it = 0; it < tiles; ++it) {
      const float* tile = &in[static_cast<size_t>(it) * 512];
      for (int k = 0; k < 4; ++k) {
        const float mine = tile[k * 128 + (t * 37 + it) % 128];
        const float other = tile[k * 128 + ((t ^ 1) * 37 + it) % 128];
        acc = acc * 0.5f + (mine + other);
      }
    }
    out[t] = acc;
  }
  return out;
}

void test_cp_async_pipeline() {
  int checked = 0;
  for (int tiles : {1, 2, 3, 6}) {
    const std::vector<float> in = pipeline_input(tiles);
    const std::vector<float> ref = pipeline_reference(in, tiles);
    for (cudasim::Order o : cudasim::kAllOrders) {
      cudasim::ScopedOrder scope(o, g_seed);
      std::vector<float> out(128, -1.f);
      run_cp_async_pipeline(in.data(), tiles, out.data());
      for (int t = 0; t < 128; ++t)
        CHECK(out[t] == ref[t], "%d tiles, order %s, thread %d: %.9g want %.9g", tiles, cudasim::order_name(o), t,
              out[t], ref[t]);
      ++checked;
    }
  }
  note(fmts("1/2/3/6 tiles through 2 stages: the reference bits in forward/reverse/random order (%d runs)", checked));
}

void test_block_reduce() {
  std::mt19937_64 rng(g_seed + 40);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int n = 3000;
  std::vector<float> in(n);
  for (auto& v : in) v = U(rng);
  for (int threads : {64, 128, 256}) {
    std::vector<float> first;
    for (cudasim::Order o : cudasim::kAllOrders) {
      cudasim::ScopedOrder scope(o, g_seed);
      std::vector<float> out(3, 0.f);
      run_block_reduce(threads, in.data(), n, out.data());
      for (int b = 0; b < 3; ++b) {
        double ref = 0, mag = 0;
        for (int i = b * 1024; i < std::min(n, (b + 1) * 1024); ++i) {
          ref += in[i];
          mag += std::fabs(in[i]);
        }
        CHECK(std::fabs(out[b] - ref) <= 1e-6 * mag, "threads %d block %d order %s: %.9g want %.9g", threads, b,
              cudasim::order_name(o), out[b], ref);
      }
      if (first.empty()) {
        first = out;
      } else {
        CHECK(same_bits(first, out), "threads %d: %s order gives different bits", threads, cudasim::order_name(o));
      }
    }
  }
  note("64/128/256 threads x 3 blocks: reference result, bit-identical in forward/reverse/random order");
}

void test_traffic() {
  const int n = 1003;
  std::vector<float> in(n), out(n, 0.f);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i);
  cudasim::reset_traffic();
  const cudasim::Traffic before = cudasim::traffic();
  run_traffic_copy(in.data(), out.data(), n);
  const auto& rec = cudasim::last_launch();
  for (int i = 0; i < n; ++i) CHECK(out[i] == 2.f * in[i], "out[%d]", i);
  CHECK(rec.bytes_read == 4u * n, "bytes_read %" PRIu64 " want %d", rec.bytes_read, 4 * n);
  CHECK(rec.bytes_written == 4u * n, "bytes_written %" PRIu64 " want %d", rec.bytes_written, 4 * n);
  CHECK(rec.loads == n / 4 + n % 4 && rec.stores == n / 4 + n % 4, "instruction counts %" PRIu64 "/%" PRIu64,
        rec.loads, rec.stores);
  const cudasim::Traffic after = cudasim::traffic();
  CHECK(after.bytes_read - before.bytes_read == 4u * n, "cumulative counter");
  run_traffic_copy(in.data(), out.data(), n);
  CHECK(cudasim::traffic().bytes_read == 8u * n, "cumulative after two launches");
  CHECK(cudasim::last_launch().bytes_read == 4u * n, "per-launch record");
  note(fmts("%d floats: %" PRIu64 " bytes read, %" PRIu64 " written, exactly", n, rec.bytes_read, rec.bytes_written));
}

void test_onchip_counters() {
  std::vector<uint8_t> in(1024, 1);
  std::vector<float> out(128, -1.f);
  cudasim::set_profile_block(1);
  run_onchip_counts(in.data(), out.data());
  cudasim::set_profile_block(-1);
  const cudasim::LaunchRecord rec = cudasim::last_launch();
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t) CHECK(out[b * 64 + t] == static_cast<float>(63 - t), "out[%d]", b * 64 + t);
  const cudasim::Traffic& c = rec.counters;
  CHECK(c.bytes_read == 2048 && c.smem_async_bytes == 2048, "cp.async: %" PRIu64 " read, %" PRIu64 " to shared", c.bytes_read, c.smem_async_bytes);
  CHECK(c.smem_store_bytes == 512 && c.smem_load_bytes == 512, "st_shared %" PRIu64 ", ld_shared %" PRIu64, c.smem_store_bytes, c.smem_load_bytes);
  CHECK(c.smem_ldmatrix_bytes == 2 * 640 && c.smem_ldmatrix_wavefronts == 2 * 12, "ldmatrix %" PRIu64 " bytes, %" PRIu64 " passes", c.smem_ldmatrix_bytes, c.smem_ldmatrix_wavefronts);
  CHECK(c.mma == 6 && c.barriers == 4, "%" PRIu64 " mma, %" PRIu64 " barriers", c.mma, c.barriers);
  CHECK(rec.profile.size() == 3, "block 1 has %zu barrier intervals, want 3", rec.profile.size());
  if (rec.profile.size() == 3) {
    const cudasim::PhaseCounts &p0 = rec.profile[0], &p1 = rec.profile[1], &p2 = rec.profile[2];
    CHECK(p0.bytes_read == 1024 && p0.smem_async_bytes == 1024 && p0.smem_store_bytes == 256 && p0.smem_ldmatrix_bytes == 0, "interval 0");
    CHECK(p1.smem_ldmatrix_bytes == 640 && p1.smem_ldmatrix_wavefronts == 12 && p1.smem_load_bytes == 256, "interval 1");
    CHECK(p1.mma_per_warp.size() == 2 && p1.mma_per_warp[0] == 2 && p1.mma_per_warp[1] == 1, "interval 1: mma per warp");
    CHECK(p2.bytes_written == 256 && p2.mma_per_warp.empty(), "interval 2");
    CHECK(p0.loads > 0 && 2 * p0.loads == c.loads && p1.loads == 0 && p2.loads == 0, "global loads per interval: %" PRIu64 " %" PRIu64 " %" PRIu64 " of %" PRIu64,
          p0.loads, p1.loads, p2.loads, c.loads);
  }
  note("cp.async, st_shared / ld_shared, ldmatrix passes (one bank-conflicted x1), mma per warp and barriers, per launch and per barrier interval of the profiled block");
}

void test_syncthreads_count() {
  for (int threads : {32, 100, 256}) {
    std::vector<int> pred(threads);
    int count = 0;
    for (int i = 0; i < threads; ++i) {
      pred[i] = (i % 3 == 0) ? 7 : 0;
      count += pred[i] != 0;
    }
    std::vector<int> out(3, -1);
    run_syncthreads_count(threads, pred.data(), out.data());
    CHECK(out[0] == count && out[1] == 0 && out[2] == 1, "threads %d: %d %d %d", threads, out[0], out[1], out[2]);
    std::fill(pred.begin(), pred.end(), 1);
    run_syncthreads_count(threads, pred.data(), out.data());
    CHECK(out[0] == threads && out[1] == 1 && out[2] == 1, "all true");
  }
  note("count/and/or, partial last warp");
}

void test_shfl_after_exit() {
  std::vector<int> in(64), out(64, -5);
  for (int i = 0; i < 64; ++i) in[i] = 100 + i;
  run_shfl_after_exit(20, in.data(), out.data());
  for (int i = 0; i < 64; ++i) {
    const int lane = i % 32;
    const int want = lane < 20 ? in[(i / 32) * 32] : -5;
    CHECK(out[i] == want, "tid %d: %d want %d", i, out[i], want);
  }
  note("full-mask shuffle completes among the 20 live lanes of each warp");
}

void test_concurrent_os_threads() {
  // Two OS threads run kernels with static shared memory at the same time: per-thread state must not mix.
  const int n = 3000;
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>((i * 37) % 101) - 50.f;
  std::vector<float> ref(3);
  run_block_reduce(128, in.data(), n, ref.data());
  bool ok[2] = {false, false};
  std::string err[2];
  auto work = [&](int id) {
    try {
      cudasim::set_order(id ? cudasim::Order::Random : cudasim::Order::Reverse, 7);
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<float> out(3);
        run_block_reduce(128, in.data(), n, out.data());
        if (!same_bits(out, ref)) throw std::runtime_error("different result");
      }
      ok[id] = true;
    } catch (const std::exception& e) {
      err[id] = e.what();
    }
  };
  std::thread a(work, 0), b(work, 1);
  a.join();
  b.join();
  CHECK(ok[0] && ok[1], "%s / %s", err[0].c_str(), err[1].c_str());
  note("2 OS threads x 20 launches, identical results");
}

void test_error_recovery() {
  std::vector<int> out(64);
  bool thrown = false;
  try {
    run_bad_barrier_deadlock(out.data());
  } catch (const cudasim::SimError&) {
    thrown = true;
  }
  CHECK(thrown, "the deadlock was not reported");
  // The emulator must be usable again at once (stacks reused, state reset).
  test_block_reduce();
  g_detail.clear();
  note("after a failed launch, launches work and give the reference result");
}

void test_switch_rate() {
  const int blocks = 4, threads = 256, iters = 300;
  std::vector<int> out(blocks * threads);
  const uint64_t sw0 = cudasim::total_fiber_switches();
  const auto t0 = std::chrono::steady_clock::now();
  run_barrier_loop(blocks, threads, iters, out.data());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t sw = cudasim::total_fiber_switches() - sw0;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) {
      long want = 0;
      for (int it = 0; it < iters; ++it) want += it + (t + 1) % threads;
      CHECK(out[b * threads + t] == want, "barrier loop result");
    }
  const double rate = static_cast<double>(sw) / s;
  std::printf("fiber switches: %" PRIu64 " in %.3f s = %.2f M switches/s (this build: %s)\n", sw, s, rate / 1e6,
#if defined(__SANITIZE_ADDRESS__)
              "ASan+UBSan"
#else
              "no sanitizers"
#endif
  );
  note(fmts("%.2f M fiber switches/s", rate / 1e6));
}

// ----- deliberately wrong kernels -------------------------------------------------------------------------------
void detect_missing_syncthreads() {
  const int threads = 128;
  std::vector<float> in(threads);
  for (int i = 0; i < threads; ++i) in[i] = static_cast<float>(i * 3);
  std::vector<std::vector<float>> outs;
  for (cudasim::Order o : cudasim::kAllOrders) {
    cudasim::ScopedOrder scope(o, g_seed);
    std::vector<float> out(threads);
    run_bad_missing_sync(in.data(), out.data(), threads);
    for (float v : out) CHECK(!std::isnan(v), "poison seen: this kernel is meant for the order check");
    outs.push_back(out);
  }
  const bool differ = !same_bits(outs[0], outs[1]) || !same_bits(outs[0], outs[2]);
  CHECK(differ, "NOT DETECTED: the three thread orders gave identical outputs");
  note("caught: outputs differ between thread orders (forward vs reverse vs random)");
}

template <class F>
void expect_nan_exactly(const char* what, const std::vector<float>& out, F unwritten) {
  int nans = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool should = unwritten(static_cast<int>(i));
    CHECK(std::isnan(out[i]) == should, "%s: element %zu is %g (unwritten: %d)", what, i, out[i], should);
    nans += should;
  }
  CHECK(nans > 0, "NOT DETECTED");
  note(fmts("caught: %d reads of unwritten shared memory gave NaN (poison)", nans));
}

void detect_uninit_static() {
  const int threads = 96;
  std::vector<float> in(threads, 1.f), out(threads);
  run_bad_uninit_static(in.data(), out.data(), threads);
  expect_nan_exactly("static", out, [&](int i) { return i >= threads / 2; });
}
void detect_uninit_static_template() {
  std::vector<float> in(64, 2.f), out(64);
  run_bad_uninit_static_template(in.data(), out.data());
  expect_nan_exactly("static (template kernel)", out, [](int i) { return i % 2 == 1; });
}
void detect_uninit_dynamic() {
  const int threads = 40;
  std::vector<float> in(threads, 3.f), out(threads);
  run_bad_uninit_dynamic(in.data(), out.data(), threads);
  expect_nan_exactly("dynamic", out, [](int i) { return i == 3; });
}
void detect_uninit_other_block() {
  const int blocks = 3;
  std::vector<float> in(64, 4.f), out(64 * blocks);
  run_bad_uninit_other_block(in.data(), out.data(), blocks);
  expect_nan_exactly("re-poisoned per block", out, [](int i) { return i >= 64; });
}

void detect_barrier_deadlock() {
  std::vector<int> out(64);
  try {
    run_bad_barrier_deadlock(out.data());
  } catch (const cudasim::SimError& e) {
    const std::string m = e.what();
    CHECK(m.find("bad_barrier_deadlock_kernel") != std::string::npos, "message does not name the kernel: %s",
          m.c_str());
    CHECK(m.find("deadlock") != std::string::npos, "message: %s", m.c_str());
    note("caught: SimError \"" + m + "\"");
    return;
  }
  CHECK(false, "NOT DETECTED: the launch returned");
}

void detect_early_exit_strict() {
  std::vector<int> out(64, -1);
  run_bad_early_exit(out.data(), 64);  // default: exited threads do not count at barriers (as on sm_70+)
  for (int t = 0; t < 32; ++t) CHECK(out[t] == (t + 1) % 32, "non-strict result");
  cudasim::set_strict_barriers(true);
  try {
    run_bad_early_exit(out.data(), 64);
  } catch (const cudasim::SimError& e) {
    cudasim::set_strict_barriers(false);
    const std::string m = e.what();
    CHECK(m.find("bad_early_exit_kernel") != std::string::npos, "%s", m.c_str());
    note("caught with strict barriers: \"" + m + "\"");
    return;
  }
  cudasim::set_strict_barriers(false);
  CHECK(false, "NOT DETECTED with strict barriers");
}

void detect_cp_async_no_wait() {
  cudasim::ScopedOrder scope(cudasim::Order::Forward, g_seed);  // the order whose copies land at the wait
  std::vector<float> in(128), out(128);
  for (int i = 0; i < 128; ++i) in[i] = static_cast<float>(i);
  run_bad_cp_async_no_wait(in.data(), out.data());
  expect_nan_exactly("cp.async read before wait", out, [](int) { return true; });
}

// The pipeline without its trailing __syncthreads: a warp that is done reading stage it%2 issues the copy of tile
// it+2 into it while other warps still read it. Forward order lands copies at the wait (the bug stays hidden there,
// the output equals the reference); reverse order lets the last warp run ahead to the barrier and lands at issue.
void detect_cp_async_pipeline_war() {
  const int tiles = 6;
  const std::vector<float> in = pipeline_input(tiles);
  const std::vector<float> ref = pipeline_reference(in, tiles);
  std::vector<std::vector<float>> outs;
  for (cudasim::Order o : cudasim::kAllOrders) {
    cudasim::ScopedOrder scope(o, g_seed);
    std::vector<float> out(128, -1.f);
    run_bad_cp_async_pipeline_war(in.data(), tiles, out.data());
    for (float v : out) CHECK(!std::isnan(v), "poison seen: this kernel is meant for the order check");
    outs.push_back(out);
  }
  std::string differ;
  for (int o = 1; o < 3; ++o)
    if (!same_bits(outs[0], outs[o]))
      differ += std::string(differ.empty() ? "" : " and ") + cudasim::order_name(cudasim::kAllOrders[o]);
  CHECK(!differ.empty(), "NOT DETECTED: the three thread orders gave identical outputs");
  note("caught: outputs differ from forward under " + differ +
       (same_bits(outs[0], ref) ? " (forward, landing at the wait, gives the reference: the bug hides there)" : ""));
}

template <class F>
void expect_sim_error(F f, const char* kernel, const char* needle) {
  try {
    f();
  } catch (const cudasim::SimError& e) {
    const std::string m = e.what();
    CHECK(m.find(kernel) != std::string::npos && m.find(needle) != std::string::npos, "message: %s", m.c_str());
    note("caught: SimError \"" + m + "\"");
    return;
  }
  CHECK(false, "NOT DETECTED: the launch returned");
}

void detect_shfl_mask() {
  std::vector<int> out(32);
  expect_sim_error([&] { run_bad_shfl_mask(out.data()); }, "bad_shfl_mask_kernel", "not in its mask");
}
void detect_ldmatrix_global() {
  std::vector<uint16_t> g(64 + 8);
  std::vector<uint32_t> out(32);
  // 16-byte aligned start inside the vector
  uint16_t* p = g.data();
  while (reinterpret_cast<uintptr_t>(p) % 16) ++p;
  expect_sim_error([&] { run_bad_ldmatrix_global(p, out.data()); }, "bad_ldmatrix_global_kernel",
                   "not in shared memory");
}

// ASan: these must not return.
int asan_oob_write() {
  const int n = 100;
  std::vector<float> out(n);
  run_bad_oob_write(out.data(), n);
  return 3;
}
int asan_oob_read() {
  const int n = 100;
  std::vector<float> in(n, 1.f), out(n);
  run_bad_oob_read(in.data(), out.data(), n);
  return 3;
}
int asan_oob_dynamic_shared() {
  const int n = 64;
  std::vector<float> out(n);
  run_bad_oob_dynamic_shared(out.data(), n);
  return 3;
}

struct Test {
  const char* name;
  const char* kind;
  const char* what;
  std::function<void()> fn;     // pass / detect
  std::function<int()> asan;    // asan
};

std::vector<Test> tests() {
  return {
      {"mma_bf16", "pass", "mma m16n8k16 bf16 == scalar product of the PTX-layout fragments", [] { test_mma(false); }, {}},
      {"mma_f16", "pass", "mma m16n8k16 f16 == scalar product of the PTX-layout fragments", [] { test_mma(true); }, {}},
      {"mma_ldmatrix_bf16", "pass", "ldmatrix x4 / x2.trans feeding mma (bf16) == A*B", [] { test_mma_ldmatrix_gemm(false); }, {}},
      {"mma_ldmatrix_f16", "pass", "ldmatrix x4 / x2.trans feeding mma (f16) == A*B", [] { test_mma_ldmatrix_gemm(true); }, {}},
      {"cvt_e4m3x2", "pass", "cvt.rn.f16x2.e4m3x2: every e4m3 byte to its f16, low byte to the low half", test_cvt_e4m3x2, {}},
      {"ldmatrix_x1", "pass", "ldmatrix x1 per-lane layout", [] { test_ldmatrix(1, false); }, {}},
      {"ldmatrix_x2", "pass", "ldmatrix x2 per-lane layout", [] { test_ldmatrix(2, false); }, {}},
      {"ldmatrix_x4", "pass", "ldmatrix x4 per-lane layout", [] { test_ldmatrix(4, false); }, {}},
      {"ldmatrix_x1_trans", "pass", "ldmatrix x1.trans per-lane layout", [] { test_ldmatrix(1, true); }, {}},
      {"ldmatrix_x2_trans", "pass", "ldmatrix x2.trans per-lane layout", [] { test_ldmatrix(2, true); }, {}},
      {"ldmatrix_x4_trans", "pass", "ldmatrix x4.trans per-lane layout", [] { test_ldmatrix(4, true); }, {}},
      {"shfl_idx", "pass", "__shfl_sync, all widths, partial masks", [] { test_shfl(0); }, {}},
      {"shfl_up", "pass", "__shfl_up_sync, all widths, partial masks", [] { test_shfl(1); }, {}},
      {"shfl_down", "pass", "__shfl_down_sync, all widths, partial masks", [] { test_shfl(2); }, {}},
      {"shfl_xor", "pass", "__shfl_xor_sync, all widths, partial masks", [] { test_shfl(3); }, {}},
      {"shfl_double", "pass", "64-bit __shfl_xor_sync", test_shfl_double, {}},
      {"vote", "pass", "__ballot_sync / __any_sync / __all_sync with masks", test_vote, {}},
      {"atomics", "pass", "atomicAdd (int, float) / Max / Min / CAS / Exch", test_atomics, {}},
      {"cp_async", "pass", "cp.async 16 + zero-fill, commit groups, wait<1>/wait<0>, all orders", test_cp_async, {}},
      {"cp_async_landing", "pass", "cp.async landing time per thread order: wait (forward), issue (reverse), either (random)", test_cp_async_landing, {}},
      {"cp_async_pipeline", "pass", "2-stage cp.async pipeline == reference, bit-identical in all thread orders", test_cp_async_pipeline, {}},
      {"block_reduce", "pass", "block reduction == reference, bit-identical in all thread orders", test_block_reduce, {}},
      {"traffic", "pass", "traffic counters count exactly the bytes of a known kernel", test_traffic, {}},
      {"onchip_counters", "pass", "on-chip counters and the profiled block's barrier intervals of a known kernel", test_onchip_counters, {}},
      {"syncthreads_count", "pass", "__syncthreads_count / _and / _or", test_syncthreads_count, {}},
      {"shfl_after_exit", "pass", "exited lanes do not deadlock a full-mask shuffle", test_shfl_after_exit, {}},
      {"concurrent_os_threads", "pass", "launches on two OS threads at once", test_concurrent_os_threads, {}},
      {"error_recovery", "pass", "a failed launch leaves the emulator usable", test_error_recovery, {}},
      {"switch_rate", "pass", "fiber switch rate (printed)", test_switch_rate, {}},
      {"missing_syncthreads", "detect", "missing __syncthreads caught by the thread-order check", detect_missing_syncthreads, {}},
      {"uninit_shared_static", "detect", "unwritten static shared memory read: NaN poison", detect_uninit_static, {}},
      {"uninit_shared_static_template", "detect", "unwritten static shared memory in a template kernel: NaN poison", detect_uninit_static_template, {}},
      {"uninit_shared_dynamic", "detect", "unwritten dynamic shared memory read: NaN poison", detect_uninit_dynamic, {}},
      {"uninit_shared_other_block", "detect", "shared memory is re-poisoned for every block", detect_uninit_other_block, {}},
      {"barrier_deadlock", "detect", "barrier not reached by all live threads: SimError naming the kernel", detect_barrier_deadlock, {}},
      {"early_exit_strict", "detect", "exit while others wait at __syncthreads: SimError in strict mode", detect_early_exit_strict, {}},
      {"cp_async_no_wait", "detect", "reading a cp.async destination before the wait: NaN poison", detect_cp_async_no_wait, {}},
      {"cp_async_pipeline_war", "detect", "cp.async pipeline missing its trailing __syncthreads (write-after-read): thread-order check", detect_cp_async_pipeline_war, {}},
      {"shfl_mask_misuse", "detect", "lane outside its own shuffle mask: SimError", detect_shfl_mask, {}},
      {"ldmatrix_global_pointer", "detect", "ldmatrix from global memory: SimError", detect_ldmatrix_global, {}},
      {"oob_write", "asan", "one element past a global buffer (store): AddressSanitizer", {}, asan_oob_write},
      {"oob_read", "asan", "one element past a global buffer (load): AddressSanitizer", {}, asan_oob_read},
      {"oob_dynamic_shared", "asan", "one element past the dynamic shared memory: AddressSanitizer", {}, asan_oob_dynamic_shared},
  };
}

int run_one(const Test& t) {
  g_detail.clear();
  if (t.asan) {
    std::printf("RUN %s (seed %" PRIu64 "): expecting an AddressSanitizer report\n", t.name, g_seed);
    std::fflush(stdout);
    const int rc = t.asan();
    std::printf("FAIL %s: NOT DETECTED (the out-of-bounds access went unreported)\n", t.name);
    return rc;
  }
  try {
    t.fn();
    std::printf("PASS %s (seed %" PRIu64 "): %s\n", t.name, g_seed, g_detail.c_str());
    return 0;
  } catch (const Failure& f) {
    std::printf("FAIL %s (seed %" PRIu64 "): %s\n", t.name, g_seed, f.msg.c_str());
  } catch (const cudasim::SimError& e) {
    std::printf("FAIL %s (seed %" PRIu64 "): unexpected SimError: %s\n", t.name, g_seed, e.what());
  } catch (const std::exception& e) {
    std::printf("FAIL %s (seed %" PRIu64 "): exception: %s\n", t.name, g_seed, e.what());
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* s = std::getenv("MLA_SIM_SEED")) g_seed = std::strtoull(s, nullptr, 10);
  const std::vector<Test> all = tests();
  if (argc >= 2 && std::strcmp(argv[1], "--list") == 0) {
    for (const Test& t : all) std::printf("%s\t%s\t%s\n", t.name, t.kind, t.what);
    return 0;
  }
  if (argc >= 3 && std::strcmp(argv[1], "--run") == 0) {
    for (const Test& t : all)
      if (argv[2] == std::string(t.name)) {
        const int rc = run_one(t);
        std::fflush(stdout);
        return rc;
      }
    std::fprintf(stderr, "unknown test '%s' (see --list)\n", argv[2]);
    return 2;
  }
  if (argc >= 2) {
    std::fprintf(stderr, "usage: %s [--list | --run NAME]\n", argv[0]);
    return 2;
  }
  int failed = 0, ran = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Test& t : all) {
    if (t.asan) continue;
    ++ran;
    failed += run_one(t) != 0;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d/%d passed in %.2f s (asan tests run with --run only)\n", ran - failed, ran, s);
  return failed ? 1 : 0;
}
