#include "tools/perf/confirm_outcome.h"

#include <gtest/gtest.h>

namespace warren::perf {
namespace {

using outcome = async::confirm_result::outcome;

TEST(confirm_outcome, only_the_brokers_nack_counts_as_nacked) {
  EXPECT_EQ(settlement_of(outcome::ack), settlement::confirmed);
  EXPECT_EQ(settlement_of(outcome::nack), settlement::nacked);
}

// Issue 9 item 7: a connection lost with publishes outstanding was counted as nacked.
TEST(confirm_outcome, an_outcome_nobody_knows_is_in_doubt) {
  EXPECT_EQ(settlement_of(outcome::in_doubt), settlement::in_doubt);
  EXPECT_EQ(settlement_of(outcome::channel_closed), settlement::in_doubt);
  EXPECT_EQ(settlement_of(outcome::timeout), settlement::in_doubt);
}

}  // namespace
}  // namespace warren::perf
