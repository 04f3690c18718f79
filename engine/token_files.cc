// Token-id file readers: the .npy header parser, and chunked, range-checked decoding of
// little-endian ids from .npy and raw files.
#include "engine/token_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace fedprllm {
namespace {

// Ids decoded per read: 1 MiB of file bytes at a time, so the raw bytes are never held
// beside the ids.
constexpr int64_t kChunkBytes = int64_t{1} << 20;
// Dimensions above this are refused before any multiplication (2^62).
constexpr int64_t kMaxDimension = int64_t{1} << 62;

// Opens `path` for binary reading and returns its size in bytes.
absl::StatusOr<int64_t> OpenRegularFile(const std::string& path, std::ifstream* in) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > static_cast<uintmax_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InternalError(absl::StrCat(path, ": cannot read its size"));
  }
  in->open(path, std::ios::binary);
  if (!*in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return static_cast<int64_t>(size);
}

// Reads `count` little-endian ids of `item_size` bytes (two's complement when `is_signed`)
// from `in`, positioned at the first, and appends them to `*ids`. `where(i)` names id i's
// position in errors. Every id must be in [0, vocab_size). On failure `*ids` is as before.
absl::Status DecodeIds(std::istream& in, const std::string& path, int64_t count, int item_size, bool is_signed,
                       int64_t vocab_size, const std::function<std::string(int64_t)>& where, std::vector<int>* ids) {
  if (vocab_size < 1 || vocab_size > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": vocabulary size ", vocab_size, " is not in [1, 2^31)"));
  }
  const size_t start = ids->size();
  try {
    ids->reserve(start + static_cast<size_t>(count));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": no memory for its ", count, " token ids"));
  } catch (const std::length_error&) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": no memory for its ", count, " token ids"));
  }
  std::vector<unsigned char> buffer;
  const int bits = 8 * item_size;
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(count - done, kChunkBytes / item_size);
    buffer.resize(static_cast<size_t>(n * item_size));
    in.read(reinterpret_cast<char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() != static_cast<std::streamsize>(buffer.size())) {
      ids->resize(start);
      return absl::DataLossError(absl::StrCat(path, ": read failed at ", where(done + in.gcount() / item_size),
                                              " (the file changed while it was read?)"));
    }
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* p = buffer.data() + i * item_size;
      uint64_t u = 0;
      for (int b = item_size - 1; b >= 0; --b) u = (u << 8) | p[b];
      int64_t value;
      if (is_signed && bits < 64 && ((u >> (bits - 1)) & 1) != 0) {
        value = static_cast<int64_t>(u) - (int64_t{1} << bits);  // negative
      } else if (is_signed || u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        value = static_cast<int64_t>(u);
      } else {
        value = std::numeric_limits<int64_t>::max();  // an unsigned 64-bit id: out of range either way
      }
      if (value < 0 || value >= vocab_size) {
        ids->resize(start);
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", where(done + i), ": id ", value,
                                                       " is outside the vocabulary [0, ", vocab_size, ")"));
      }
      ids->push_back(static_cast<int>(value));
    }
    done += n;
  }
  return absl::OkStatus();
}

// A small reader of the Python literal numpy writes as its header:
// {'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }
class NpyDictParser {
 public:
  explicit NpyDictParser(absl::string_view text) : text_(text) {}

  struct Value {
    enum Kind { kString, kBool, kTuple } kind = kString;
    std::string string;
    bool boolean = false;
    std::vector<int64_t> tuple;
  };

