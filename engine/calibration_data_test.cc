// Calibration data against docs/calibration_data.md: the source spec syntax (and the old
// field separator's error), each reader (text, JSON Lines text and ids, .npy, raw
// uint16/uint32) and each of its rejections, CRLF normalization, window sampling, and the
// must-show property: a federation calibrated on .npy or JSON Lines ids written from the
// tool's own tokenization of a real text prunes to masks bit-identical to the text's.
#include "engine/calibration_data.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/federation.h"
#include "engine/site_session.h"
#include "engine/token_files.h"
#include "gmock/gmock.h"
#include "model/perplexity.h"
#include "model/test_paths.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kVocab = 512;  // stories260K's

// A directory of this test process's own (other test binaries may share TempDir()),
// removed when every test passed.
std::string Dir() {
  static const std::string dir = [] {
    std::string tmpl = ::testing::TempDir() + "fedprllm-calibration-test-XXXXXX";
    const char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    return tmpl + "/";
  }();
  return dir;
}
class RemoveDirWhenPassed : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!::testing::UnitTest::GetInstance()->Failed()) std::filesystem::remove_all(Dir());
  }
};
::testing::Environment* const kRemoveDir = ::testing::AddGlobalTestEnvironment(new RemoveDirWhenPassed);

std::string Write(const std::string& name, const std::string& bytes) {
  const std::string path = Dir() + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

// Little-endian bytes of each value, sizeof(T) bytes each.
template <typename T>
std::string LeBytes(const std::vector<T>& values) {
  std::string out;
  for (T v : values) {
    uint64_t u = static_cast<uint64_t>(v);
    for (size_t b = 0; b < sizeof(T); ++b) out.push_back(static_cast<char>((u >> (8 * b)) & 0xFF));
  }
  return out;
}

// An .npy file: magic, version `major`.0, header length, `header` (taken as it is), `data`.
std::string NpyWithHeader(const std::string& header, const std::string& data, int major = 1) {
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  out += major == 1 ? LeBytes<uint16_t>({static_cast<uint16_t>(header.size())})
                    : LeBytes<uint32_t>({static_cast<uint32_t>(header.size())});
  return out + header + data;
}

// An .npy file the way numpy writes one: magic, version, header length, the dict padded
// with spaces to a multiple of 64 bytes and ended by '\n', then `data`.
std::string Npy(const std::string& descr, const std::string& shape, const std::string& data, bool fortran = false,
                int major = 1) {
  std::string dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran ? "True" : "False",
                                  ", 'shape': ", shape, ", }");
  const size_t prefix = 8 + (major == 1 ? 2 : 4);
  dict += std::string((64 - (prefix + dict.size() + 1) % 64) % 64, ' ') + "\n";
  return NpyWithHeader(dict, data, major);
}

absl::StatusOr<CalibrationData> Read(const std::vector<std::string>& specs,
                                     std::vector<std::string>* log_lines = nullptr) {
  std::vector<CalibrationSource> sources;
  for (const std::string& spec : specs) {
    absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(spec);
    if (!source.ok()) return source.status();
    sources.push_back(*source);
  }
  CalibrationReadOptions options;
  options.vocab_size = kVocab;
  if (log_lines != nullptr) options.log = [log_lines](const std::string& line) { log_lines->push_back(line); };
  return ReadCalibrationData(sources, options);
}

std::vector<int> Ids(const std::vector<std::string>& specs) {
  absl::StatusOr<CalibrationData> data = Read(specs);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return {};
  EXPECT_TRUE(data->is_tokens);
  return data->tokens;
}

std::string ErrorOf(const std::vector<std::string>& specs) {
  absl::StatusOr<CalibrationData> data = Read(specs);
  EXPECT_FALSE(data.ok()) << specs.front() << " was accepted";
  return data.ok() ? "" : std::string(data.status().message());
}

std::string SpecError(const std::string& spec) {
  absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(spec);
  EXPECT_FALSE(source.ok()) << spec << " was accepted";
  return source.ok() ? "" : std::string(source.status().message());
}

// ---- Spec syntax (§1) ----

TEST(CalibrationSpecTest, EveryFormHasOneSpelling) {
  struct Case {
    std::string spec;
    CalibrationFormat format;
    std::string path;
    std::vector<std::string> fields;
  };
  for (const Case& c : std::vector<Case>{
           {"a.txt", CalibrationFormat::kText, "a.txt", {}},
           {"notes:v2.txt", CalibrationFormat::kText, "notes:v2.txt", {}},
           {"c4.jsonl:text", CalibrationFormat::kJsonLines, "c4.jsonl", {"text"}},
           {"c4.jsonl:prefix+gold_completion", CalibrationFormat::kJsonLines, "c4.jsonl", {"prefix", "gold_completion"}},
           {"ids.jsonl:input_ids", CalibrationFormat::kJsonLines, "ids.jsonl", {"input_ids"}},
           {"x.npy", CalibrationFormat::kNpy, "x.npy", {}},
           {"train.bin:uint16", CalibrationFormat::kRawUint16, "train.bin", {}},
           {"data/tok.dat:uint32", CalibrationFormat::kRawUint32, "data/tok.dat", {}},
       }) {
    absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(c.spec);
    ASSERT_TRUE(source.ok()) << c.spec << ": " << source.status();
    EXPECT_EQ(source->format, c.format) << c.spec;
    EXPECT_EQ(source->path, c.path) << c.spec;
    EXPECT_EQ(source->jsonl_fields, c.fields) << c.spec;
    EXPECT_EQ(CalibrationSpec(*source), c.spec);
  }
}

