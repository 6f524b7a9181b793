// if_nameindex() and the ring's memory barriers are declared only under _GNU_SOURCE.
#define _GNU_SOURCE

#include "cnm_packet_ring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(cnm_linux_packet_host == PACKET_HOST, "PACKET_HOST");
_Static_assert(cnm_linux_packet_outgoing == PACKET_OUTGOING, "PACKET_OUTGOING");

struct cnm_linux_packet_ring {
    int fd;
    int wake_fd;
    int loopback_ifindex;
    uint8_t *map;
    size_t map_size;
    uint32_t block_size;
    uint32_t block_count;
    /// The block to read next: the kernel fills blocks in ring order.
    uint32_t next_block;
};

// Instruction indexes of the filter below, so each jump names where it goes.
enum {
    F_PKTTYPE,
    F_IS_OUTGOING,
    F_IS_HOST,
    F_IFINDEX,
    F_IS_LOOPBACK,
    F_PROTOCOL,
    F_IS_IPV4,
    F_V4_NEXT,
    F_V4_TCP,
    F_V4_UDP,
    F_IS_IPV6,
    F_V6_NEXT,
    F_V6_TCP,
    F_V6_UDP,
    F_V6_HOP_BY_HOP,
    F_V6_ROUTING,
    F_V6_FRAGMENT,
    F_V6_DESTINATION,
    F_KEEP,
    F_DROP,
    F_LENGTH
};

#define JUMP(at, target) ((uint8_t)((target) - (at)-1))
#define TEST(at, value, yes, no) [at] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (value), JUMP(at, yes), JUMP(at, no))

/// Keeps TCP and UDP (and IPv6 packets whose extension headers the parser walks to find them), sent or
/// received by this host, except the loopback interface's received copies; truncated to `snap`. With
/// SOCK_DGRAM the filter sees the packet from its network header, for sent packets too.
static int attach_filter(int fd, int loopback_ifindex, uint32_t snap) {
    struct sock_filter code[F_LENGTH] = {
        [F_PKTTYPE] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE),
        TEST(F_IS_OUTGOING, PACKET_OUTGOING, F_PROTOCOL, F_IS_HOST),
        TEST(F_IS_HOST, PACKET_HOST, F_IFINDEX, F_DROP),
        [F_IFINDEX] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_IFINDEX),
        TEST(F_IS_LOOPBACK, (uint32_t)loopback_ifindex, F_DROP, F_PROTOCOL),
        [F_PROTOCOL] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
        TEST(F_IS_IPV4, ETH_P_IP, F_V4_NEXT, F_IS_IPV6),
        [F_V4_NEXT] = BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
        TEST(F_V4_TCP, IPPROTO_TCP, F_KEEP, F_V4_UDP),
        TEST(F_V4_UDP, IPPROTO_UDP, F_KEEP, F_DROP),
        TEST(F_IS_IPV6, ETH_P_IPV6, F_V6_NEXT, F_DROP),
        [F_V6_NEXT] = BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),
        TEST(F_V6_TCP, IPPROTO_TCP, F_KEEP, F_V6_UDP),
        TEST(F_V6_UDP, IPPROTO_UDP, F_KEEP, F_V6_HOP_BY_HOP),
        TEST(F_V6_HOP_BY_HOP, IPPROTO_HOPOPTS, F_KEEP, F_V6_ROUTING),
        TEST(F_V6_ROUTING, IPPROTO_ROUTING, F_KEEP, F_V6_FRAGMENT),
        TEST(F_V6_FRAGMENT, IPPROTO_FRAGMENT, F_KEEP, F_V6_DESTINATION),
        TEST(F_V6_DESTINATION, IPPROTO_DSTOPTS, F_KEEP, F_DROP),
        [F_KEEP] = BPF_STMT(BPF_RET | BPF_K, snap),
        [F_DROP] = BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog program = {.len = F_LENGTH, .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program));
}

cnm_linux_packet_ring *cnm_linux_packet_ring_open(struct cnm_linux_packet_ring_config config) {
    cnm_linux_packet_ring *ring = calloc(1, sizeof(*ring));
    if (!ring) return NULL;
    ring->fd = ring->wake_fd = -1;
    ring->map = MAP_FAILED;
    ring->block_size = config.block_size;
    ring->block_count = config.block_count;
    ring->map_size = (size_t)config.block_size * config.block_count;
    ring->loopback_ifindex = (int)if_nametoindex("lo");

    // Protocol 0: no packet arrives before the filter and the ring are in place and bind() names ETH_P_ALL.
    ring->fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (ring->fd < 0) goto fail;
    if (attach_filter(ring->fd, ring->loopback_ifindex, config.snap_length) != 0) goto fail;
    int version = TPACKET_V3;
    if (setsockopt(ring->fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) != 0) goto fail;
    // V3 packs packets of any size into blocks; the frame fields only have to describe the same memory.
    const uint32_t frame_size = 2048;
    struct tpacket_req3 request = {
        .tp_block_size = config.block_size,
        .tp_block_nr = config.block_count,
        .tp_frame_size = frame_size,
        .tp_frame_nr = (uint32_t)(ring->map_size / frame_size),
        .tp_retire_blk_tov = config.retire_ms,
    };
    if (setsockopt(ring->fd, SOL_PACKET, PACKET_RX_RING, &request, sizeof(request)) != 0) goto fail;
    ring->map = mmap(NULL, ring->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, ring->fd, 0);
    if (ring->map == MAP_FAILED) goto fail;
    struct sockaddr_ll address = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = 0};
    if (bind(ring->fd, (struct sockaddr *)&address, sizeof(address)) != 0) goto fail;
    ring->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ring->wake_fd < 0) goto fail;
    return ring;

