// Tests for CRC32C against the RFC 3720 (iSCSI) vectors and a bitwise reference.
#include "common/crc32c.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fedprllm::crc32c {
namespace {

uint32_t BitwiseReference(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
  }
  return ~c;
}

TEST(Crc32cTest, StandardVectors) {
  EXPECT_EQ(Value("123456789"), 0xE3069283u);
  EXPECT_EQ(Value(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Value(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(char(i));
    descending.push_back(char(31 - i));
  }
  EXPECT_EQ(Value(ascending), 0x46DD794Eu);
  EXPECT_EQ(Value(descending), 0x113FDB5Cu);
  EXPECT_EQ(Value(nullptr, 0), 0u);
}

TEST(Crc32cTest, MatchesBitwiseReferenceAndExtends) {
  std::mt19937 rng(7);
  for (size_t len : {1u, 7u, 8u, 9u, 63u, 64u, 1000u, 4097u}) {
    std::string s(len, '\0');
    for (char& ch : s) ch = char(rng());
    EXPECT_EQ(Value(s), BitwiseReference(s)) << "len=" << len;
    for (size_t cut : {size_t{0}, len / 3, len}) {
      EXPECT_EQ(Extend(Value(s.data(), cut), s.data() + cut, len - cut), Value(s))
          << "len=" << len << " cut=" << cut;
    }
  }
}

}  // namespace
}  // namespace fedprllm::crc32c