TEST(CalibrationSpecTest, OldFieldSeparatorShowsTheNewSpelling) {
  EXPECT_THAT(SpecError("c4.jsonl:prefix,gold_completion"),
              AllOf(HasSubstr("joined with '+', not ','"), HasSubstr("write \"c4.jsonl:prefix+gold_completion\"")));
  EXPECT_THAT(SpecError("c4.jsonl:prefix, gold_completion"), HasSubstr("\"c4.jsonl:prefix+gold_completion\""));
}

TEST(CalibrationSpecTest, OldFieldSeparatorSplitByAListFlagShowsTheNewSpelling) {
  // --calib c4.jsonl:prefix,gold_completion,b.txt: the flag splits at every ','.
  const absl::Status split = CheckListFlagFields({"c4.jsonl:prefix", "gold_completion", "b.txt"}, "--calib");
  EXPECT_THAT(std::string(split.message()),
              AllOf(HasSubstr("--calib: \"gold_completion\" after \"c4.jsonl:prefix\""),
                    HasSubstr("write \"c4.jsonl:prefix+gold_completion\"")));
  // fedprllm-sim's sets: the part selector stays at the end.
  const absl::Status sim = CheckListFlagFields({"c4=c4.jsonl:prefix", "gold@second-half"}, "--calib");
  EXPECT_THAT(std::string(sim.message()), HasSubstr("write \"c4=c4.jsonl:prefix+gold@second-half\""));
  EXPECT_TRUE(CheckListFlagFields({"c4.jsonl:prefix+gold_completion", "b.txt", "ids.npy", "t.bin:uint16"}, "--calib")
                  .ok());
  EXPECT_TRUE(CheckListFlagFields({"a.txt", "notes"}, "--calib").ok());  // a text file named notes
}

TEST(CalibrationSpecTest, IncompleteOrWrongSpecsAreRefused) {
  EXPECT_THAT(SpecError(""), HasSubstr("empty"));
  EXPECT_THAT(SpecError("x.jsonl"), AllOf(HasSubstr("needs its fields"), HasSubstr("x.jsonl:input_ids")));
  EXPECT_THAT(SpecError("x.jsonl:"), HasSubstr("needs its fields"));
  EXPECT_THAT(SpecError("x.jsonl:a++b"), HasSubstr("empty field name"));
  EXPECT_THAT(SpecError("x.jsonl:a+"), HasSubstr("empty field name"));
  EXPECT_THAT(SpecError("x.npy:int32"), HasSubstr("takes no option: write \"x.npy\""));
  EXPECT_THAT(SpecError("train.bin"), HasSubstr("needs its dtype: train.bin:uint16 or train.bin:uint32"));
  EXPECT_THAT(SpecError("train.bin:int32"), AllOf(HasSubstr("uint16 or uint32"), HasSubstr("not int32")));
  EXPECT_THAT(SpecError("train.bin:float16"), HasSubstr("not float16"));
  EXPECT_THAT(SpecError(":uint16"), HasSubstr("no path"));
}

// ---- Text (§3, §4) ----

TEST(CalibrationTextTest, TextsAreJoinedWithABlankLine) {
  const std::string a = Write("join-a.txt", "first file");
  const std::string b = Write("join-b.jsonl", "{\"p\": \"rec\", \"g\": \"ord 1\"}\n\n{\"p\": \"record\", \"g\": \" 2\"}\n");
  absl::StatusOr<CalibrationData> data = Read({a, b + ":p+g"});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_FALSE(data->is_tokens);
  EXPECT_EQ(data->text, "first file\n\nrecord 1\n\nrecord 2");
}

TEST(CalibrationTextTest, BadTextGetsClearErrors) {
  const std::string jsonl =
      Write("bad-a.jsonl", "{\"prefix\": \"Hello\", \"gold\": \" world\"}\n{\"prefix\": \"x\"}\n{\"prefix\": 3}\n");
  EXPECT_THAT(ErrorOf({jsonl + ":prefix+gold"}), HasSubstr("bad-a.jsonl:2: field \"gold\" is missing or neither"));
  EXPECT_THAT(ErrorOf({jsonl + ":prefix"}), HasSubstr("bad-a.jsonl:3: field \"prefix\" is missing or neither"));
  EXPECT_THAT(ErrorOf({Write("bad-b.txt", "ok \xC3\x28 bad")}), HasSubstr("invalid UTF-8 at byte 3"));
  EXPECT_THAT(ErrorOf({Write("bad-c.jsonl", "[1, 2]\n") + ":x"}), HasSubstr("bad-c.jsonl:1: not a JSON object"));
  EXPECT_THAT(ErrorOf({Dir() + "missing.txt"}), HasSubstr("cannot open"));
}