fail: {
    int saved = errno;
    cnm_linux_packet_ring_close(ring);
    errno = saved;
    return NULL;
}
}

void cnm_linux_packet_ring_close(cnm_linux_packet_ring *ring) {
    if (!ring) return;
    if (ring->map != MAP_FAILED) munmap(ring->map, ring->map_size);
    if (ring->fd >= 0) close(ring->fd);
    if (ring->wake_fd >= 0) close(ring->wake_fd);
    free(ring);
}

static struct tpacket_block_desc *block_at(cnm_linux_packet_ring *ring, uint32_t index) {
    return (struct tpacket_block_desc *)(ring->map + (size_t)index * ring->block_size);
}

int cnm_linux_packet_ring_wait(cnm_linux_packet_ring *ring, int timeout_ms) {
    struct pollfd fds[2] = {{.fd = ring->fd, .events = POLLIN}, {.fd = ring->wake_fd, .events = POLLIN}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) return errno == EINTR ? 1 : -1;
    if (fds[1].revents & POLLIN) {
        uint64_t count;
        if (read(ring->wake_fd, &count, sizeof(count)) < 0) { /* already drained */
        }
    }
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
        errno = EIO;
        return -1;
    }
    return n > 0;
}

void cnm_linux_packet_ring_wake(cnm_linux_packet_ring *ring) {
    uint64_t one = 1;
    if (write(ring->wake_fd, &one, sizeof(one)) < 0) { /* counter saturated: a wake is pending anyway */
    }
}

int cnm_linux_packet_ring_take(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block) {
    struct tpacket_block_desc *descriptor = block_at(ring, ring->next_block);
    // Acquire: the packets the kernel wrote before it handed the block over are visible after this load.
    uint32_t status = __atomic_load_n(&descriptor->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
    if (!(status & TP_STATUS_USER)) return 0;
    block->descriptor = descriptor;
    block->index = ring->next_block;
    block->remaining = descriptor->hdr.bh1.num_pkts;
    block->next_offset = descriptor->hdr.bh1.offset_to_first_pkt;
    block->losing = (status & TP_STATUS_LOSING) != 0;
    return 1;
}

int cnm_linux_packet_next(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block,
                          struct cnm_linux_packet *packet) {
    if (block->remaining == 0 || block->next_offset == 0 || block->next_offset >= ring->block_size) return 0;
    const uint8_t *base = (const uint8_t *)block->descriptor;
    const struct tpacket3_hdr *header = (const struct tpacket3_hdr *)(base + block->next_offset);
    const struct sockaddr_ll *link =
        (const struct sockaddr_ll *)((const uint8_t *)header + TPACKET_ALIGN(sizeof(struct tpacket3_hdr)));
    packet->data = (const uint8_t *)header + header->tp_net;
    packet->captured = header->tp_snaplen;
    packet->length = header->tp_len;
    packet->timestamp_ns = (int64_t)header->tp_sec * 1000000000 + header->tp_nsec;
    packet->ifindex = link->sll_ifindex;
    packet->packet_type = link->sll_pkttype;
    packet->is_loopback = link->sll_ifindex == ring->loopback_ifindex;
    block->remaining -= 1;
    block->next_offset = header->tp_next_offset ? block->next_offset + header->tp_next_offset : 0;
    return 1;
}

void cnm_linux_packet_ring_release(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block) {
    struct tpacket_block_desc *descriptor = (struct tpacket_block_desc *)block->descriptor;
    // Release: every read of the block is done before the kernel may fill it again.
    __atomic_store_n(&descriptor->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    ring->next_block = (block->index + 1) % ring->block_count;
}

int cnm_linux_packet_ring_stats(cnm_linux_packet_ring *ring, struct cnm_linux_packet_ring_stats *stats) {
    struct tpacket_stats_v3 kernel;
    socklen_t length = sizeof(kernel);
    memset(&kernel, 0, sizeof(kernel));
    if (getsockopt(ring->fd, SOL_PACKET, PACKET_STATISTICS, &kernel, &length) != 0) return -1;
    stats->packets = kernel.tp_packets;
    stats->drops = kernel.tp_drops;
    stats->freezes = kernel.tp_freeze_q_cnt;
    return 0;
}

int cnm_linux_interface_names(char *buffer, uint32_t size) {
    if (size == 0) {
        errno = EINVAL;
        return -1;
    }
    buffer[0] = 0;
    struct if_nameindex *interfaces = if_nameindex();
    if (!interfaces) return -1;
    int count = 0;
    size_t used = 0;
    for (struct if_nameindex *i = interfaces; i->if_index != 0 && i->if_name; i++) {
        size_t length = strlen(i->if_name);
        if (used + length + 2 > size) break;
        if (count > 0) buffer[used++] = ' ';
        memcpy(buffer + used, i->if_name, length);
        used += length;
        buffer[used] = 0;
        count += 1;
    }
    if_freenameindex(interfaces);
    return count;
}
