// The log line formats: "text" keeps the daemons' established look, "json" gives one
// parseable object per message whatever bytes the message holds.
#include "common/logging.h"

#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace fedprllm {
namespace {

// A logger writing into `out` through the formatter for `format`.
std::shared_ptr<spdlog::logger> CapturingLogger(std::ostringstream& out, const std::string& program,
                                                const std::string& format) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out, /*force_flush=*/true);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter(program, format);
  EXPECT_TRUE(formatter.ok()) << formatter.status();
  if (formatter.ok()) logger->set_formatter(std::move(formatter).value());
  return logger;
}

// The output's lines, each with its '\n' removed; a last line without '\n' is kept as is.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

TEST(LoggingTest, JsonEscapesEverythingAndKeepsOneLinePerMessage) {
  const std::vector<std::string> messages = {
      "plain",
      "say \"hi\"",
      "C:\\path\\to\\file",
      "two\nlines\r\nand a tab\there",
      std::string("nul \0 and bell \x07 and esc \x1b[31m", 31),
      "caf\xc3\xa9 \xe2\x9c\x93",  // valid UTF-8 stays as it is
      "{\"looks\": [\"like json\"]}",
  };
  std::ostringstream out;
  auto logger = CapturingLogger(out, "server", "json");
  for (const std::string& m : messages) logger->info("{}", m);

  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), messages.size()) << out.str();
  for (size_t i = 0; i < lines.size(); ++i) {
    nlohmann::json parsed = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(parsed.is_discarded()) << lines[i];
    ASSERT_TRUE(parsed.is_object()) << lines[i];
    EXPECT_EQ(parsed.size(), 4u) << lines[i];
    EXPECT_EQ(parsed.value("msg", ""), messages[i]) << lines[i];
    EXPECT_EQ(parsed.value("level", ""), "info") << lines[i];
    EXPECT_EQ(parsed.value("program", ""), "server") << lines[i];
  }
  // Keys come in a fixed order, time first.
  EXPECT_EQ(lines[0].rfind("{\"time\":\"", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("\"level\":\"info\",\"program\":\"server\",\"msg\":\"plain\"}"), std::string::npos)
      << lines[0];
}

