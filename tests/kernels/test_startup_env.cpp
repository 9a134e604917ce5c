// The start-up environment whale sets before libgomp and OpenBLAS load (cpu_features.h): the
// OpenMP spin count is set only when the user chose no wait policy, and is a count libgomp reads.
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "kernels/cpu_features.h"

namespace whale {
namespace {

// Saves the variables the tests touch and puts them back afterwards.
class StartupEnv : public ::testing::Test {
 protected:
  static constexpr const char* kVars[] = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "WHALE_NO_REEXEC"};
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      const char* v = std::getenv(kVars[i]);
      saved_[i] = v ? std::optional<std::string>(v) : std::nullopt;
      ::unsetenv(kVars[i]);
    }
  }
  void TearDown() override {
    for (int i = 0; i < 3; ++i) {
      if (saved_[i]) ::setenv(kVars[i], saved_[i]->c_str(), 1);
      else ::unsetenv(kVars[i]);
    }
  }
  std::optional<std::string> saved_[3];
};

TEST_F(StartupEnv, SetsASpinCountWhenNoWaitPolicyIsChosen) {
  ASSERT_TRUE(set_omp_spin_env());
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  ASSERT_NE(spin, nullptr);
  // A plain decimal count (libgomp rejects anything else and keeps its default).
  const std::string s(spin);
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s.find_first_not_of("0123456789"), std::string::npos) << s;
  const long long n = std::atoll(spin);
  EXPECT_GE(n, 100);
  EXPECT_LE(n, 1000000);
  // The variable is now set: a second call (the restarted process) leaves it alone.
  EXPECT_FALSE(set_omp_spin_env());
  EXPECT_EQ(std::string(std::getenv("GOMP_SPINCOUNT")), s);
}

TEST_F(StartupEnv, KeepsTheUsersChoice) {
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  EXPECT_FALSE(set_omp_spin_env());
  EXPECT_EQ(std::getenv("GOMP_SPINCOUNT"), nullptr);
  ::unsetenv("OMP_WAIT_POLICY");
  ::setenv("GOMP_SPINCOUNT", "7", 1);
  EXPECT_FALSE(set_omp_spin_env());
  EXPECT_EQ(std::string(std::getenv("GOMP_SPINCOUNT")), "7");
  ::unsetenv("GOMP_SPINCOUNT");
  ::setenv("WHALE_NO_REEXEC", "1", 1);
  EXPECT_FALSE(set_omp_spin_env());
  EXPECT_EQ(std::getenv("GOMP_SPINCOUNT"), nullptr);
}

TEST(OmpSpinCount, GrowsWithTheTimeAndStaysInRange) {
  // Counts for 0 and 10^9 microseconds hit the clamp; a 1000x longer wait is never fewer spins.
  EXPECT_EQ(omp_spin_count_for(0.0), 100);
  EXPECT_EQ(omp_spin_count_for(1e9), 1000000);
  EXPECT_LE(omp_spin_count_for(1.0), omp_spin_count_for(1000.0));
}

}  // namespace
}  // namespace whale
