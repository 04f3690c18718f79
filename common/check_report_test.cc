// CheckReport: the printed form of each result, one line per check, and what passes.
#include "common/check_report.h"

#include "gtest/gtest.h"

namespace fedprllm {
namespace {

TEST(CheckReportTest, PassesWithWarningsAndSkipsOnly) {
  CheckReport report;
  report.Ok("config", "a.yaml");
  report.Warn("certificate", "soon\nover two lines");
  report.Skip("model", "none");
  EXPECT_TRUE(report.passed());
  EXPECT_EQ(report.ToString(), "ok   config: a.yaml\nwarn certificate: soon over two lines\nskip model: none\n");
  report.Fail("server", "refused");
  EXPECT_FALSE(report.passed());
  ASSERT_NE(report.Find("server"), nullptr);
  EXPECT_EQ(report.Find("server")->text, "refused");
  EXPECT_EQ(report.Find("nothing"), nullptr);
}

TEST(CheckReportTest, PrintsEachLineAsItIsAdded) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  CheckReport report(out);
  report.Fail("certificate", "certs/site-a.crt expired on 2026-01-01");
  std::rewind(out);
  char line[128] = {};
  ASSERT_NE(std::fgets(line, sizeof(line), out), nullptr);
  EXPECT_STREQ(line, "FAIL certificate: certs/site-a.crt expired on 2026-01-01\n");
  std::fclose(out);
}

}  // namespace
}  // namespace fedprllm