TEST(CalibrationTextTest, CrlfBecomesLfAndIsReportedOncePerFile) {
  std::string s = "a\r\nb\rc\r\n\r\n";
  EXPECT_EQ(NormalizeCrlf(&s), 3);
  EXPECT_EQ(s, "a\nb\rc\n\n");  // a lone CR is kept

  const std::string crlf = Write("crlf.txt", "line one\r\nline two\r\n\r\nline four\r\n");
  const std::string lf = Write("lf.txt", "line one\nline two\n\nline four\n");
  std::vector<std::string> lines;
  absl::StatusOr<CalibrationData> from_crlf = Read({crlf}, &lines);
  absl::StatusOr<CalibrationData> from_lf = Read({lf}, &lines);
  ASSERT_TRUE(from_crlf.ok() && from_lf.ok());
  EXPECT_EQ(from_crlf->text, from_lf->text);
  EXPECT_EQ(lines, std::vector<std::string>{CrlfNote(crlf, 4)});
  EXPECT_THAT(lines[0], HasSubstr("crlf.txt: 4 CRLF line ends normalized to LF"));

  // JSON Lines: CRLF record separators are whitespace; CRLF inside strings is text.
  lines.clear();
  const std::string jsonl = Write("crlf.jsonl", "{\"t\": \"a\\r\\nb\"}\r\n{\"t\": \"c\\r\\nd\\r\\n\"}\r\n");
  absl::StatusOr<CalibrationData> records = Read({jsonl + ":t"}, &lines);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->text, "a\nb\n\nc\nd\n");
  EXPECT_EQ(lines, std::vector<std::string>{CrlfNote(jsonl, 3)});

  // The real CRLF file of the shared data: its tokens equal those of its LF copy.
  const std::string wiki = testing::SharedData("wikitext-2-raw/wiki.test.raw");
  absl::StatusOr<std::string> raw = ReadTextFile(wiki);
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_NE(raw->find("\r\n"), std::string::npos) << "wiki.test.raw is expected to have CRLF line ends";
  const std::string head = raw->substr(0, raw->rfind('\n', 20000) + 1);  // whole lines
  std::string lf_copy = head;
  ASSERT_GT(NormalizeCrlf(&lf_copy), 10);
  const std::string head_crlf = Write("wiki-head-crlf.txt", head);
  const std::string head_lf = Write("wiki-head-lf.txt", lf_copy);
  auto tokenizer = Tokenizer::Load(testing::BundledTokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  lines.clear();
  CalibrationReadOptions options{kVocab, [&lines](const std::string& l) { lines.push_back(l); }};
  auto a = TokenizeCalibrationSources(*tokenizer, {*ParseCalibrationSource(head_crlf)}, options);
  auto b = TokenizeCalibrationSources(*tokenizer, {*ParseCalibrationSource(head_lf)}, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  ASSERT_EQ(lines.size(), 1u);
  int64_t eval_crlf = 0;
  auto eval_text = ReadTextForTokenizing(head_crlf, &eval_crlf);
  ASSERT_TRUE(eval_text.ok());
  EXPECT_EQ(*eval_text, lf_copy);
  EXPECT_EQ(lines[0], CrlfNote(head_crlf, eval_crlf));
}

// ---- JSON Lines ids (§2, §3) ----

TEST(CalibrationIdsTest, JsonLinesIdsAreConcatenatedAsTheyAre) {
  const std::string path = Write("ids.jsonl",
                                 "{\"input_ids\": [1, 2, 3], \"extra\": [9]}\n"
                                 "\n"
                                 "{\"input_ids\": []}\n"
                                 "{\"input_ids\": [511, 0]}\r\n");
  EXPECT_EQ(Ids({path + ":input_ids"}), (std::vector<int>{1, 2, 3, 511, 0}));
  const std::string two = Write("ids-two.jsonl", "{\"a\": [1], \"b\": [2, 3]}\n{\"a\": [4], \"b\": []}\n");
  EXPECT_EQ(Ids({two + ":a+b"}), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(Ids({two + ":b+a"}), (std::vector<int>{2, 3, 1, 4}));
  // Two token files: concatenated, nothing inserted between them.
  EXPECT_EQ(Ids({path + ":input_ids", two + ":a"}), (std::vector<int>{1, 2, 3, 511, 0, 1, 4}));
}

TEST(CalibrationIdsTest, BadJsonLinesIdsNameTheirPosition) {
  const std::string range = Write("ids-range.jsonl", "{\"input_ids\": [1, 2]}\n{\"input_ids\": [5, 512, 7]}\n");
  EXPECT_THAT(ErrorOf({range + ":input_ids"}),
              HasSubstr("ids-range.jsonl:2: field \"input_ids\" index 1: id 512 is outside the vocabulary [0, 512)"));
  const std::string negative = Write("ids-neg.jsonl", "{\"input_ids\": [-1]}\n");
  EXPECT_THAT(ErrorOf({negative + ":input_ids"}), HasSubstr("ids-neg.jsonl:1: field \"input_ids\" index 0: id -1 is"));
  const std::string huge = Write("ids-huge.jsonl", "{\"input_ids\": [18446744073709551615]}\n");
  EXPECT_THAT(ErrorOf({huge + ":input_ids"}), HasSubstr("index 0: id 18446744073709551615 is outside"));
  const std::string fraction = Write("ids-float.jsonl", "{\"input_ids\": [1, 2.5]}\n");
  EXPECT_THAT(ErrorOf({fraction + ":input_ids"}), HasSubstr("index 1: 2.5 is not an integer token id"));
  const std::string boolean = Write("ids-bool.jsonl", "{\"input_ids\": [true]}\n");
  EXPECT_THAT(ErrorOf({boolean + ":input_ids"}), HasSubstr("index 0: true is not an integer token id"));
  const std::string mixed = Write("ids-mixed.jsonl", "{\"text\": \"hi\", \"input_ids\": [1]}\n");
  EXPECT_THAT(ErrorOf({mixed + ":text+input_ids"}),
              HasSubstr("ids-mixed.jsonl:1: fields text+input_ids mix strings and lists of token ids"));
  const std::string switches = Write("ids-switch.jsonl", "{\"x\": [1]}\n{\"x\": \"text\"}\n");
  EXPECT_THAT(ErrorOf({switches + ":x"}),
              AllOf(HasSubstr("ids-switch.jsonl:2: this record holds text"), HasSubstr("first record holds token ids")));
  const std::string number = Write("ids-number.jsonl", "{\"x\": 5}\n");
  EXPECT_THAT(ErrorOf({number + ":x"}), HasSubstr("neither a string nor a list of token ids"));
}

TEST(CalibrationIdsTest, TextAndTokenSourcesDoNotMix) {
  const std::string text = Write("mix.txt", "some text");
  const std::string npy = Write("mix.npy", Npy("<i4", "(2,)", LeBytes<int32_t>({1, 2})));
  EXPECT_THAT(ErrorOf({text, npy}),
              AllOf(HasSubstr("mix text ("), HasSubstr("mix.txt) and token ids ("), HasSubstr("mix.npy)"),
                    HasSubstr("must all be text or all token ids")));
  const std::string jsonl = Write("mix.jsonl", "{\"t\": \"x\"}\n");
  EXPECT_THAT(ErrorOf({npy, jsonl + ":t"}), AllOf(HasSubstr("mix.jsonl:t"), HasSubstr("mix.npy")));
  // A JSON Lines file without records holds nothing and goes with either kind.
  const std::string empty = Write("mix-empty.jsonl", "\n\n");
  EXPECT_EQ(Ids({empty + ":input_ids", npy}), (std::vector<int>{1, 2}));
  // Token sources need the vocabulary to be checked against.
  auto source = ParseCalibrationSource(npy);
  ASSERT_TRUE(source.ok());
  auto unbounded = ReadCalibrationData({*source}, CalibrationReadOptions{});
  ASSERT_FALSE(unbounded.ok());
  EXPECT_THAT(std::string(unbounded.status().message()), HasSubstr("vocabulary size"));
}

// ---- .npy (§5) ----

TEST(NpyTokensTest, ReadsEveryAcceptedDtypeAndShape) {
  EXPECT_EQ(Ids({Write("i4.npy", Npy("<i4", "(4,)", LeBytes<int32_t>({5, 0, 511, 7})))}),
            (std::vector<int>{5, 0, 511, 7}));
  EXPECT_EQ(Ids({Write("i8.npy", Npy("<i8", "(2, 3)", LeBytes<int64_t>({1, 2, 3, 4, 5, 6})))}),
            (std::vector<int>{1, 2, 3, 4, 5, 6}));  // row order
  EXPECT_EQ(Ids({Write("u4.npy", Npy("<u4", "(3,)", LeBytes<uint32_t>({9, 8, 7})))}), (std::vector<int>{9, 8, 7}));
  EXPECT_EQ(Ids({Write("v2.npy", Npy("<i4", "(2,)", LeBytes<int32_t>({3, 4}), false, /*major=*/2))}),
            (std::vector<int>{3, 4}));
  EXPECT_EQ(Ids({Write("v3.npy", Npy("<i4", "(1,)", LeBytes<int32_t>({6}), false, /*major=*/3))}),
            (std::vector<int>{6}));
  EXPECT_EQ(Ids({Write("empty.npy", Npy("<i4", "(0,)", ""))}), std::vector<int>{});
  EXPECT_EQ(Ids({Write("empty2d.npy", Npy("<i4", "(0, 5)", ""))}), std::vector<int>{});
  // Keys in any order, double quotes, no trailing comma, Python 2 long integers.
  EXPECT_EQ(Ids({Write("order.npy",
                       NpyWithHeader("{\"shape\": (2L,), \"fortran_order\": False, \"descr\": \"<i4\"}\n",
                                     LeBytes<int32_t>({1, 2})))}),
            (std::vector<int>{1, 2}));
}

TEST(NpyTokensTest, BadHeadersAreRefusedWithWhatWasFound) {
  const std::string data = LeBytes<int32_t>({1, 2});
  auto error = [](const std::string& name, const std::string& bytes) { return ErrorOf({Write(name, bytes)}); };
  EXPECT_THAT(error("magic.npy", "NUMPY\x01\x00"), HasSubstr("does not start with the .npy magic"));
  EXPECT_THAT(error("short.npy", std::string("\x93NUM", 4)), HasSubstr("does not start with the .npy magic"));
  EXPECT_THAT(error("version.npy", std::string("\x93NUMPY\x04\x00\x10\x00", 10) + std::string(16, ' ')),
              HasSubstr("format version 4.0 is not supported"));
  EXPECT_THAT(error("nolen.npy", std::string("\x93NUMPY\x01\x00\x10", 9)), HasSubstr("ends inside the header length"));
  std::string truncated_header = Npy("<i4", "(2,)", data);
  truncated_header.resize(30);
  EXPECT_THAT(error("cut.npy", truncated_header), HasSubstr("ends inside its 118-byte header (truncated)"));
  EXPECT_THAT(error("big.npy", NpyWithHeader(std::string(20000, ' ') + "\n", data, 2)),
              HasSubstr("header of 20001 bytes is larger than the 10000 accepted"));
  EXPECT_THAT(error("nonl.npy", NpyWithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", data)),
              HasSubstr("does not end with a newline"));
  EXPECT_THAT(error("binary.npy", NpyWithHeader("{'descr': '<i4'\x01}\n", data)), HasSubstr("0x01 at offset 15"));
  EXPECT_THAT(error("noshape.npy", NpyWithHeader("{'descr': '<i4', 'fortran_order': False}\n", data)),
              HasSubstr("no 'shape'"));
  EXPECT_THAT(error("extra.npy",
                    NpyWithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", data)),
              HasSubstr("expected a string, True, False or a tuple"));
  EXPECT_THAT(error("extra2.npy",
                    NpyWithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 'y'}\n", data)),
              HasSubstr("unexpected key 'x'"));
  EXPECT_THAT(error("twice.npy",
                    NpyWithHeader("{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2,)}\n", data)),
              HasSubstr("key 'descr' appears twice"));
  EXPECT_THAT(error("garbage.npy", NpyWithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)} x\n", data)),
              HasSubstr("unexpected text after the dict"));
  EXPECT_THAT(error("unterminated.npy", NpyWithHeader("{'descr: '<i4'\n", data)), HasSubstr("expected ':'"));
  EXPECT_THAT(error("typed.npy", NpyWithHeader("{'descr': '<i4', 'fortran_order': 0, 'shape': (2,)}\n", data)),
              HasSubstr("expected a string, True, False or a tuple"));
  EXPECT_THAT(error("shape-str.npy", NpyWithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': '2'}\n", data)),
              HasSubstr("'shape' is not a tuple"));
  EXPECT_THAT(error("struct.npy", NpyWithHeader("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,)}\n",
                                                data)),
              HasSubstr("structured dtype"));
  EXPECT_THAT(error("dim.npy", Npy("<i4", "(99999999999999999999,)", data)), HasSubstr("dimension too large"));
  EXPECT_THAT(error("overflow.npy", Npy("<i4", "(4611686018427387904, 4)", data)), HasSubstr("overflows"));
}

TEST(NpyTokensTest, WrongDtypesOrderAndShapesAreRefused) {
  auto error = [](const std::string& name, const std::string& bytes) { return ErrorOf({Write(name, bytes)}); };
  EXPECT_THAT(error("f4.npy", Npy("<f4", "(2,)", LeBytes<int32_t>({0, 0}))),
              AllOf(HasSubstr("dtype '<f4' is not a token-id dtype"), HasSubstr("int32 ('<i4'), int64 ('<i8') or uint32")));
  EXPECT_THAT(error("u2.npy", Npy("<u2", "(2,)", LeBytes<uint16_t>({1, 2}))), HasSubstr("dtype '<u2'"));
  EXPECT_THAT(error("i2.npy", Npy("|i1", "(2,)", "\x01\x02")), HasSubstr("dtype '|i1'"));
  EXPECT_THAT(error("be.npy", Npy(">i4", "(2,)", std::string("\0\0\0\1\0\0\0\2", 8))),
              AllOf(HasSubstr("'>i4' is big-endian"), HasSubstr("astype('<i4')")));
  EXPECT_THAT(error("fortran.npy", Npy("<i4", "(1, 2)", LeBytes<int32_t>({1, 2}), /*fortran=*/true)),
              HasSubstr("fortran_order is True: save the array in C order"));
  EXPECT_THAT(error("scalar.npy", Npy("<i4", "()", LeBytes<int32_t>({1}))), HasSubstr("shape () has 0 dimensions"));
  EXPECT_THAT(error("3d.npy", Npy("<i4", "(1, 1, 2)", LeBytes<int32_t>({1, 2}))),
              HasSubstr("shape (1, 1, 2) has 3 dimensions: expected (n,) or (rows, columns)"));
}

TEST(NpyTokensTest, DataMustMatchTheHeaderAndTheVocabulary) {
  std::string truncated = Npy("<i4", "(3,)", LeBytes<int32_t>({1, 2, 3}));
  truncated.pop_back();
  EXPECT_THAT(ErrorOf({Write("trunc.npy", truncated)}),
              HasSubstr("shape (3,) of int32, 12 bytes of data, but 11 bytes follow the header (truncated)"));
  EXPECT_THAT(ErrorOf({Write("trail.npy", Npy("<i4", "(1,)", LeBytes<int32_t>({1, 2})))}),
              HasSubstr("4 bytes of data, but 8 bytes follow the header (trailing bytes)"));
  EXPECT_THAT(ErrorOf({Write("range1.npy", Npy("<i4", "(3,)", LeBytes<int32_t>({1, 2, 600})))}),
              HasSubstr("range1.npy: index 2: id 600 is outside the vocabulary [0, 512)"));
  EXPECT_THAT(ErrorOf({Write("range2.npy", Npy("<i8", "(2, 3)", LeBytes<int64_t>({1, 2, 3, 4, -5, 6})))}),
              HasSubstr("range2.npy: row 1, column 1: id -5 is outside"));
  EXPECT_THAT(ErrorOf({Write("range3.npy", Npy("<u4", "(1,)", LeBytes<uint32_t>({4000000000u})))}),
              HasSubstr("index 0: id 4000000000 is outside"));
  EXPECT_THAT(ErrorOf({Write("range4.npy", Npy("<i4", "(1,)", LeBytes<int32_t>({-2147483647 - 1})))}),
              HasSubstr("index 0: id -2147483648 is outside"));
}

TEST(NpyTokensTest, EveryTruncationOfAValidFileIsRefused) {
  const std::string whole = Npy("<i8", "(2, 2)", LeBytes<int64_t>({1, 2, 3, 4}));
  for (size_t n = 0; n < whole.size(); ++n) {
    const std::string path = Write("prefix.npy", whole.substr(0, n));
    std::vector<int> ids = {42};
    const absl::Status status = ReadNpyTokens(path, kVocab, &ids);
    EXPECT_FALSE(status.ok()) << n << " bytes accepted";
    EXPECT_EQ(ids, std::vector<int>{42}) << "a refused file appends nothing";
  }
  std::vector<int> ids;
  EXPECT_TRUE(ReadNpyTokens(Write("prefix.npy", whole), kVocab, &ids).ok());
  EXPECT_EQ(ids, (std::vector<int>{1, 2, 3, 4}));
}

// ---- Raw uint16 / uint32 (§6) ----

TEST(RawTokensTest, ReadsLittleEndianIds) {
  EXPECT_EQ(Ids({Write("t16.bin", LeBytes<uint16_t>({0, 1, 258, 511})) + ":uint16"}),
            (std::vector<int>{0, 1, 258, 511}));
  EXPECT_EQ(Ids({Write("t32.bin", LeBytes<uint32_t>({300, 2, 511})) + ":uint32"}), (std::vector<int>{300, 2, 511}));
  EXPECT_EQ(Ids({Write("t0.bin", "") + ":uint16"}), std::vector<int>{});
  // More than one read chunk (1 MiB) of ids.
  std::vector<uint16_t> many(700000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<uint16_t>((i * 7919) % kVocab);
  const std::vector<int> read = Ids({Write("many.bin", LeBytes(many)) + ":uint16"});
  ASSERT_EQ(read.size(), many.size());
  EXPECT_TRUE(std::equal(read.begin(), read.end(), many.begin()));
}

TEST(RawTokensTest, PartialIdsAndOutOfRangeIdsAreRefused) {
  std::string odd = LeBytes<uint16_t>({1, 2, 3});
  odd.pop_back();
  EXPECT_THAT(ErrorOf({Write("odd.bin", odd) + ":uint16"}),
              HasSubstr("odd.bin: 5 bytes is not a whole number of uint16 ids (2 bytes each): the file is truncated"));
  EXPECT_THAT(ErrorOf({Write("six.bin", LeBytes<uint16_t>({1, 2, 3})) + ":uint32"}),
              HasSubstr("6 bytes is not a whole number of uint32 ids (4 bytes each)"));
  EXPECT_THAT(ErrorOf({Write("r16.bin", LeBytes<uint16_t>({1, 2, 3, 512})) + ":uint16"}),
              HasSubstr("r16.bin: index 3 (byte 6): id 512 is outside the vocabulary [0, 512)"));
  EXPECT_THAT(ErrorOf({Write("r32.bin", LeBytes<uint32_t>({70000})) + ":uint32"}),
              HasSubstr("index 0 (byte 0): id 70000 is outside"));
  EXPECT_THAT(ErrorOf({Dir() + "nothere.bin:uint16"}), HasSubstr("cannot open"));
  EXPECT_THAT(ErrorOf({Dir() + ":uint16"}), HasSubstr("not a regular file"));
}

// ---- Windows ----

TEST(CalibrationDataTest, WindowsAreSeededAndInRange) {
  std::vector<int> tokens(1000);
  std::iota(tokens.begin(), tokens.end(), 0);
  auto a = SampleWindows(tokens, {16, 50, 3});
  auto b = SampleWindows(tokens, {16, 50, 3});
  auto c = SampleWindows(tokens, {16, 50, 4});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(at::equal(*a, *b));
  EXPECT_FALSE(at::equal(*a, *c));
  // Each window is a contiguous run of the stream.
  const at::Tensor diffs = a->narrow(1, 1, 49) - a->narrow(1, 0, 49);
  EXPECT_TRUE(at::all(diffs == 1).item<bool>());
  EXPECT_LE(a->max().item<int64_t>(), 999);
  // The first position of seed 3 is fixed by splitmix64, independent of the platform.
  uint64_t state = 3;
  EXPECT_EQ((*a)[0][0].item<int64_t>(), static_cast<int64_t>(SplitMix64(&state) % 951));
  auto short_text = SampleWindows(std::vector<int>(10, 5), {4, 16, 0});
  ASSERT_FALSE(short_text.ok());
  EXPECT_THAT(std::string(short_text.status().message()), HasSubstr("10 tokens"));
}

// ---- Halves (§9) ----

using Halves = std::pair<std::string, std::string>;

TEST(SplitHalvesTest, HeldOutEndsAtTheFirstBlankLineAtOrAfterTheMiddle) {
  // 16 characters, middle 8: characters 8-9 are the second "\n\n".
  EXPECT_EQ(SplitHalves("aaaa\n\nbb\n\ncccccc"), Halves("aaaa\n\nbb", "cccccc"));
  // 12 characters, middle 6 (a 'b'): the "\n\n" at 0-1 lies before it; the next starts at 9.
  EXPECT_EQ(SplitHalves("\n\nbbbbbbb\n\nc"), Halves("\n\nbbbbbbb", "c"));
  // 14 characters, middle 7; a single "\n" is no paragraph break: the cut waits for the
  // "\n\n" at 10.
  EXPECT_EQ(SplitHalves("ab\ncd\nefgh\n\nij"), Halves("ab\ncd\nefgh", "ij"));
  // 14 characters, middle 7 is the first character of a "\n\n" (7-8): cut there.
  EXPECT_EQ(SplitHalves("abcdefg\n\nabcde"), Halves("abcdefg", "abcde"));
}

TEST(SplitHalvesTest, TheMiddleCountsCharactersNotBytes) {
  // 8 two-byte characters, then "\n\nab\n\ncdefghij": 22 characters (30 bytes), middle 11
  // ('b', byte 19). Counting bytes instead (middle byte 15) would cut at the first "\n\n".
  const std::string e8 = "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9";
  ASSERT_EQ(e8.size(), 16u);
  EXPECT_EQ(SplitHalves(e8 + "\n\nab\n\ncdefghij"), Halves(e8 + "\n\nab", "cdefghij"));
  // Three- and four-byte characters: "\u20ac\U0001F642\u20ac\U0001F642\n\nab\n\ncdefghij\n\nk" has 21
  // characters, middle 10 ('c'); the next "\n\n" follows "cdefghij".
  const std::string mixed = "\u20ac\U0001F642\u20ac\U0001F642";
  ASSERT_EQ(mixed.size(), 14u);
  EXPECT_EQ(SplitHalves(mixed + "\n\nab\n\ncdefghij\n\nk"), Halves(mixed + "\n\nab\n\ncdefghij", "k"));
}

TEST(SplitHalvesTest, WithoutABlankLineAfterTheMiddleTheCutIsAtTheMiddle) {
  // No "\n\n" at all: 9 characters, middle 4; nothing is dropped.
  EXPECT_EQ(SplitHalves("abcdefghi"), Halves("abcd", "efghi"));
  // A "\n\n" only before the middle (characters 1-2 of 10, middle 5): still the middle.
  EXPECT_EQ(SplitHalves("a\n\nbcdefgh"), Halves("a\n\nbc", "defgh"));
  // 6 characters, middle 3 is the second newline of the "\n\n" at 2-3, which starts before it.
  EXPECT_EQ(SplitHalves("ab\n\ncd"), Halves("ab\n", "\ncd"));
  // Multibyte: "\u20ac\u20ac\u20ac\u20acab" is 6 characters, middle 3 starts at byte 9.
  EXPECT_EQ(SplitHalves("\u20ac\u20ac\u20ac\u20acab"), Halves("\u20ac\u20ac\u20ac", "\u20acab"));
  EXPECT_EQ(SplitHalves(""), Halves("", ""));
  EXPECT_EQ(SplitHalves("x"), Halves("", "x"));
}

// On the shared TinyStories text: the halves and the "\n\n" between them rebuild the text, the
// held-out half reaches the middle character and holds no "\n\n" that starts at or after it.
TEST(SplitHalvesTest, TinyStoriesHalvesFollowTheRule) {
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  ASSERT_TRUE(text.ok()) << text.status();
  auto characters = [](const std::string& s) {
    return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
  };
  const auto [first, second] = SplitHalves(*text);
  EXPECT_EQ(first + "\n\n" + second, *text);
  const int64_t middle = characters(*text) / 2;
  EXPECT_GE(characters(first), middle);
  // The "\n\n" the cut follows is the first one starting at or after the middle character.
  size_t middle_byte = 0;  // where character `middle` starts
  for (int64_t seen = -1; middle_byte < text->size(); ++middle_byte) {
    if ((static_cast<unsigned char>((*text)[middle_byte]) & 0xC0) != 0x80 && ++seen == middle) break;
  }
  EXPECT_EQ(text->find("\n\n", middle_byte), first.size());
}

TEST(CalibrationDataTest, SeqlenAboveMaxPositionsNamesBothNumbers) {
  LlamaConfig config;
  config.max_position_embeddings = 256;
  EXPECT_TRUE(CheckSeqlenFitsModel("seqlen", 256, config).ok());
  const absl::Status refused = CheckSeqlenFitsModel("--seqlen", 257, config);
  EXPECT_EQ(refused.message(), "--seqlen 257 exceeds the model's max_position_embeddings 256");
  config.sliding_window = 128;  // Mistral: the window is the limit
  EXPECT_TRUE(CheckSeqlenFitsModel("seqlen", 128, config).ok());
  const absl::Status windowed = CheckSeqlenFitsModel("seqlen", 129, config);
  EXPECT_THAT(std::string(windowed.message()), HasSubstr("sliding_window 128")) << windowed;
}

// ---- The must-show property ----

// Writes `ids` into JSON Lines records of "input_ids" cut at uneven places (1, 2, 4, ...
// up to 1000 ids, then again), with an unrelated text field in each record.
std::string WriteIdsJsonl(const std::string& name, const std::vector<int>& ids) {
  std::string out;
  size_t at = 0, length = 1, records = 0;
  while (at < ids.size()) {
    const size_t n = std::min(length, ids.size() - at);
    out += "{\"text\": \"ignored\", \"input_ids\": [";
    for (size_t i = 0; i < n; ++i) out += absl::StrCat(i == 0 ? "" : ", ", ids[at + i]);
    out += "]}\n";
    at += n;
    length = length >= 1000 ? 1 : length * 2;
    ++records;
  }
  EXPECT_GT(records, 10u);
  return Write(name, out);
}

TEST(TokenSourcesFederationTest, NpyAndJsonLinesIdsPruneBitIdenticallyToText) {
  auto model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = Tokenizer::Load(testing::BundledTokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_GT(text->size(), 100000u);
  const std::string second = SplitHalves(*text).second;
  const CalibrationReadOptions read{model->config().vocab_size, nullptr};
  const SamplingOptions sampling{8, 64, 0};

  // Per site: its text shard, the tool's tokenization of it, and that stream's ids written
  // as .npy (int32, int64, uint32 at the three sites), as JSON Lines records and as raw uint16.
  const std::vector<std::string> npy_descr = {"<i4", "<i8", "<u4"};
  std::map<std::string, std::vector<at::Tensor>> samples;  // format -> per site
  for (int site = 0; site < 3; ++site) {
    const std::string shard = Write(absl::StrCat("site", site, ".txt"), second.substr(site * 16000, 16000));
    auto stream = TokenizeCalibrationSources(*tokenizer, {*ParseCalibrationSource(shard)}, read);
    ASSERT_TRUE(stream.ok()) << stream.status();
    ASSERT_EQ(stream->front(), tokenizer->bos_id());
    std::string npy_data;
    if (npy_descr[site] == "<i4") npy_data = LeBytes<int32_t>(std::vector<int32_t>(stream->begin(), stream->end()));
    if (npy_descr[site] == "<i8") npy_data = LeBytes<int64_t>(std::vector<int64_t>(stream->begin(), stream->end()));
    if (npy_descr[site] == "<u4") npy_data = LeBytes<uint32_t>(std::vector<uint32_t>(stream->begin(), stream->end()));
    const std::map<std::string, std::string> specs = {
        {"text", shard},
        {"npy", Write(absl::StrCat("site", site, ".npy"),
                      Npy(npy_descr[site], absl::StrCat("(", stream->size(), ",)"), npy_data))},
        {"jsonl", WriteIdsJsonl(absl::StrCat("site", site, ".jsonl"), *stream) + ":input_ids"},
        {"raw", Write(absl::StrCat("site", site, ".bin"),
                      LeBytes<uint16_t>(std::vector<uint16_t>(stream->begin(), stream->end()))) +
                    ":uint16"},
    };
    for (const auto& [format, spec] : specs) {
      auto source = ParseCalibrationSource(spec);
      ASSERT_TRUE(source.ok()) << source.status();
      auto tokens = TokenizeCalibrationSources(*tokenizer, {*source}, read);
      ASSERT_TRUE(tokens.ok()) << format << ": " << tokens.status();
      EXPECT_EQ(*tokens, *stream) << format << " at site " << site;
      auto windows = SampleWindows(*tokens, sampling);
      ASSERT_TRUE(windows.ok()) << windows.status();
      samples[format].push_back(*windows);
    }
  }

  FederationOptions options;
  options.strategy = Strategy::kOneShot;
  options.aggregation.group = ComparisonGroup::kLayer;
  std::map<std::string, LlamaModel> federated;
  std::map<std::string, std::vector<LocalPruneResult>> local;
  for (const auto& [format, site_samples] : samples) {
    auto pruned = RunInProcessFederation(*model, site_samples, options);
    ASSERT_TRUE(pruned.ok()) << format << ": " << pruned.status();
    federated.emplace(format, *std::move(pruned));
    for (const at::Tensor& s : site_samples) {
      auto result = PruneLocally(*model, s, options.local);
      ASSERT_TRUE(result.ok()) << result.status();
      local[format].push_back(*std::move(result));
    }
  }
  const LlamaModel& reference = federated.at("text");
  int64_t pruned_weights = 0;
  for (int64_t layer = 0; layer < model->config().num_hidden_layers; ++layer) {
    for (const char* linear : kLinearNames) {
      pruned_weights += reference.tensors().at(LayerTensorName(layer, linear)).eq(0).sum().item<int64_t>();
    }
  }
  ASSERT_GT(pruned_weights, 0) << "the federation pruned nothing";
  for (const std::string format : {"npy", "jsonl", "raw"}) {
    // Every site's own masks, bit for bit.
    for (size_t site = 0; site < 3; ++site) {
      const LocalPruneResult& a = local.at("text")[site];
      const LocalPruneResult& b = local.at(format)[site];
      ASSERT_EQ(a.masks.size(), b.masks.size());
      for (size_t l = 0; l < a.masks.size(); ++l) {
        for (size_t k = 0; k < a.masks[l].size(); ++k) {
          EXPECT_EQ(a.masks[l][k].first, b.masks[l][k].first);
          EXPECT_TRUE(a.masks[l][k].second == b.masks[l][k].second) << format << " site " << site << " "
                                                                      << a.masks[l][k].first;
        }
      }
    }
    // The federated model, every tensor bit for bit.
    const LlamaModel& other = federated.at(format);
    ASSERT_EQ(other.tensors().size(), reference.tensors().size());
    for (const auto& [name, tensor] : reference.tensors()) {
      EXPECT_TRUE(at::equal(tensor, other.tensors().at(name))) << format << ": " << name;
    }
  }
}

}  // namespace
}  // namespace fedprllm
