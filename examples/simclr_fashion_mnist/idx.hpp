// Reader of the gzip'd IDX files of (Fashion-)MNIST.
//
// An IDX file is a big-endian header -- a 4-byte magic number 0x000008DD
// (0x08 = unsigned bytes, DD = number of dimensions), then one 4-byte size
// per dimension -- followed by the data, one byte per value.  Images are
// idx3 (magic 0x00000803: count x rows x cols), labels idx1 (0x00000801).
// Every problem is reported as a std::runtime_error naming the file.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace fmnist {

/// Images as rows of floats in [0, 1] (row-major: one image is contiguous).
using ImageMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

/// The data directory: `flag` if non-empty, else $FASHION_MNIST_DIR, else the default.
inline std::string data_dir(const std::string& flag = "") {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("FASHION_MNIST_DIR"); env && *env) return env;
  return kDefaultDataDir;
}

namespace detail {

[[noreturn]] inline void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("fashion-mnist: " + path + ": " + what);
}

/// The whole decompressed content of a gzip file (plain files are read as-is by zlib).
inline std::vector<unsigned char> read_gz(const std::string& path) {
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
  } else {
    const std::string dir = path.substr(0, path.find_last_of('/') + 1);
    fail(path, "cannot open the file (missing?). Install the data with `apt-get install dataset-fashion-mnist` "
               "(it puts the files in " + std::string(kDefaultDataDir) + "), or point --data DIR or "
               "$FASHION_MNIST_DIR at a directory holding the four *-ubyte.gz files (looked in '" + dir + "')");
  }
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) fail(path, "gzopen failed");
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  for (;;) {
    const int got = gzread(gz, buf, sizeof buf);
    if (got < 0) {
      int code = 0;
      const std::string msg = gzerror(gz, &code);
      gzclose(gz);
      fail(path, "corrupt or truncated gzip stream (" + msg + ")");
    }
    if (got == 0) break;
    out.insert(out.end(), buf, buf + got);
  }
  gzclose(gz);
  return out;
}

inline std::uint32_t be32(const std::vector<unsigned char>& b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) | (std::uint32_t{b[at + 2]} << 8) |
         std::uint32_t{b[at + 3]};
}

inline std::string hex(std::uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", static_cast<unsigned>(v));
  return s;
}

/// Checks magic and size, returns the dimensions; the data start at 4 + 4 * dims.
inline std::vector<std::uint32_t> parse_header(const std::vector<unsigned char>& b, const std::string& path,
                                               std::uint32_t magic, std::size_t dims) {
  const std::size_t header = 4 + 4 * dims;
  if (b.size() < 4) fail(path, "truncated: expected at least 4 bytes of header, got " + std::to_string(b.size()));
  if (be32(b, 0) != magic)
    fail(path, "wrong magic number: expected " + hex(magic) + ", got " + hex(be32(b, 0)));
  if (b.size() < header)
    fail(path, "truncated: expected " + std::to_string(header) + " bytes of header, got " + std::to_string(b.size()));
  std::vector<std::uint32_t> d(dims);
  std::size_t n = 1;
  for (std::size_t i = 0; i < dims; ++i) {
    d[i] = be32(b, 4 + 4 * i);
    n *= d[i];
  }
  if (b.size() != header + n)
    fail(path, std::string(b.size() < header + n ? "truncated" : "trailing bytes") + ": expected " +
                   std::to_string(header + n) + " bytes, got " + std::to_string(b.size()));
  return d;
}

}  // namespace detail

/// Reads an idx3 image file: one image per row, pixel/255 in [0, 1].
inline ImageMatrix read_images(const std::string& path, int* rows = nullptr, int* cols = nullptr) {
  const auto b = detail::read_gz(path);
  const auto d = detail::parse_header(b, path, 0x00000803u, 3);
  const auto n = static_cast<Eigen::Index>(d[0]), px = static_cast<Eigen::Index>(d[1]) * d[2];
  ImageMatrix x(n, px);
  const unsigned char* p = b.data() + 16;
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(p[i]) / 255.0f;
  if (rows) *rows = static_cast<int>(d[1]);
  if (cols) *cols = static_cast<int>(d[2]);
  return x;
}

/// Reads an idx1 label file.
inline std::vector<int> read_labels(const std::string& path) {
  const auto b = detail::read_gz(path);
  const auto d = detail::parse_header(b, path, 0x00000801u, 1);
  return std::vector<int>(b.begin() + 8, b.begin() + 8 + static_cast<std::ptrdiff_t>(d[0]));
}

/// One split: images (rows) and their labels.
struct Split {
  ImageMatrix x;
  std::vector<int> y;
};

/// Reads `images` and `labels` and checks that their counts agree.
inline Split read_split(const std::string& images, const std::string& labels) {
  Split s{read_images(images), read_labels(labels)};
  if (static_cast<std::size_t>(s.x.rows()) != s.y.size())
    detail::fail(images, "image/label count mismatch: " + std::to_string(s.x.rows()) + " images but " +
                             std::to_string(s.y.size()) + " labels in " + labels);
  return s;
}

/// The train (60000) or test (10000) split of Fashion-MNIST from `dir`.
inline Split load(const std::string& dir, bool train) {
  const std::string p = dir + "/" + (train ? "train" : "t10k");
  return read_split(p + "-images-idx3-ubyte.gz", p + "-labels-idx1-ubyte.gz");
}

}  // namespace fmnist
