#ifndef CNM_PACKET_RING_H
#define CNM_PACKET_RING_H

// Packet headers from an AF_PACKET socket with a TPACKET_V3 receive ring, under the cnm_linux_packet_ prefix.
// linux/if_packet.h and linux/filter.h are included only by PacketRing.c: the ring's block and frame
// headers are unions and macros Swift cannot use, so the C side walks them and hands Swift one plain
// struct per packet.

#include <stdint.h>

/// PACKET_HOST and PACKET_OUTGOING (linux/if_packet.h): addressed to this host, or sent by it. The
/// ring's filter lets no other packet type through.
static const uint8_t cnm_linux_packet_host = 0;
static const uint8_t cnm_linux_packet_outgoing = 4;

/// How the ring is laid out and what its filter keeps.
struct cnm_linux_packet_ring_config {
    /// Bytes per block (a multiple of the page size) and blocks in the ring.
    uint32_t block_size;
    uint32_t block_count;
    /// Milliseconds after which the kernel hands over a block that is not full (tp_retire_blk_tov).
    uint32_t retire_ms;
    /// Bytes kept of each packet from its network header: enough for IP and TCP/UDP headers.
    uint32_t snap_length;
};

/// One packet as the ring holds it (SOCK_DGRAM: `data` starts at the network header).
struct cnm_linux_packet {
    const uint8_t *data;
    /// Bytes at `data`: the snap length or less.
    uint32_t captured;
    /// The packet's full length from its network header (tp_len).
    uint32_t length;
    /// When the kernel saw the packet, CLOCK_REALTIME.
    int64_t timestamp_ns;
    int32_t ifindex;
    /// cnm_linux_packet_host or cnm_linux_packet_outgoing.
    uint8_t packet_type;
    /// The loopback interface: each of its packets passes once, as sent.
    uint8_t is_loopback;
};

/// A block the kernel has handed to user space, read packet by packet with cnm_linux_packet_next and
/// given back with cnm_linux_packet_ring_release.
struct cnm_linux_packet_block {
    const void *descriptor;
    uint32_t index;
    uint32_t remaining;
    uint32_t next_offset;
    /// The kernel dropped packets for want of a free block while this one was filled (TP_STATUS_LOSING).
    uint8_t losing;
};

/// The kernel's capture counters since the last call (reading them resets them): packets that passed
/// the filter, those dropped because the ring was full, and times the ring froze for want of a block.
struct cnm_linux_packet_ring_stats {
    uint32_t packets;
    uint32_t drops;
    uint32_t freezes;
};

typedef struct cnm_linux_packet_ring cnm_linux_packet_ring;

/// Opens an AF_PACKET socket on every interface of the calling thread's network namespace, with a
/// classic BPF filter that keeps TCP and UDP over IPv4 and IPv6 sent or received by this host (the
/// loopback interface's copies as received are dropped: each of its packets is seen once, as sent)
/// and truncates them to `snap_length`, and a TPACKET_V3 ring mapped into memory. Returns NULL and
/// sets errno on failure: EPERM without CAP_NET_RAW.
cnm_linux_packet_ring *cnm_linux_packet_ring_open(struct cnm_linux_packet_ring_config config);

/// Closes the socket and unmaps the ring; the ring must not be in use by another thread.
void cnm_linux_packet_ring_close(cnm_linux_packet_ring *ring);

/// Waits until a block is ready or cnm_linux_packet_ring_wake is called, for at most `timeout_ms`
/// (-1: no limit). Returns 1 when woken or ready, 0 on timeout, -1 with errno on failure.
int cnm_linux_packet_ring_wait(cnm_linux_packet_ring *ring, int timeout_ms);

/// Wakes a thread blocked in cnm_linux_packet_ring_wait; safe from any thread.
void cnm_linux_packet_ring_wake(cnm_linux_packet_ring *ring);

/// The next block in ring order if the kernel has handed it over: returns 1 and fills `block`, or 0.
int cnm_linux_packet_ring_take(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block);

/// The block's next packet: returns 1 and fills `packet`, or 0 after its last one.
int cnm_linux_packet_next(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block,
                          struct cnm_linux_packet *packet);

/// Gives the block back to the kernel and moves on to the next one.
void cnm_linux_packet_ring_release(cnm_linux_packet_ring *ring, struct cnm_linux_packet_block *block);

/// Reads and resets the kernel's counters (PACKET_STATISTICS). Returns 0, or -1 with errno.
int cnm_linux_packet_ring_stats(cnm_linux_packet_ring *ring, struct cnm_linux_packet_ring_stats *stats);

/// The names of the namespace's interfaces, separated by spaces, into `buffer` (always terminated).
/// Returns the number of interfaces, or -1 with errno.
int cnm_linux_interface_names(char *buffer, uint32_t size);

#endif
