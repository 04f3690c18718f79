// ReadLogLines: lines from a position, a line still being written left out, and a followed
// log read on from where the last read stopped.
#include "server/job_log.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class ReadLogLinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("fedprllm-job-log-test-" + std::to_string(::getpid()) + ".log"))
                .string();
    std::filesystem::remove(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void Append(const std::string& text) {
    std::ofstream out(path_, std::ios::binary | std::ios::app);
    out << text;
  }
  std::string path_;
};

TEST_F(ReadLogLinesTest, ReadsFromALineAndMovesThePosition) {
  Append("zero\none\ntwo\nthree\n");
  LogPosition position;
  position.line = 1;
  absl::StatusOr<std::vector<std::string>> lines = ReadLogLines(path_, &position, 2);
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_THAT(*lines, ElementsAre("one", "two"));
  EXPECT_EQ(position.line, 3);
  EXPECT_EQ(position.offset, 13);
  lines = ReadLogLines(path_, &position, 100);
  ASSERT_TRUE(lines.ok());
  EXPECT_THAT(*lines, ElementsAre("three"));
  EXPECT_EQ(position.line, 4);
}

TEST_F(ReadLogLinesTest, FollowsALogThatIsBeingWritten) {
  Append("first\nsecond is being wri");
  LogPosition position;
  absl::StatusOr<std::vector<std::string>> lines = ReadLogLines(path_, &position, 100);
  ASSERT_TRUE(lines.ok());
  EXPECT_THAT(*lines, ElementsAre("first"));
  EXPECT_THAT(*ReadLogLines(path_, &position, 100), IsEmpty());
  Append("tten\nthird\n");
  lines = ReadLogLines(path_, &position, 100);
  ASSERT_TRUE(lines.ok());
  EXPECT_THAT(*lines, ElementsAre("second is being written", "third"));
  EXPECT_EQ(position.line, 3);
}

TEST_F(ReadLogLinesTest, APositionPastTheEndWaitsForTheLines) {
  Append("a\nb\n");
  LogPosition position;
  position.line = 5;
  EXPECT_THAT(*ReadLogLines(path_, &position, 100), IsEmpty());
  EXPECT_EQ(position.offset, -1);
  Append("c\nd\ne\nf\n");
  EXPECT_THAT(*ReadLogLines(path_, &position, 100), ElementsAre("f"));
}

TEST_F(ReadLogLinesTest, AMissingFileIsNotFound) {
  LogPosition position;
  EXPECT_EQ(ReadLogLines(path_, &position, 10).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedprllm
