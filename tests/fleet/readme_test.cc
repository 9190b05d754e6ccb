// The README documents the rollout machine; these tests keep it from drifting from the code:
// the state diagrams and transition tables must be exactly what fleet/ renders, every plan field
// must be documented in the plan table, and the plan example must be a valid plan that spells
// out every field.
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fleet/plan.h"
#include "fleet/rollout_machine.h"

namespace fleet {
namespace {

using Json = nlohmann::json;

std::string ReadReadme() {
  const std::string path = std::string(FLEETWAVE_SOURCE_DIR) + "/README.md";
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::string& Readme() {
  static const std::string readme = ReadReadme();
  return readme;
}

// The text of the README section starting at the heading `title` (up to the next "## ").
std::string Section(const std::string& title) {
  const std::string& readme = Readme();
  const std::string heading = "\n## " + title + "\n";
  const size_t start = readme.find(heading);
  if (start == std::string::npos) return "";
  const size_t end = readme.find("\n## ", start + heading.size());
  return readme.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// Every field path of a plan's JSON, as the README's table spells it: "timeouts.queuedSeconds",
// "waves[].percent", "approval.beforeWaves".
void CollectPaths(const Json& value, const std::string& path, std::set<std::string>* out) {
  if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      const std::string child_path = path.empty() ? key : path + "." + key;
      out->insert(child_path);
      CollectPaths(child, child_path, out);
    }
  } else if (value.is_array()) {
    for (const Json& element : value)
      if (element.is_object()) CollectPaths(element, path + "[]", out);
  }
}

// The default plan, plus everything it leaves empty or null, so every field appears.
Plan FullPlan() {
  Plan plan;
  plan.retries = {RetryRule{FailureType::kTimedOut, 1}};
  plan.health = HealthGate{};
  plan.approval = Approval{{3}, 86400};
  return plan;
}

TEST(Readme, ContainsEachStateDiagramVerbatimInAMermaidFence) {
  for (Machine m : {Machine::kCycle, Machine::kRollout, Machine::kWave}) {
    const std::string block = "```mermaid\n" + RenderMermaid(m) + "```\n";
    EXPECT_NE(Readme().find(block), std::string::npos)
        << "README.md lacks the " << ToString(m) << " diagram; paste this:\n"
        << block;
  }
}

TEST(Readme, ContainsEachTransitionTableVerbatim) {
  for (Machine m : {Machine::kCycle, Machine::kRollout, Machine::kWave}) {
    const std::string table = RenderMarkdown(m);
    EXPECT_NE(Readme().find(table), std::string::npos)
        << "README.md lacks the " << ToString(m) << " transition table; paste this:\n"
        << table;
  }
}

TEST(Readme, DocumentsEveryPlanField) {
  const std::string section = Section("The rollout plan");
  ASSERT_FALSE(section.empty()) << "README.md has no section \"## The rollout plan\"";
  std::set<std::string> paths;
  CollectPaths(Json::parse(PlanToJson(Plan{})), "", &paths);
  CollectPaths(Json::parse(PlanToJson(FullPlan())), "", &paths);
  // Sanity: the walk reached the nested objects, the arrays' objects and the optional parts.
  for (const char* expected : {"waves[].minDevices", "timeouts.inProgressSeconds",
                               "retries[].count", "health.maxSoakSeconds", "approval.ttlSeconds"})
    EXPECT_TRUE(paths.count(expected)) << expected;
  for (const std::string& path : paths) {
    EXPECT_NE(section.find("| `" + path + "` |"), std::string::npos)
        << "the plan table in README.md has no row for `" << path << "`";
  }
}

TEST(Readme, PlanExampleIsValidAndSpellsOutEveryField) {
  const std::string section = Section("The rollout plan");
  const size_t fence = section.find("```json\n");
  ASSERT_NE(fence, std::string::npos) << "the plan section has no ```json example";
  const size_t start = fence + 8;
  const size_t end = section.find("```", start);
  ASSERT_NE(end, std::string::npos);
  const std::string example = section.substr(start, end - start);

  std::string error;
  std::optional<Plan> plan = ParsePlan(example, &error);
  ASSERT_TRUE(plan) << "the README's plan example is refused: " << error;

  // Every field of the full plan is written in the example itself, not left to a default.
  std::set<std::string> written, all;
  CollectPaths(Json::parse(example), "", &written);
  CollectPaths(Json::parse(PlanToJson(FullPlan())), "", &all);
  for (const std::string& path : all)
    EXPECT_TRUE(written.count(path)) << "the README's plan example does not show `" << path << "`";
}

}  // namespace
}  // namespace fleet
