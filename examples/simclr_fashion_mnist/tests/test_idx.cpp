// The IDX reader on small gzip'd files written here.
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "idx.hpp"

namespace {

namespace fs = std::filesystem;

/// A fresh directory under the system temp directory, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("fmnist-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void put32(std::vector<unsigned char>& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>((v >> s) & 0xffu));
}

/// An IDX file: magic, sizes, then `data` (whatever its length).
std::vector<unsigned char> idx(std::uint32_t magic, const std::vector<std::uint32_t>& dims,
                               const std::vector<unsigned char>& data) {
  std::vector<unsigned char> b;
  put32(b, magic);
  for (auto d : dims) put32(b, d);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

std::vector<unsigned char> pixels(std::size_t n) {
  std::vector<unsigned char> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>((i * 37 + 11) % 256);
  return p;
}

/// The message of the std::runtime_error that f throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

using Catch::Matchers::Contains;

TEST_CASE("IDX reader reads images and labels of a good file", "[idx]") {
  TempDir dir;
  const auto img = dir.file("img.gz"), lab = dir.file("lab.gz");
  write_gz(img, idx(0x803, {3, 2, 4}, pixels(24)));
  write_gz(lab, idx(0x801, {3}, {7, 0, 9}));
  int rows = 0, cols = 0;
  const auto x = fmnist::read_images(img, &rows, &cols);
  CHECK(rows == 2);
  CHECK(cols == 4);
  REQUIRE(x.rows() == 3);
  REQUIRE(x.cols() == 8);
  const auto p = pixels(24);
  for (Eigen::Index i = 0; i < 3; ++i)
    for (Eigen::Index j = 0; j < 8; ++j)
      CHECK(x(i, j) == static_cast<float>(p[static_cast<std::size_t>(8 * i + j)]) / 255.0f);
  CHECK(x.maxCoeff() <= 1.0f);
  CHECK(x.minCoeff() >= 0.0f);
  const auto split = fmnist::read_split(img, lab);
  CHECK(split.y == std::vector<int>{7, 0, 9});
  CHECK(split.x == x);
}

TEST_CASE("IDX reader reports a truncated file with expected and actual sizes", "[idx]") {
  TempDir dir;
  const auto img = dir.file("short-images.gz");
  write_gz(img, idx(0x803, {3, 2, 4}, pixels(20)));  // 24 pixels announced, 20 present
  const std::string msg = error_of([&] { fmnist::read_images(img); });
  CHECK_THAT(msg, Contains(img));
  CHECK_THAT(msg, Contains("truncated"));
  CHECK_THAT(msg, Contains("expected 40 bytes, got 36"));

  // A header cut short, and a gzip stream cut short.
  const auto hdr = dir.file("short-header.gz");
  write_gz(hdr, idx(0x803, {3}, {}));
  CHECK_THAT(error_of([&] { fmnist::read_images(hdr); }), Contains(hdr) && Contains("truncated"));
  const auto lab = dir.file("labels.gz");
  write_gz(lab, idx(0x801, {4000}, pixels(4000)));
  std::vector<char> bytes;
  {
    std::ifstream in(lab, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto cut = dir.file("cut.gz");
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  CHECK_THAT(error_of([&] { fmnist::read_labels(cut); }), Contains(cut));
}

TEST_CASE("IDX reader reports a wrong magic number", "[idx]") {
  TempDir dir;
  const auto img = dir.file("labels-not-images.gz");
  write_gz(img, idx(0x801, {24}, pixels(24)));
  const std::string msg = error_of([&] { fmnist::read_images(img); });
  CHECK_THAT(msg, Contains(img));
  CHECK_THAT(msg, Contains("wrong magic number"));
  CHECK_THAT(msg, Contains("expected 0x00000803, got 0x00000801"));
}

TEST_CASE("IDX reader: missing file and image/label count mismatch", "[idx]") {
  TempDir dir;
  const auto missing = dir.file("train-images-idx3-ubyte.gz");
  const std::string msg = error_of([&] { fmnist::read_images(missing); });
  CHECK_THAT(msg, Contains(missing));
  CHECK_THAT(msg, Contains("apt-get install dataset-fashion-mnist"));
  CHECK_THAT(msg, Contains("/usr/share/datasets/fashion-mnist"));

  const auto img = dir.file("img.gz"), lab = dir.file("lab.gz");
  write_gz(img, idx(0x803, {3, 2, 4}, pixels(24)));
  write_gz(lab, idx(0x801, {2}, {1, 2}));
  const std::string m2 = error_of([&] { fmnist::read_split(img, lab); });
  CHECK_THAT(m2, Contains(img) && Contains("mismatch") && Contains("3 images but 2 labels"));
}

TEST_CASE("data directory: flag, then environment, then the Debian default", "[idx]") {
  CHECK(fmnist::data_dir("/some/where") == "/some/where");
  ::setenv("FASHION_MNIST_DIR", "/from/env", 1);
  CHECK(fmnist::data_dir() == "/from/env");
  ::unsetenv("FASHION_MNIST_DIR");
  CHECK(fmnist::data_dir() == "/usr/share/datasets/fashion-mnist");
}
