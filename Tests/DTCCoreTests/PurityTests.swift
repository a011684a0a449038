import Foundation
import Testing

/// STYLE.md §11: the core does no I/O, reads no clock and draws no random numbers. This reads
/// the core's sources and fails on what would break that.
@Suite struct PurityTests {
    static let allowedImports: Set<String> = ["DequeModule"]
    static let forbiddenCalls = ["Date()", ".random(", "ContinuousClock", "SuspendingClock", "DispatchQueue", "Thread.sleep", "usleep("]

    /// Tests/DTCCoreTests/X.swift → Sources/DTCCore, through symlinks (a scratch package may
    /// link the directories in).
    static var coreSources: URL {
        URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/DTCCore")
    }

    @Test func theCoreImportsNothingButDequeModuleAndReadsNoClockOrRandomness() throws {
        let directory = Self.coreSources.resolvingSymlinksInPath()
        let enumerator = try #require(FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil))
        var files: [String] = []
        for case let url as URL in enumerator where url.pathExtension == "swift" {
            files.append(url.lastPathComponent)
            let text = try String(contentsOf: url, encoding: .utf8)
            #expect(Self.violations(in: text) == [], "\(url.lastPathComponent)")
        }
        #expect(files.contains("Coordinator.swift") && files.contains("Participant.swift"), "found \(files) in \(directory.path)")
    }

    @Test func theCheckCatchesWhatItLooksFor() {
        #expect(Self.violations(in: "import DequeModule\nstruct A {}") == [])
        #expect(Self.violations(in: "import Foundation") == ["imports Foundation"])
        #expect(Self.violations(in: "@preconcurrency import NIOCore") == ["imports NIOCore"])
        #expect(Self.violations(in: "import struct Dispatch.DispatchTime") == ["imports Dispatch"])
        #expect(Self.violations(in: "let x = Int.random(in: 0..<3)") == ["calls .random("])
        #expect(Self.violations(in: "let t = Date()") == ["calls Date()"])
    }

    static func violations(in source: String) -> [String] {
        var found: [String] = []
        for line in source.split(separator: "\n") {
            let words = line.split(whereSeparator: \.isWhitespace).filter { !$0.hasPrefix("@") }
            guard words.first == "import", let last = words.last else { continue }
            let module = String(last.split(separator: ".").first ?? last)
            if !allowedImports.contains(module) { found.append("imports \(module)") }
        }
        for call in forbiddenCalls where source.contains(call) { found.append("calls \(call)") }
        return found
    }
}
