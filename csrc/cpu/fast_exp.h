// exp for the compiled elementwise ops (softmax, GELU): a form the compiler vectorizes.
//
// std::exp is one library call per element, which the compiler cannot turn into vector code. For
// float32 this is Cephes's expf written without branches: e^x = 2^n · e^r with n = round(x/ln 2)
// and |r| <= ln 2 / 2, e^r a degree-7 polynomial (relative error about 1e-7, float32's own
// rounding), 2^n written straight into the exponent bits. Inputs beyond float32's range give 0 and
// inf, as std::exp does. float64 (gradient checks, not speed) keeps std::exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace minilora {
namespace cpu {

inline double exp_of(double x) { return std::exp(x); }

inline float exp_of(float x) {
  const float low = -87.0f, high = 88.0f;  // e^x stays a normal float32 in between
  const float clamped = std::min(std::max(x, low), high);
  // Adding 1.5·2^23 rounds to the nearest integer (the float's spacing there is 1), and leaves
  // that integer in the low bits of the sum.
  const float magic = 12582912.0f;
  const float shifted = clamped * 1.44269504088896341f + magic;
  const float n = shifted - magic;
  // r = x - n·ln 2, with ln 2 split in two so that n·ln2_hi is exact.
  const float r = (clamped - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // 2^n: n + 127 in the exponent field
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float e = e_r * two_n;
  const float below = x < low ? 0.0f : e;
  return x > high ? std::numeric_limits<float>::infinity() : below;
}

}  // namespace cpu
}  // namespace minilora
