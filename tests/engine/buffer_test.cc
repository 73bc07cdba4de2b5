// rx_buffer/rx_ref/rx_pool: reference counting, pooling bounds, and the capacity overflow check.
#include "engine/buffer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <new>
#include <thread>
#include <vector>

namespace warren {
namespace {

TEST(buffer_test, a_capacity_that_would_wrap_the_allocation_size_throws_bad_alloc) {
  // sizeof(rx_buffer) + SIZE_MAX wraps to a tiny block; the check must refuse it.
  EXPECT_THROW(rx_ref::allocate(SIZE_MAX), std::bad_alloc);
  EXPECT_THROW(rx_ref::allocate(SIZE_MAX - 8), std::bad_alloc);
}

TEST(buffer_test, buffer_returns_to_its_pool_when_the_last_reference_goes) {
  rx_pool pool(1024, 2);
  rx_buffer* raw = nullptr;
  {
    rx_ref a = pool.acquire();
    raw = a.get();
    rx_ref b = a;
    EXPECT_FALSE(a.unique());
    a.reset();
    EXPECT_TRUE(b.unique());
    EXPECT_EQ(pool.cached(), 0u);
  }
  EXPECT_EQ(pool.cached(), 1u);
  rx_ref again = pool.acquire();
  EXPECT_EQ(again.get(), raw);
  EXPECT_TRUE(again.unique());
}

TEST(buffer_test, pool_caches_at_most_max_cached_buffers) {
  rx_pool pool(256, 2);
  {
    std::vector<rx_ref> held;
    for (int i = 0; i < 5; ++i) held.push_back(pool.acquire());
  }
  EXPECT_EQ(pool.cached(), 2u);
}

TEST(buffer_test, references_released_on_other_threads_return_the_buffer_once) {
  rx_pool pool(256, 4);
  {
    rx_ref r = pool.acquire();
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([copy = r] {
        for (int i = 0; i < 1000; ++i) rx_ref more = copy;
      });
    }
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(pool.cached(), 1u);
}

}  // namespace
}  // namespace warren
