#include "engine/receive_buffer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "codec/frame.h"

namespace warren {
namespace {

// A frame header announcing a payload of `size` octets.
std::string header_of(std::uint32_t size) {
  char h[codec::frame_header_size];
  codec::write_frame_header(h, codec::frame_body, 1, size);
  return std::string(h, sizeof h);
}

void put(receive_buffer& b, std::string_view s) {
  b.make_room();
  ASSERT_GE(b.space_size(), s.size());
  std::memcpy(b.space(), s.data(), s.size());
  b.received(s.size());
}

TEST(receive_buffer, takes_a_pooled_buffer_with_room_to_read) {
  rx_pool pool(64 * 1024, 4);
  receive_buffer b(pool);
  EXPECT_TRUE(b.unconsumed().empty());
  b.make_room();
  EXPECT_EQ(b.space_size(), 64u * 1024);
  put(b, "abc");
  EXPECT_EQ(b.unconsumed(), "abc");
}

TEST(receive_buffer, a_buffer_nobody_views_is_reused_from_its_start) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  put(b, "hello");
  const rx_buffer* first = b.owner().get();
  b.consume(5);
  b.make_room();
  EXPECT_EQ(b.owner().get(), first);
  EXPECT_EQ(b.space_size(), 8192u);
}

TEST(receive_buffer, octets_a_delivery_views_never_move) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  put(b, std::string(8000, 'x'));
  rx_ref delivery = b.owner();  // a delivery keeps the buffer and views its start
  const char* viewed = delivery->data();
  b.consume(7990);  // 10 octets of a partial frame remain
  b.make_room();    // under min_read left: the partial frame goes to a fresh buffer
  EXPECT_NE(b.owner().get(), delivery.get());
  EXPECT_EQ(b.unconsumed(), std::string(10, 'x'));
  EXPECT_EQ(viewed, delivery->data());
  EXPECT_EQ(std::string(delivery->data(), 3), "xxx");
}

TEST(receive_buffer, a_consumed_buffer_still_viewed_is_let_go) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  put(b, "abc");
  rx_ref delivery = b.owner();
  b.consume(3);
  EXPECT_FALSE(b.owner()) << "the next read takes a fresh buffer";
}

TEST(receive_buffer, a_frame_larger_than_a_pooled_buffer_gets_room_for_all_of_it) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  put(b, header_of(100000));
  b.make_room();
  EXPECT_GE(b.space_size() + b.unconsumed().size(), 100000u + codec::frame_overhead);
  EXPECT_EQ(b.unconsumed(), header_of(100000)) << "the partial frame came along";
}

TEST(receive_buffer, a_partial_frame_moves_to_the_front_when_nobody_views_the_buffer) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  put(b, std::string(8000, 'y'));
  const rx_buffer* first = b.owner().get();
  b.consume(7995);
  b.make_room();
  EXPECT_EQ(b.owner().get(), first) << "moved in place";
  EXPECT_EQ(b.unconsumed(), std::string(5, 'y'));
  EXPECT_EQ(b.space_size(), 8192u - 5);
}

// What the machine left unconsumed can be more than one frame (a parse that stopped early): the
// room rule still holds, and none of it is lost.
TEST(receive_buffer, room_to_read_after_more_than_one_frame_held) {
  rx_pool pool(8192, 4);
  receive_buffer b(pool);
  const std::string frame = header_of(3000) + std::string(3000 + 1, 'z');
  put(b, frame + frame);
  b.make_room();
  EXPECT_GE(b.space_size(), receive_buffer::min_read);
  EXPECT_EQ(b.unconsumed(), frame + frame);
}

TEST(receive_buffer, release_lets_the_buffer_go) {
  rx_pool pool(8192, 4);
  {
    receive_buffer b(pool);
    put(b, "x");
    b.release();
    EXPECT_FALSE(b.owner());
  }
  EXPECT_EQ(pool.cached(), 1u);
}

}  // namespace
}  // namespace warren