TEST(LoggingTest, JsonReplacesBytesThatAreNotUtf8) {
  std::ostringstream out;
  auto logger = CapturingLogger(out, "client", "json");
  logger->warn("bad \xff\xfe bytes \xc3");  // two stray bytes, then a truncated sequence
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 1u) << out.str();
  nlohmann::json parsed = nlohmann::json::parse(lines[0], nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(parsed.is_discarded()) << lines[0];
  const std::string msg = parsed.value("msg", "");
  EXPECT_EQ(msg.rfind("bad ", 0), 0u) << msg;
  EXPECT_NE(msg.find("\xef\xbf\xbd"), std::string::npos) << msg;  // U+FFFD
  EXPECT_NE(msg.find(" bytes "), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\xff'), std::string::npos) << msg;
  EXPECT_EQ(parsed.value("level", ""), "warning");
  EXPECT_EQ(parsed.value("program", ""), "client");
}

TEST(LoggingTest, JsonTimeIsUtcWithMilliseconds) {
  std::ostringstream out;
  auto logger = CapturingLogger(out, "server", "json");
  const absl::Time before = absl::Now();
  logger->error("now");
  const absl::Time after = absl::Now();
  nlohmann::json parsed = nlohmann::json::parse(Lines(out.str()).at(0));
  const std::string time = parsed.value("time", "");
  EXPECT_TRUE(std::regex_match(time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"))) << time;
  absl::Time logged;
  std::string error;
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", time, absl::UTCTimeZone(), &logged, &error)) << error;
  // Truncated to milliseconds, so up to 1 ms before `before`.
  EXPECT_GE(logged, before - absl::Milliseconds(1)) << time;
  EXPECT_LE(logged, after) << time;
  EXPECT_EQ(parsed.value("level", ""), "error");
}

TEST(LoggingTest, JsonLevelNames) {
  std::ostringstream out;
  auto logger = CapturingLogger(out, "server", "json");
  logger->trace("t");
  logger->debug("d");
  logger->info("i");
  logger->warn("w");
  logger->error("e");
  logger->critical("c");
  std::vector<std::string> levels;
  for (const std::string& line : Lines(out.str())) levels.push_back(nlohmann::json::parse(line).value("level", ""));
  EXPECT_EQ(levels, (std::vector<std::string>{"trace", "debug", "info", "warning", "error", "critical"}));
}

TEST(LoggingTest, TextKeepsTheDaemonsPattern) {
  std::ostringstream out;
  auto logger = CapturingLogger(out, "client", "text");
  logger->info("joined job {} as {}", "j1", "site-a");
  logger->warn("quote \" stays");
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 2u) << out.str();
  // An ostream sink has no colours, so %^ and %$ add nothing.
  const std::string stamp = R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})";
  EXPECT_TRUE(std::regex_match(lines[0], std::regex(stamp + R"( \[info\] client: joined job j1 as site-a)")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex(stamp + R"( \[warning\] client: quote " stays)"))) << lines[1];
}

TEST(LoggingTest, TextProgramNameIsLiteral) {
  std::ostringstream out;
  auto logger = CapturingLogger(out, "odd%vname%l", "text");
  logger->info("m");
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 1u) << out.str();
  EXPECT_NE(lines[0].find("] odd%vname%l: m"), std::string::npos) << lines[0];
}

TEST(LoggingTest, UnknownFormatNamesTheConfigKey) {
  for (const std::string format : {"xml", "", "JSON", "text "}) {
    absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter("server", format);
    ASSERT_FALSE(formatter.ok()) << format;
    EXPECT_EQ(formatter.status().code(), absl::StatusCode::kInvalidArgument) << format;
    EXPECT_NE(formatter.status().message().find("'log_format'"), std::string::npos) << formatter.status();
    const absl::Status configured = ConfigureLogging("server", format);
    EXPECT_EQ(configured.code(), absl::StatusCode::kInvalidArgument) << format;
  }
}

// ConfigureLogging reaches the default logger (what spdlog::info writes to) and loggers
// registered later; an invalid format leaves the formatter alone.
TEST(LoggingTest, ConfigureLoggingAppliesToRegisteredLoggers) {
  const std::shared_ptr<spdlog::logger> saved_default = spdlog::default_logger();
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out, /*force_flush=*/true);
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("", sink));

  ASSERT_TRUE(ConfigureLogging("server", "json").ok());
  spdlog::info("via default \"logger\"");
  ASSERT_FALSE(ConfigureLogging("server", "yaml").ok());
  spdlog::info("still json");
  std::ostringstream later_out;
  auto later = std::make_shared<spdlog::logger>(
      "later", std::make_shared<spdlog::sinks::ostream_sink_mt>(later_out, /*force_flush=*/true));
  spdlog::initialize_logger(later);  // registers it and gives it the registry's formatter
  later->info("later");

  const std::vector<std::string> lines = Lines(out.str());
  const std::vector<std::string> later_lines = Lines(later_out.str());
  spdlog::drop("later");
  ASSERT_TRUE(ConfigureLogging("server", "text").ok());
  spdlog::set_default_logger(saved_default);

  ASSERT_EQ(lines.size(), 2u) << out.str();
  EXPECT_EQ(nlohmann::json::parse(lines[0]).value("msg", ""), "via default \"logger\"");
  EXPECT_EQ(nlohmann::json::parse(lines[1]).value("msg", ""), "still json");
  ASSERT_EQ(later_lines.size(), 1u) << later_out.str();
  EXPECT_EQ(nlohmann::json::parse(later_lines[0]).value("msg", ""), "later");
}

}  // namespace
}  // namespace fedprllm
