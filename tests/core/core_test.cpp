#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "core/hash.h"
#include "core/json_parse.h"
#include "core/rng.h"

using namespace chorus;

TEST(Sha256, KnownVectors) {  // FIPS 180-4 examples
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // incremental == one shot
  std::string million(1000000, 'a');
  for (size_t i = 0; i < million.size(); i += 999) h.update(million.substr(i, 999));
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Rng, DeterministicPerSeedAndStream) {
  Rng a(1, 0), b(1, 0), c(1, 1), d(2, 0);
  std::set<uint64_t> firsts;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    firsts.insert(x);
  }
  EXPECT_NE(Rng(1, 0).next_u64(), c.next_u64());
  EXPECT_NE(Rng(1, 0).next_u64(), d.next_u64());
  EXPECT_EQ(firsts.size(), 100u);
  Rng e(5);
  auto saved = e.state();
  uint64_t x = e.next_u64();
  e.set_state(saved);
  EXPECT_EQ(e.next_u64(), x);
}

TEST(Rng, DistributionsInRange) {
  Rng r(9);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    float u = r.uniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    ASSERT_LT(r.below(7), 7u);
    float z = r.normal();
    sum += z;
    sq += double(z) * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.02);
}

TEST(Error, CheckNamesLocation) {
  try {
    CHORUS_CHECK(1 == 2, "field '%s' expected %d", "x", 3);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("field 'x' expected 3"), std::string::npos);
    // The location is kept apart from the message (core/error.h), relative to the tree.
    EXPECT_EQ(m.find("core_test.cpp"), std::string::npos) << m;
    EXPECT_EQ(e.where().rfind("tests/core/core_test.cpp:", 0), 0u) << e.where();
  }
}

TEST(ParseJson, RefusesNestingDeeperThanTheLimit) {
  EXPECT_EQ(chorus::parse_json("{\"a\": [[1]]}", 3)["a"][0][0], 1);
  EXPECT_THROW(chorus::parse_json("{\"a\": [[1]]}", 2), chorus::Error);
  EXPECT_THROW(chorus::parse_json("{\"a\": ", 3), nlohmann::json::exception);
  const std::string deep = std::string(500000, '[') + std::string(500000, ']');  // no stack overflow
  try {
    chorus::parse_json(deep);
    ADD_FAILURE() << "accepted";
  } catch (const chorus::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64 levels"), std::string::npos) << e.what();
  }
}
