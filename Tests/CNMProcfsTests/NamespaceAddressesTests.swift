import CNMModel
import CNMProcfs
import CNMTestSupport
import Glibc
import Testing

/// A namespace's addresses read from procfs are the ones the kernel reports through `getifaddrs`
/// (netlink) for this very process: the same set, from an independent interface.
@Suite struct NamespaceAddressesTests {
    /// Every address of this process's namespace per `getifaddrs`, loopback and link-local left out.
    private func interfaceAddresses() throws -> Set<IPAddress> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { throw TestFailure("getifaddrs: errno \(errno)") }
        defer { freeifaddrs(list) }
        var found = Set<IPAddress>()
        var entry = list
        while let e = entry {
            defer { entry = e.pointee.ifa_next }
            guard let sa = e.pointee.ifa_addr else { continue }
            let address: IPAddress?
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                address = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    .v4(UInt32(bigEndian: $0.pointee.sin_addr.s_addr))
                }
            case AF_INET6:
                address = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    withUnsafeBytes(of: $0.pointee.sin6_addr) { IPAddress(networkBytes: $0) }
                }
            default:
                address = nil
            }
            guard let address, !address.isLoopback else { continue }
            if case .v6(let high, _) = address, high >> 54 == 0x3FA { continue }  // fe80::/10
            found.insert(address)
        }
        return found
    }

    @Test func ownNamespaceMatchesGetifaddrs() throws {
        let read = try #require(NamespaceAddresses.of(process: getpid(), procRoot: "/proc"))
        #expect(Set(read.addresses) == (try interfaceAddresses()))
        #expect(read.addresses == read.addresses.sorted())
        #expect(read.namespace == NamespaceAddresses.namespace(ofProcess: getpid(), procRoot: "/proc"))
    }

    @Test func aVanishedProcessHasNone() {
        // Pids above pid_max (4194304 at most) never exist.
        #expect(NamespaceAddresses.of(process: 5_000_000, procRoot: "/proc") == nil)
        #expect(NamespaceAddresses.namespace(ofProcess: 5_000_000, procRoot: "/proc") == nil)
    }

    @Test func fibTrieLeavesWithoutALocalRouteAreNotOwned() {
        // Broadcast and network leaves sit beside the local one; only `/32 host LOCAL` means owned.
        let trie = """
            Main:
              +-- 0.0.0.0/0 3 0 5
                 |-- 10.0.1.0
                    /24 link UNICAST
                 |-- 10.0.1.17
                    /32 host LOCAL
                 |-- 10.0.1.255
                    /32 link BROADCAST
            Local:
              +-- 0.0.0.0/0 3 0 5
                 |-- 10.0.1.17
                    /32 host LOCAL
            """
        #expect(NamespaceAddresses.localIPv4Addresses(fibTrie: trie) == [.v4(0x0A00_0111)])
    }

    @Test func ifInet6KeepsGlobalScopeOnly() {
        let text = """
            fd000000000000000000000000000002 04 40 00 82     eth0
            fe8000000000000000420afffee119d9 05 40 20 80  docker0
            00000000000000000000000000000001 01 80 10 80       lo
            2001db8000000000000000000000000z 06 40 00 80     eth1
            """
        #expect(NamespaceAddresses.globalIPv6Addresses(ifInet6: text) == [IPAddress(parsing: "fd00::2")!])
    }
}
