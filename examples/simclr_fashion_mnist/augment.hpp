// Two-view augmentations of 28 x 28 grey images for SimCLR.
//
// A view of an image is, in order:
//   1. a random resized crop: a box of area fraction in [min_area, 1] and
//      aspect ratio in [1/aspect, aspect] (log-uniform), placed so it may stick out
//      of the image by up to `max_shift` pixels (zero padding), resampled
//      bilinearly back to 28 x 28 -- this includes random shifts;
//   2. a horizontal flip with probability flip_prob (clothes are symmetric);
//   3. random contrast (x - mean) * c + mean and brightness + b;
//   4. Gaussian pixel noise;
//   5. random erasing of a rectangle with probability erase_prob;
// then clamped to [0, 1].  Everything is drawn from one std::mt19937 with
// explicit distributions, so the views are a deterministic function of the
// seed on a given toolchain.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

namespace fmnist {

/// The defaults are deliberately mild in geometry: an MLP has no built-in
/// translation or scale invariance, and on Fashion-MNIST the size and
/// placement of a garment carry much of its class, so strong crops and shifts
/// taught the encoder to throw that away (see README.md).  What remains is an
/// aspect-ratio stretch of up to 4/3, the flip, a little jitter, pixel noise
/// and random erasing.
struct AugmentParams {
  int side = 28;              ///< images are side x side
  float min_area = 1.0f;      ///< smallest crop area (fraction of the image)
  float aspect = 4.f / 3.f;   ///< largest aspect ratio of the crop box (>= 1)
  int max_shift = 0;          ///< how far the crop box may leave the image (pixels)
  float flip_prob = 0.5f;
  float brightness = 0.1f;    ///< b ~ U(-brightness, brightness)
  float contrast = 0.16f;     ///< c ~ U(1 - contrast, 1 + contrast)
  float noise = 0.1f;         ///< standard deviation of the pixel noise
  float erase_prob = 0.5f;
  float erase_max_area = 0.25f;  ///< largest erased fraction of the image
};

/// Writes one augmented view of `src` (side * side floats) into `dst`.
inline void augment(const float* src, float* dst, const AugmentParams& p, std::mt19937& rng) {
  const int n = p.side;
  const float fn = static_cast<float>(n);
  std::uniform_real_distribution<float> u01(0.f, 1.f);
  std::normal_distribution<float> gauss(0.f, 1.f);

  // 1. Random resized crop (box in source pixel coordinates).
  const float area = p.min_area + (1.f - p.min_area) * u01(rng);
  const float ratio = std::exp(std::log(p.aspect) * (2 * u01(rng) - 1));
  const float bw = std::min(fn, fn * std::sqrt(area * ratio)), bh = std::min(fn, fn * std::sqrt(area / ratio));
  const float shift = static_cast<float>(p.max_shift);
  const float x0 = -shift + (fn - bw + 2 * shift) * u01(rng), y0 = -shift + (fn - bh + 2 * shift) * u01(rng);
  const bool flip = u01(rng) < p.flip_prob;
  const auto pixel = [&](int r, int c) { return (r < 0 || c < 0 || r >= n || c >= n) ? 0.f : src[r * n + c]; };
  for (int r = 0; r < n; ++r) {
    const float sy = y0 + (static_cast<float>(r) + 0.5f) * bh / fn - 0.5f;
    const int iy = static_cast<int>(std::floor(sy));
    const float fy = sy - static_cast<float>(iy);
    for (int c = 0; c < n; ++c) {
      const float sx = x0 + (static_cast<float>(c) + 0.5f) * bw / fn - 0.5f;
      const int ix = static_cast<int>(std::floor(sx));
      const float fx = sx - static_cast<float>(ix);
      const float v = (1 - fy) * ((1 - fx) * pixel(iy, ix) + fx * pixel(iy, ix + 1)) +
                      fy * ((1 - fx) * pixel(iy + 1, ix) + fx * pixel(iy + 1, ix + 1));
      dst[r * n + (flip ? n - 1 - c : c)] = v;  // 2. flip
    }
  }

  // 3. Contrast and brightness.
  const int px = n * n;
  float mean = 0;
  for (int i = 0; i < px; ++i) mean += dst[i];
  mean /= static_cast<float>(px);
  const float con = 1.f + p.contrast * (2 * u01(rng) - 1), bri = p.brightness * (2 * u01(rng) - 1);
  // 4. Noise.
  for (int i = 0; i < px; ++i) dst[i] = (dst[i] - mean) * con + mean + bri + p.noise * gauss(rng);

  // 5. Random erasing.
  if (u01(rng) < p.erase_prob) {
    const float ea = 0.05f + (p.erase_max_area - 0.05f) * u01(rng), er = 0.5f + 1.5f * u01(rng);
    const int eh = std::clamp(static_cast<int>(fn * std::sqrt(ea * er)), 1, n);
    const int ew = std::clamp(static_cast<int>(fn * std::sqrt(ea / er)), 1, n);
    const int ey = std::uniform_int_distribution<int>(0, n - eh)(rng);
    const int ex = std::uniform_int_distribution<int>(0, n - ew)(rng);
    for (int r = ey; r < ey + eh; ++r) std::fill(dst + r * n + ex, dst + r * n + ex + ew, 0.f);
  }
  for (int i = 0; i < px; ++i) dst[i] = std::clamp(dst[i], 0.f, 1.f);
}

/// Two views of the images x.row(idx[i]) (i < m) into the rows of
/// out.topRows(m) and out.bottomRows(m) (out is 2m x pixels, row-major).
/// The views of sample i are drawn from a generator seeded with
/// (seed, stream, first + i), so they do not depend on the number of
/// threads, and a process that holds rows [first, first + m) of a larger
/// batch makes exactly the views the whole batch would have there.
template <typename RowMajorMatrix, typename Index>
void make_views(const RowMajorMatrix& x, const std::vector<Index>& idx, const AugmentParams& p, std::uint64_t seed,
                std::uint64_t stream, RowMajorMatrix& out, Eigen::Index first = 0) {
  const auto m = static_cast<Eigen::Index>(idx.size());
  out.resize(2 * m, x.cols());
  const bool threaded = m >= 32;  // below, waking threads costs more than the views
  (void)threaded;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (threaded)
#endif
  for (Eigen::Index i = 0; i < m; ++i) {
    std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32),
                      static_cast<std::uint32_t>(first + i)};
    std::mt19937 rng(seq);
    const float* src = x.row(static_cast<Eigen::Index>(idx[static_cast<std::size_t>(i)])).data();
    augment(src, out.row(i).data(), p, rng);
    augment(src, out.row(m + i).data(), p, rng);
  }
}

}  // namespace fmnist
