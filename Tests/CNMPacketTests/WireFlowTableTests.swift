import CNMModel
import CNMPacket
import Testing

/// The side of `flow` at `endpoint`.
func side(_ flow: CapturedFlow, _ endpoint: Endpoint) -> CapturedFlow.Side {
    flow.a.endpoint == endpoint ? flow.a : flow.b
}

@Suite struct WireFlowTableTests {
    func handshake(_ c: Conversation) -> [PacketHeaders] {
        [c.fromClient(.syn), c.fromServer([.syn, .ack], ack: 1), c.fromClient(.ack, offset: 1, ack: 1)]
    }

    /// Everything ended by now, with no sock_diag read in between.
    func ended(_ t: inout WireFlowTable, _ c: Conversation) -> [CapturedFlow] {
        t.takeEnded(completeReadStart: nil, now: c.time)
    }

    @Test func exactCountsOfAConnectionClosedBothWays() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(
            handshake(c) + [
                c.fromClient([.psh, .ack], offset: 1, length: 300),
                c.fromServer(.ack, offset: 1),
                c.fromServer([.psh, .ack], offset: 1, length: 1_000),
                c.fromServer([.psh, .ack], offset: 1_001, length: 500),
                c.fromClient(.ack, offset: 301),
                c.fromClient([.fin, .ack], offset: 301),
                c.fromServer([.fin, .ack], offset: 1_501),
                c.fromClient(.ack, offset: 302),
            ], to: &t)
        let flows = ended(&t, c)
        try #require(flows.count == 1)
        let flow = flows[0]
        let client = side(flow, c.client)
        let server = side(flow, c.server)
        #expect(client.sent == WireCounts(bytes: 300, packets: 6, retransmits: 0))
        #expect(server.sent == WireCounts(bytes: 1_500, packets: 5, retransmits: 0))
        #expect(flow.fromStart && flow.established && flow.transport == .tcp)
        #expect(client.initiated && !server.initiated)
        #expect(client.failure == nil && server.failure == nil)
        #expect(client.isLocal && server.isLocal && !client.seenBySockDiag)
        // Handed over once: the last ACK sent again is taken in by what is left of it.
        c.send([c.fromClient(.ack, offset: 302)], to: &t)
        #expect(ended(&t, c).isEmpty && t.count == 1)
    }

    @Test func aResentSegmentCountsOnceAndAsARetransmission() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(
            handshake(c) + [
                c.fromClient(.ack, offset: 1, length: 1_000),
                c.fromClient(.ack, offset: 1_001, length: 1_000),
                c.fromClient(.ack, offset: 1, length: 1_000),  // timed out, sent again
                c.fromClient(.ack, offset: 501, length: 1_500),  // sent again, partly new (collapsed)
                c.fromClient([.fin, .ack], offset: 2_001),
                c.fromClient([.fin, .ack], offset: 2_001),  // the FIN sent again
                c.fromServer([.fin, .ack], offset: 1, ack: 2_002),
            ], to: &t)
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.client).sent == WireCounts(bytes: 2_000, packets: 8, retransmits: 3))
    }

    @Test func segmentsOutOfOrderAreNoRetransmissions() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(
            handshake(c) + [
                c.fromServer(.ack, offset: 1_001, length: 1_000),
                c.fromServer(.ack, offset: 3_001, length: 1_000),
                c.fromServer(.ack, offset: 1, length: 1_000),  // fills the first gap
                c.fromServer(.ack, offset: 2_001, length: 500),  // half the second
                c.fromServer(.ack, offset: 2_501, length: 500),  // the other half
                c.fromServer(.ack, offset: 2_001, length: 500),  // now a retransmission
                c.fromServer(.rst, offset: 4_001),
            ], to: &t)
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.server).sent.bytes == 4_000)
        #expect(side(flow, c.server).sent.retransmits == 1)
    }

    @Test func aResetAnsweringTheSYNIsRefused() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send([c.fromClient(.syn), c.fromServer([.rst, .ack], ack: 1)], to: &t)
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.client).failure == 111)
        #expect(side(flow, c.server).failure == nil)
        #expect(!flow.established && flow.fromStart)
        #expect(side(flow, c.client).sent.packets == 1 && side(flow, c.client).sent.bytes == 0)
    }

    @Test func aResetOnAnOpenConnectionResetsTheOtherSide() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(
            handshake(c) + [
                c.fromClient(.ack, offset: 1, length: 10),
                c.fromServer([.rst, .ack], offset: 1, ack: 11),
            ], to: &t)
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.client).failure == 104 && side(flow, c.server).failure == nil)
        #expect(side(flow, c.client).sent.bytes == 10)
        #expect(flow.established)
        // A segment still in flight after the end starts no new flow.
        c.send([c.fromClient(.ack, offset: 11, length: 5)], to: &t)
        #expect(ended(&t, c).isEmpty && t.count == 1)
    }

    /// A reset after the peer's FIN finds the socket in CLOSE_WAIT: the kernel sets EPIPE.
    @Test func aResetAfterTheFinIsABrokenPipe() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(handshake(c) + [c.fromServer([.fin, .ack], offset: 1), c.fromServer(.rst, offset: 2)], to: &t)
        #expect(side(try #require(ended(&t, c).first), c.client).failure == 32)
    }

    @Test func sequenceNumbersWrapAround() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.clientISN = UInt32.max - 1_499
        c.serverISN = UInt32.max
        c.send(
            handshake(c) + [
                c.fromClient(.ack, offset: 1, length: 1_000),
                c.fromClient(.ack, offset: 1_001, length: 1_000),  // crosses 2^32
                c.fromClient(.ack, offset: 2_001, length: 1_000),
                c.fromClient(.ack, offset: 1_001, length: 1_000),  // resent across the wrap
                c.fromServer(.ack, offset: 1, length: 7),  // the server's first byte is at 0
                c.fromClient([.fin, .ack], offset: 3_001),
                c.fromServer([.fin, .ack], offset: 8),
            ], to: &t)
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.client).sent.bytes == 3_000 && side(flow, c.client).sent.retransmits == 1)
        #expect(side(flow, c.server).sent.bytes == 7)
    }

    /// A connection older than the capture: counted from the first segment seen, not from a SYN.
    @Test func aConnectionMetMidStream() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        // The client is here: what it sends leaves, what the server sends arrives.
        c.send([c.fromServer(.ack, offset: 7_001, length: 100)], to: &t, way: .received)
        c.send([c.fromClient(.ack, offset: 501, length: 50)], to: &t, way: .sent)
        c.send([c.fromServer([.fin, .ack], offset: 7_101)], to: &t, way: .received)
        c.send([c.fromClient([.fin, .ack], offset: 551)], to: &t, way: .sent)
        let flow = try #require(ended(&t, c).first)
        #expect(!flow.fromStart && flow.established)
        #expect(side(flow, c.server).sent.bytes == 100 && side(flow, c.client).sent.bytes == 50)
        #expect(!side(flow, c.client).initiated && !side(flow, c.server).initiated)
        #expect(side(flow, c.client).isLocal && !side(flow, c.server).isLocal)
    }

    /// Which side sock_diag listed, and when a connection whose socket is gone is handed over.
    @Test func readsMarkTheSidesTheyListed() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(handshake(c) + [c.fromClient(.ack, offset: 1, length: 10)], to: &t)
        let clientSocket = SocketObservation(
            id: SocketID(netns: 1, cookie: 1), transport: .tcp, local: c.client, remote: c.server, state: .established,
            inode: 5, counters: .zero)
        // A read before the connection began does not see it.
        t.markSeen([clientSocket], during: 0...(c.time - 1_000_000_000))
        #expect(t.takeEnded(completeReadStart: nil, now: c.time).isEmpty)
        // A read while it is open, after its last segment, lists the client's socket only.
        let read = c.time + 10_000_000
        t.markSeen([clientSocket], during: read...(read + 500_000))
        #expect(t.takeEnded(completeReadStart: read, now: read).isEmpty, "a local side still listed: not over")
        // The next complete read lists neither (the client's last segment came before it): gone.
        let next = read + 500_000_000
        let flow = try #require(t.takeEnded(completeReadStart: next, now: next).first)
        #expect(side(flow, c.client).seenBySockDiag && !side(flow, c.server).seenBySockDiag)
        #expect(side(flow, c.client).sent.bytes == 10)
    }

    /// A destroy notification lists a socket that lived at some time before it was read.
    @Test func aDestroyNotificationMarksTheConnectionItEnded() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(handshake(c) + [c.fromServer(.rst, offset: 1)], to: &t)
        let destroyed = SocketObservation(
            id: SocketID(netns: 1, cookie: 2), transport: .tcp, local: c.server, remote: c.client, state: .close,
            inode: 0, counters: .zero)
        t.markSeen([destroyed], during: Int64.min...(c.time + 1))
        let flow = try #require(ended(&t, c).first)
        #expect(side(flow, c.server).seenBySockDiag && !side(flow, c.client).seenBySockDiag)
    }

    /// The same ends reused by a new connection before the first was handed over: two connections,
    /// and a read that listed the first marks only it.
    @Test func endsReusedByANewConnection() throws {
        var t = WireFlowTable(maxFlows: 10)
        var c = Conversation()
        c.send(handshake(c) + [c.fromClient(.ack, offset: 1, length: 3)], to: &t)
        let read = c.time + 100
        c.send([c.fromClient([.fin, .ack], offset: 4), c.fromServer([.fin, .ack], offset: 1)], to: &t)
        c.time += 1_000_000_000
        c.clientISN = 900_000_000
        c.send(handshake(c) + [c.fromClient(.ack, offset: 1, length: 4)], to: &t)
        let socket = SocketObservation(
            id: SocketID(netns: 1, cookie: 3), transport: .tcp, local: c.client, remote: c.server, state: .established,
            inode: 5, counters: .zero)
        t.markSeen([socket], during: read...(read + 10))
        let flows = ended(&t, c)
        try #require(flows.count == 1, "the second is still open")
        #expect(side(flows[0], c.client).sent.bytes == 3 && side(flows[0], c.client).seenBySockDiag)
        c.send([c.fromClient(.rst, offset: 5)], to: &t)
        let second = try #require(ended(&t, c).first)
        #expect(side(second, c.client).sent.bytes == 4 && !side(second, c.client).seenBySockDiag)
    }

    @Test func aFullTableCountsWhatItCouldNotFollow() {
        var t = WireFlowTable(maxFlows: 2)
        var c = Conversation()
        for port: UInt16 in 1...3 {
            c.client.port = port
            c.send([c.fromClient(.syn)], to: &t)
        }
        #expect(t.count == 2 && t.health.tableFull == 1)
        // Connections handed over make room.
        c.client.port = 2
        c.send([c.fromServer([.rst, .ack])], to: &t)
        _ = ended(&t, c)
        c.client.port = 4
        c.send([c.fromClient(.syn)], to: &t)
        #expect(t.health.tableFull == 1)
    }

    /// A SYN flood into a full table: each new flow's packet is counted and skipped at the cost of a
    /// lookup; the table is walked to make room only after a hand-over freed something.
    @Test func aFloodIntoAFullTableDoesNotWalkItPerPacket() {
        var t = WireFlowTable(maxFlows: 1_000)
        var c = Conversation()
        for port: UInt16 in 1...1_000 {
            c.client.port = port
            c.send([c.fromClient(.syn)], to: &t)
        }
        for n in 0..<20_000 {
            c.client.port = UInt16(2_000 + n % 60_000)
            c.client.address = .v4(0x0A00_0000 + UInt32(n / 60_000))
            c.send([c.fromClient(.syn)], to: &t)
        }
        #expect(t.count == 1_000 && t.health.tableFull == 20_000)
        #expect(t.health.sweeps == 0, "nothing was handed over: no walk could free anything")
        // Ten flows end and are handed over: the next new flow walks once, and the nine after it fit.
        for port: UInt16 in 1...10 {
            c.client.port = port
            c.client.address = Conversation().client.address
            c.send([c.fromServer([.rst, .ack])], to: &t)
        }
        #expect(ended(&t, c).count == 10)
        for port: UInt16 in 30_000..<30_020 {
            c.client.port = port
            c.send([c.fromClient(.syn)], to: &t)
        }
        #expect(t.health.sweeps == 1 && t.count == 1_000 && t.health.tableFull == 20_010)
    }

    @Test func datagramsPerFourTupleSinceTheLastReport() throws {
        var t = WireFlowTable(maxFlows: 10)
        let client = Endpoint(.v4(0x7F00_0001), 40_000)
        let server = Endpoint(.v4(0x7F00_0001), 53)
        func datagram(_ from: Endpoint, _ to: Endpoint, _ size: UInt32) -> PacketHeaders {
            PacketHeaders(transport: .udp, source: from, destination: to, payloadLength: size)
        }
        for i in 0..<5 {
            t.record(datagram(client, server, 30), way: .loopback, at: Int64(i))
            t.record(datagram(server, client, 100), way: .loopback, at: Int64(i))
        }
        let first = try #require(t.takeDatagrams(now: 10).first)
        #expect(side(first, client).sent == WireCounts(bytes: 150, packets: 5))
        #expect(side(first, server).sent == WireCounts(bytes: 500, packets: 5))
        #expect(side(first, client).initiated && !side(first, server).initiated)
        #expect(t.takeDatagrams(now: 20).isEmpty, "nothing since")
        t.record(datagram(server, client, 1), way: .loopback, at: 30)
        #expect(side(try #require(t.takeDatagrams(now: 40).first), server).sent.bytes == 1)
        #expect(t.takeDatagrams(now: 40 + WireFlowTable.datagramIdleNanos).isEmpty && t.count == 0)
    }
}
