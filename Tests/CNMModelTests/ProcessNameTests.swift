import CNMModel
import Testing

@Suite struct ProcessNameTests {
    func name(_ bytes: [UInt8]) -> ProcessName { bytes.withUnsafeBytes { ProcessName(bytes: $0) } }

    @Test func aCommFieldIsReadUpToItsNul() {
        var comm = [UInt8](repeating: 0, count: 16)
        comm.replaceSubrange(0..<5, with: Array("nginx".utf8))
        comm[7] = UInt8(ascii: "x")  // after the NUL: not part of the name
        let n = name(comm)
        #expect(n.description == "nginx")
        #expect(n.count == 5)
        #expect(n == "nginx")
        #expect(n.hashValue == ProcessName("nginx").hashValue)
        #expect(n != "nginx2")
    }

    @Test func aFullCommKeepsFifteenBytes() {
        let full = name(Array("abcdefghijklmnopq".utf8))
        #expect(full.description == "abcdefghijklmno")
        #expect(full.count == ProcessName.capacity)
        #expect(ProcessName("abcdefghijklmnopq") == full)
    }

    @Test func theEmptyName() {
        #expect(ProcessName().isEmpty)
        #expect(ProcessName().description == "")
        #expect(name([0, 65]).isEmpty)
        #expect(!ProcessName("a").isEmpty)
    }

    @Test func textIsCutAtACharacterBoundary() {
        // 13 ASCII bytes and a 3-byte character do not fit in 15: the character goes whole.
        let n = ProcessName("abcdefghijklm€")
        #expect(n.description == "abcdefghijklm")
        #expect(ProcessName("abcdefghijkl€").description == "abcdefghijkl€")
    }

    @Test func bytesThatAreNotUTF8AreReplacedAndStayValid() {
        // A kernel comm is bytes: 0xFF is no UTF-8. Replaced by U+FFFD, and cut to fit.
        let n = name([0x61, 0xFF, 0x62] + [UInt8](repeating: 0xC3, count: 12))
        let text = n.description
        #expect(text.hasPrefix("a\u{FFFD}b"))
        #expect(n.count <= ProcessName.capacity)
        n.withUTF8 { bytes in
            #expect(String(validating: bytes, as: UTF8.self) != nil)
            #expect(bytes.count == n.count)
        }
    }
}
