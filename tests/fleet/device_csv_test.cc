#include "fleet/device_csv.h"

#include <gtest/gtest.h>

namespace fleet {
namespace {

TEST(SplitCsvLine, PlainQuotedAndEscaped) {
  std::string error;
  EXPECT_EQ(*SplitCsvLine("a,b,c", &error), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(*SplitCsvLine("a,,c\r", &error), (std::vector<std::string>{"a", "", "c"}));
  EXPECT_EQ(*SplitCsvLine("\"a,b\",\"say \"\"hi\"\"\"", &error),
            (std::vector<std::string>{"a,b", "say \"hi\""}));
  EXPECT_EQ(*SplitCsvLine("", &error), (std::vector<std::string>{""}));
  EXPECT_EQ(*SplitCsvLine("ab\"c", &error), (std::vector<std::string>{"ab\"c"}));
}

TEST(SplitCsvLine, BrokenQuoting) {
  std::string error;
  EXPECT_FALSE(SplitCsvLine("\"abc", &error));
  EXPECT_NE(error.find("never closed"), std::string::npos);
  EXPECT_FALSE(SplitCsvLine("\"ab\"c,d", &error));
  EXPECT_NE(error.find("after a closing quote"), std::string::npos);
}

TEST(DeviceCsv, HeaderInAnyOrderWithOptionalRing) {
  std::string error;
  auto csv = DeviceCsv::FromHeader("firmware,id,model", &error);
  ASSERT_TRUE(csv) << error;
  auto d = csv->ParseRow("1.0.0,robot-1,arm", &error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->id, "robot-1");
  EXPECT_EQ(d->model, "arm");
  EXPECT_EQ(d->firmware, "1.0.0");
  EXPECT_EQ(d->ring, kDefaultRing);

  csv = DeviceCsv::FromHeader("id,model,firmware,ring\r", &error);
  ASSERT_TRUE(csv) << error;
  d = csv->ParseRow("robot-2,arm,2.0.0-rc.1,canary\r", &error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->ring, "canary");
  d = csv->ParseRow("robot-3,arm,2.0.0,", &error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->ring, kDefaultRing);  // an empty ring cell means the default
}

TEST(DeviceCsv, BadHeaders) {
  std::string error;
  EXPECT_FALSE(DeviceCsv::FromHeader("id,model", &error));
  EXPECT_NE(error.find("id, model and firmware"), std::string::npos);
  EXPECT_FALSE(DeviceCsv::FromHeader("id,model,firmware,colour", &error));
  EXPECT_NE(error.find("\"colour\" is unknown"), std::string::npos);
  EXPECT_FALSE(DeviceCsv::FromHeader("id,id,model,firmware", &error));
  EXPECT_NE(error.find("twice"), std::string::npos);
}

TEST(DeviceCsv, BadRowsNameTheProblem) {
  std::string error;
  auto csv = *DeviceCsv::FromHeader("id,model,firmware", &error);
  EXPECT_FALSE(csv.ParseRow("robot-1,arm", &error));
  EXPECT_NE(error.find("2 fields, the header has 3"), std::string::npos);
  EXPECT_FALSE(csv.ParseRow("robot/1,arm,1.0.0", &error));
  EXPECT_NE(error.find("device id \"robot/1\""), std::string::npos);
  EXPECT_FALSE(csv.ParseRow("robot-1,arm,1.0", &error));
  EXPECT_NE(error.find("firmware \"1.0\""), std::string::npos);
  EXPECT_FALSE(csv.ParseRow("robot-1,,1.0.0", &error));
  EXPECT_NE(error.find("model \"\""), std::string::npos);
}

}  // namespace
}  // namespace fleet