  // Parses the whole dict; fails with a reason naming the header offset.
  absl::StatusOr<std::map<std::string, Value>> Parse() {
    std::map<std::string, Value> out;
    SkipSpace();
    if (!Eat('{')) return Error("expected '{'");
    SkipSpace();
    while (!Eat('}')) {
      ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Eat(':')) return Error(absl::StrCat("expected ':' after key '", key, "'"));
      SkipSpace();
      ASSIGN_OR_RETURN(Value value, ParseValue());
      if (!out.emplace(key, std::move(value)).second) return Error(absl::StrCat("key '", key, "' appears twice"));
      SkipSpace();
      if (Eat(',')) {
        SkipSpace();
      } else if (Peek() != '}') {
        return Error("expected ',' or '}'");
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the dict");
    return out;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Eat(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t')) ++pos_;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("header offset ", pos_, ": ", what));
  }

  absl::StatusOr<std::string> ParseString() {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    const size_t begin = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') return Error("escapes in strings are not supported");
      ++pos_;
    }
    if (pos_ >= text_.size()) return Error("unterminated string");
    std::string s(text_.substr(begin, pos_ - begin));
    ++pos_;
    return s;
  }

  absl::StatusOr<int64_t> ParseInt() {
    if (!std::isdigit(static_cast<unsigned char>(Peek()))) return Error("expected a non-negative integer");
    int64_t v = 0;
    while (std::isdigit(static_cast<unsigned char>(Peek()))) {
      const int digit = text_[pos_++] - '0';
      if (v > (kMaxDimension - digit) / 10) return Error("dimension too large");
      v = v * 10 + digit;
    }
    Eat('L');  // Python 2 numpy wrote long integers as 10L
    return v;
  }

  absl::StatusOr<Value> ParseValue() {
    Value v;
    const char c = Peek();
    if (c == '\'' || c == '"') {
      v.kind = Value::kString;
      ASSIGN_OR_RETURN(v.string, ParseString());
      return v;
    }
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      v.kind = Value::kBool;
      v.boolean = true;
      return v;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      v.kind = Value::kBool;
      return v;
    }
    if (Eat('(')) {
      v.kind = Value::kTuple;
      SkipSpace();
      while (!Eat(')')) {
        if (v.tuple.size() >= 32) return Error("too many dimensions");
        ASSIGN_OR_RETURN(int64_t dim, ParseInt());
        v.tuple.push_back(dim);
        SkipSpace();
        if (Eat(',')) {
          SkipSpace();
        } else if (Peek() != ')') {
          return Error("expected ',' or ')' in the shape");
        }
      }
      return v;
    }
    if (c == '[' || c == '{') return Error("a structured dtype is not an array of token ids");
    return Error("expected a string, True, False or a tuple");
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

std::string ShapeText(const std::vector<int64_t>& shape) {
  return shape.size() == 1 ? absl::StrCat("(", shape[0], ",)") : absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace

absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view prefix, const std::string& path) {
  auto bad = [&path](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a token-id .npy file: ", why));
  };
  static constexpr absl::string_view kMagic("\x93NUMPY", 6);
  if (prefix.size() < kMagic.size() || prefix.substr(0, kMagic.size()) != kMagic) {
    return bad("it does not start with the .npy magic \\x93NUMPY");
  }
  if (prefix.size() < 8) return bad("the file ends inside the format version");
  const int major = static_cast<unsigned char>(prefix[6]);
  const int minor = static_cast<unsigned char>(prefix[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    return bad(absl::StrCat("format version ", major, ".", minor, " is not supported (1.0, 2.0 or 3.0)"));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  if (prefix.size() < 8 + length_bytes) return bad("the file ends inside the header length");
  uint64_t header_len = 0;
  for (size_t b = length_bytes; b-- > 0;) header_len = (header_len << 8) | static_cast<unsigned char>(prefix[8 + b]);
  if (header_len > static_cast<uint64_t>(kMaxNpyHeaderBytes)) {
    return bad(absl::StrCat("its header of ", header_len, " bytes is larger than the ", kMaxNpyHeaderBytes,
                            " accepted"));
  }
  const size_t header_start = 8 + length_bytes;
  if (prefix.size() < header_start + header_len) {
    return bad(absl::StrCat("the file ends inside its ", header_len, "-byte header (truncated)"));
  }
  const absl::string_view header = prefix.substr(header_start, header_len);
  for (size_t i = 0; i < header.size(); ++i) {
    const unsigned char c = header[i];
    if ((c < 0x20 || c > 0x7e) && c != '\n' && c != '\t') {
      return bad(absl::StrCat("its header has the byte 0x", absl::Hex(c, absl::kZeroPad2), " at offset ", i,
                              " (a numpy header is printable ASCII)"));
    }
  }
  if (header.empty() || header.back() != '\n') return bad("its header does not end with a newline");
  absl::StatusOr<std::map<std::string, NpyDictParser::Value>> dict = NpyDictParser(header).Parse();
  if (!dict.ok()) return bad(absl::StrCat("its header is not a numpy header dict: ", dict.status().message()));
  for (const auto& [key, value] : *dict) {
    if (key != "descr" && key != "fortran_order" && key != "shape") {
      return bad(absl::StrCat("its header has the unexpected key '", key, "'"));
    }
  }
  auto get = [&](const char* key, NpyDictParser::Value::Kind kind,
                 const char* what) -> absl::StatusOr<const NpyDictParser::Value*> {
    auto it = dict->find(key);
    if (it == dict->end()) return bad(absl::StrCat("its header has no '", key, "'"));
    if (it->second.kind != kind) return bad(absl::StrCat("its header's '", key, "' is not ", what));
    return &it->second;
  };
  ASSIGN_OR_RETURN(const NpyDictParser::Value* descr, get("descr", NpyDictParser::Value::kString, "a dtype string"));
  ASSIGN_OR_RETURN(const NpyDictParser::Value* fortran, get("fortran_order", NpyDictParser::Value::kBool, "True or False"));
  ASSIGN_OR_RETURN(const NpyDictParser::Value* shape, get("shape", NpyDictParser::Value::kTuple, "a tuple"));

  NpyHeader out;
  const std::string& d = descr->string;
  if (d == "<i4") {
    out = {4, true, "int32"};
  } else if (d == "<i8") {
    out = {8, true, "int64"};
  } else if (d == "<u4") {
    out = {4, false, "uint32"};
  } else if (d.size() == 3 && d[0] == '>' && (d.substr(1) == "i4" || d.substr(1) == "i8" || d.substr(1) == "u4")) {
    return bad(absl::StrCat("dtype '", d, "' is big-endian; save it little-endian (arr.astype('<", d.substr(1), "'))"));
  } else {
    return bad(absl::StrCat("dtype '", d, "' is not a token-id dtype: expected int32 ('<i4'), int64 ('<i8') or ",
                            "uint32 ('<u4'), little-endian"));
  }
  if (fortran->boolean) {
    return bad("fortran_order is True: save the array in C order (np.ascontiguousarray)");
  }
  if (shape->tuple.size() != 1 && shape->tuple.size() != 2) {
    return bad(absl::StrCat("shape ", shape->tuple.empty() ? "()" : ShapeText(shape->tuple), " has ",
                            shape->tuple.size(), " dimensions: expected (n,) or (rows, columns)"));
  }
  out.shape = shape->tuple;
  int64_t count = 1;
  for (int64_t dim : out.shape) {
    if (__builtin_mul_overflow(count, dim, &count)) return bad(absl::StrCat("shape ", ShapeText(out.shape), " overflows"));
  }
  if (__builtin_mul_overflow(count, static_cast<int64_t>(out.item_size), &out.data_bytes)) {
    return bad(absl::StrCat("shape ", ShapeText(out.shape), " overflows"));
  }
  out.data_offset = static_cast<int64_t>(header_start + header_len);
  return out;
}

absl::Status ReadNpyTokens(const std::string& path, int64_t vocab_size, std::vector<int>* ids) {
  std::ifstream in;
  ASSIGN_OR_RETURN(const int64_t size, OpenRegularFile(path, &in));
  std::string prefix(static_cast<size_t>(std::min<int64_t>(size, 12 + kMaxNpyHeaderBytes)), '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  if (in.gcount() != static_cast<std::streamsize>(prefix.size())) {
    return absl::DataLossError(absl::StrCat(path, ": cannot read its header"));
  }
  ASSIGN_OR_RETURN(const NpyHeader header, ParseNpyHeader(prefix, path));
  const int64_t have = size - header.data_offset;
  if (have != header.data_bytes) {
    const std::string said = absl::StrCat("its header says shape ", ShapeText(header.shape), " of ", header.dtype, ", ",
                                          header.data_bytes, " bytes of data, but ", have, " bytes follow the header");
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", said, have < header.data_bytes ? " (truncated)" : " (trailing bytes)"));
  }
  in.clear();
  in.seekg(header.data_offset);
  const int64_t count = header.data_bytes / header.item_size;
  const int64_t columns = header.shape.size() == 2 ? header.shape[1] : 0;
  auto where = [columns](int64_t i) {
    return columns > 0 ? absl::StrCat("row ", i / columns, ", column ", i % columns) : absl::StrCat("index ", i);
  };
  return DecodeIds(in, path, count, header.item_size, header.is_signed, vocab_size, where, ids);
}

const char* RawTokenTypeName(RawTokenType type) { return type == RawTokenType::kUint16 ? "uint16" : "uint32"; }

absl::Status ReadRawTokens(const std::string& path, RawTokenType type, int64_t vocab_size, std::vector<int>* ids) {
  std::ifstream in;
  ASSIGN_OR_RETURN(const int64_t size, OpenRegularFile(path, &in));
  const int item_size = type == RawTokenType::kUint16 ? 2 : 4;
  if (size % item_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", size, " bytes is not a whole number of ",
                                                   RawTokenTypeName(type), " ids (", item_size,
                                                   " bytes each): the file is truncated, or its ids are not ",
                                                   RawTokenTypeName(type)));
  }
  auto where = [item_size](int64_t i) { return absl::StrCat("index ", i, " (byte ", i * item_size, ")"); };
  return DecodeIds(in, path, size / item_size, item_size, /*is_signed=*/false, vocab_size, where, ids);
}

}  // namespace fedprllm
